"""The Telegram channel: a thin adapter between python-telegram-bot (v22) and the Assistant.

It turns updates into `Incoming` events and renders `Reply` objects as messages with
inline keyboards. What only Telegram needs lives here too: deleting media, wiping the
chat for `/wis`, the command menu and descriptions, group chats, flood limits and
retries. It stores nothing of its own: message ids go to the store under the
pseudonymous key, and logs carry event kinds and the key prefix only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import tornado.web
from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import ChatType, MessageLimit
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    ContextTypes,
    Defaults,
    ExtBot,
    MessageHandler,
    filters,
)
from telegram.ext._utils import webhookhandler as ptb_webhook
from telegram.request import BaseRequest, RequestData

from bot.app import Assistant
from bot.channels.delivery import (
    AckAfterTurnBot,
    Outgoing,
    TurnTrackingApplication,
    UpdateTracker,
    pack,
    unpack,
)
from bot.config import PROJECT_ROOT, Settings, read_environment, validate_telegram_token
from bot.errors import ConfigError
from bot.events import Button, Incoming, Outcome, Reply
from bot.texts import Texts

log = logging.getLogger("hulpwijzer.telegram")

CHANNEL = "telegram"
TEXT_LIMIT = MessageLimit.MAX_TEXT_LENGTH  # 4,096 characters
CALLBACK_DATA_LIMIT = 64  # bytes, Telegram's limit for callback_data
# Labels this short fit two to a row on a phone; longer ones get a row each.
SHORT_LABEL = 16
DESCRIPTION_LIMIT = 512
SHORT_DESCRIPTION_LIMIT = 120
# Telegram lets one deleteMessages call remove up to 100 messages.
DELETE_BATCH = 100
# Telegram's global limit for one bot is about 30 messages per second.
DEFAULT_MAX_RATE = 30.0
# Retries for answers that were not carried out (429 via the limiter; 5xx, broken
# connections and timeouts here). Back-off grows to a few seconds, then gives up.
RETRY_AFTER_RETRIES = 5
TRANSIENT_RETRIES = 5
TRANSIENT_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)
MAX_IN_FLIGHT = 256
PURGE_EVERY = 600.0  # seconds between deleting conversations idle for longer than the TTL
# At Telegram's 30 messages/s a handful of connections are busy at once; more only cost.
CONNECTIONS = 16
READ_TIMEOUT = 10.0
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 10.0
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
# Webhook: how long Telegram's request waits for the update to be answered before it gets
# its 200 anyway (a turn retried through faults can take this long; after it, a crash may
# lose that update, as in PTB's own handler).
WEBHOOK_ANSWER_WAIT = 50
LINK_PREVIEWS = LinkPreviewOptions(is_disabled=True)
NO_LINK_PREVIEWS = LINK_PREVIEWS.to_dict()
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{32,256}$")

# The command menu per language: (command, action); descriptions are texts in responses/.
MENU: dict[str, tuple[tuple[str, str], ...]] = {
    "nl": (
        ("start", "start"),
        ("help", "help"),
        ("terug", "back"),
        ("opnieuw", "restart"),
        ("taal", "language"),
        ("privacy", "privacy"),
        ("wis", "wipe"),
        ("stop", "stop"),
    ),
    "en": (
        ("start", "start"),
        ("help", "help"),
        ("back", "back"),
        ("restart", "restart"),
        ("language", "language"),
        ("privacy", "privacy"),
        ("wipe", "wipe"),
        ("stop", "stop"),
    ),
}
MEDIA = (
    filters.PHOTO
    | filters.VIDEO
    | filters.VOICE
    | filters.VIDEO_NOTE
    | filters.Document.ALL
    | filters.Sticker.ALL
    | filters.ANIMATION
    | filters.AUDIO
)


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------- rendering
def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Cut a long reply into messages Telegram accepts, at paragraph boundaries when it
    can (then lines, then words), so no sentence is cut in half if avoidable."""
    if len(text) <= limit:
        return [text] if text.strip() else []
    parts: list[str] = []
    current = ""
    for piece in _pieces(text, limit):
        candidate = f"{current}\n\n{piece}" if current else piece
        if len(candidate) <= limit:
            current = candidate
        else:
            parts.append(current)
            current = piece
    if current:
        parts.append(current)
    return [part for part in parts if part.strip()]


def _pieces(text: str, limit: int) -> list[str]:
    """Paragraphs no longer than `limit`, splitting oversized ones by line, word, or hard."""
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        if len(paragraph) <= limit:
            out.append(paragraph)
            continue
        for separator in ("\n", " "):
            if separator in paragraph:
                chunks: list[str] = []
                current = ""
                for word in paragraph.split(separator):
                    candidate = f"{current}{separator}{word}" if current else word
                    if len(candidate) <= limit:
                        current = candidate
                        continue
                    if current:
                        chunks.append(current)
                    current = word
                if current:
                    chunks.append(current)
                if all(len(chunk) <= limit for chunk in chunks):
                    out.extend(chunks)
                    break
        else:
            out.extend(paragraph[i : i + limit] for i in range(0, len(paragraph), limit))
    return out


def keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    """One button per row, or two per row when every label is short (yes/no, languages)."""
    if not buttons:
        return None
    keys = [InlineKeyboardButton(b.label, callback_data=b.data) for b in buttons]
    per_row = _per_row([b.label for b in buttons])
    return InlineKeyboardMarkup([keys[i : i + per_row] for i in range(0, len(keys), per_row)])


def _per_row(labels: Sequence[str]) -> int:
    return 2 if len(labels) > 1 and all(len(label) <= SHORT_LABEL for label in labels) else 1


def keyboard_rows(buttons: Sequence[tuple[str, str]]) -> list[list[dict[str, str]]]:
    """`keyboard` as the Bot API's JSON, from (callback data, label) pairs."""
    keys = [{"text": label, "callback_data": data} for data, label in buttons]
    per_row = _per_row([label for _, label in buttons])
    return [keys[i : i + per_row] for i in range(0, len(keys), per_row)]


def outgoing(reply: Reply) -> list[Outgoing]:
    """One Reply as Telegram messages: text in parts of at most 4,096 characters, the
    buttons under the last part (or under the document, which comes last)."""
    buttons = tuple((b.data, b.label) for b in reply.buttons)
    parts = split_text(reply.text)
    messages = [
        Outgoing(part, buttons if number == len(parts) and reply.document is None else ())
        for number, part in enumerate(parts, start=1)
    ]
    if reply.document is not None:
        messages.append(Outgoing("", buttons, reply.document.filename, reply.document.content))
    return messages


def button_data(data: str | None) -> str:
    """Callback data as the engine should see it. Anything Telegram would never have
    produced from our buttons becomes '' (the engine answers it as an outdated button)."""
    # ASCII first: encoding a lone surrogate ("\ud800" in the JSON) raises (issue 7 fuzz).
    if not data or not (data.isascii() and data.isprintable()):
        return ""
    if len(data) > CALLBACK_DATA_LIMIT:  # ASCII: one byte per character
        return ""
    return data


# ---------------------------------------------------------------------- logging
class RedactLibraryArguments(logging.Filter):
    """python-telegram-bot and httpx log whole updates, request parameters and URLs that
    contain the token at DEBUG/INFO. Keep their messages, drop their arguments."""

    PREFIXES = (
        "telegram",
        "httpx",
        "httpcore",
        "tornado",
        "hpack",
        "apscheduler",
        "aiohttp",
        "asyncio",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.PREFIXES) and record.exc_info and record.exc_info[1]:
            # PTB logs InvalidToken at ERROR with the token in its message (issue 7):
            # keep the frames, drop every exception message in the chain.
            record.exc_text = _frames_only(record.exc_info[1])
            record.exc_info = None
        if record.name.startswith(self.PREFIXES) and record.args:
            if isinstance(record.args, tuple):
                record.args = tuple(
                    arg if isinstance(arg, int | float) else f"<{type(arg).__name__}>"
                    for arg in record.args
                )
            else:
                record.msg = f"{record.msg} (arguments redacted)"
                record.args = ()
        return True


def _frames_only(error: BaseException) -> str:
    """A traceback of file:line:function and exception types, without any message."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        lines += [f"  {Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]
        lines.append(f"{type(current).__module__}.{type(current).__name__} (message redacted)")
        current = current.__cause__ or current.__context__
    return "Traceback (the error, then its causes; messages redacted):\n" + "\n".join(lines)


def protect_logs() -> None:
    """Call after logging is configured: redact library arguments on every handler, and
    keep httpx (which logs each URL, token included) at WARNING."""
    redact = RedactLibraryArguments()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactLibraryArguments) for f in handler.filters):
            handler.addFilter(redact)
    for name in ("httpx", "httpcore", "tornado.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _where(error: BaseException) -> str:
    """The innermost frame as file:line:function: enough to find a bug, no values."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "-"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}:{frame.name}"


# ---------------------------------------------------------------------- flood limits, retries
class PatientRateLimiter(AIORateLimiter):
    """PTB's limiter (≈30 messages/s, 429 `retry_after` waited out and retried), plus
    retries for answers that were not carried out: 5xx, broken connections, timeouts.

    A reply that cannot be delivered leaves a person alone mid-conversation, so this
    errs on delivering: only if Telegram did the work but its answer was lost on the way
    back could a message arrive twice."""

    def __init__(self, max_rate: float = DEFAULT_MAX_RATE) -> None:
        super().__init__(
            overall_max_rate=max_rate,
            overall_time_period=1 if max_rate else 0,
            max_retries=RETRY_AFTER_RETRIES,
        )

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                return await super().process_request(
                    callback, args, kwargs, endpoint, data, rate_limit_args
                )
            except BadRequest:
                raise  # our request was wrong: sending it again changes nothing
            except NetworkError as error:
                if attempt == TRANSIENT_RETRIES:
                    raise
                log.warning(
                    "telegram_retry endpoint=%s kind=%s attempt=%d",
                    endpoint,
                    type(error).__name__,
                    attempt + 1,
                )
                await asyncio.sleep(TRANSIENT_BACKOFF[min(attempt, len(TRANSIENT_BACKOFF) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover


class AiohttpRequest(BaseRequest):
    """PTB's HTTP layer on aiohttp instead of httpx. Measured on this machine against the
    fake Bot API server: about 0.4 ms CPU per call instead of 1.4-2 ms, and five times the
    calls per second (docs/benchmarks.md). Errors map to PTB's own: TimedOut, NetworkError."""

    def __init__(self, connections: int) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float:
        return READ_TIMEOUT

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None:
            raise RuntimeError("AiohttpRequest is not initialized")
        read = _seconds(read_timeout, READ_TIMEOUT)
        connect = _seconds(connect_timeout, CONNECT_TIMEOUT)
        pool = _seconds(pool_timeout, POOL_TIMEOUT)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        body: aiohttp.FormData | bytes | None = None
        headers: dict[str, str] | None = None
        if request_data is not None:
            if request_data.contains_files:
                form = aiohttp.FormData()
                for name, value in request_data.json_parameters.items():
                    form.add_field(name, value)
                for name, part in request_data.multipart_data.items():
                    filename, content, mimetype = part[0], part[1], part[2]
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                body = form
            else:
                # What aiohttp.FormData would send, at half its cost per call.
                body = urlencode(request_data.json_parameters).encode()
                headers = FORM_HEADERS
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as answer:
                return answer.status, await answer.read()
        except TimeoutError as error:
            raise TimedOut from error
        except aiohttp.ClientError as error:
            raise NetworkError(f"aiohttp.{type(error).__name__}") from error


def _seconds(value: object, default: float) -> float | None:
    """PTB passes a DefaultValue sentinel for "not given", None for "no limit"."""
    if value is None or isinstance(value, int | float):
        return value
    return default


class PerUserOrder:
    """One lock per person: their updates are handled one at a time in arrival order,
    while other people's updates go ahead. Locks disappear when nobody waits on them."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiting[key] -= 1
            if self._waiting[key] == 0:
                del self._waiting[key]
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


# ---------------------------------------------------------------------- the bot's profile
@dataclass(frozen=True)
class Profile:
    """What a new user sees before pressing Start, per language (None: the default)."""

    commands: dict[str, list[BotCommand]]
    descriptions: dict[str, str]
    short_descriptions: dict[str, str]


def bot_profile(texts: Texts) -> Profile:
    """Read the menu and descriptions from responses/ and check Telegram's limits now,
    so a too-long text stops start-up with a clear sentence instead of a 400 later."""
    commands: dict[str, list[BotCommand]] = {}
    descriptions: dict[str, str] = {}
    shorts: dict[str, str] = {}
    problems: list[str] = []
    for lang, menu in MENU.items():
        commands[lang] = [
            BotCommand(name, texts.get(lang, f"telegram.command.{action}")) for name, action in menu
        ]
        descriptions[lang] = texts.get(lang, "telegram.description")
        shorts[lang] = texts.get(lang, "telegram.short_description")
        if len(descriptions[lang]) > DESCRIPTION_LIMIT:
            problems.append(f"telegram.description is over {DESCRIPTION_LIMIT} characters")
        if len(shorts[lang]) > SHORT_DESCRIPTION_LIMIT:
            problems.append(f"telegram.short_description is over {SHORT_DESCRIPTION_LIMIT}")
        for command in commands[lang]:
            if not 1 <= len(command.description) <= 256:
                problems.append(f"telegram.command for /{command.command} is not 1-256 characters")
        if problems:
            raise ConfigError(f"responses/{lang}.yml: {problems[0]}; make it shorter.")
    return Profile(commands, descriptions, shorts)


# ---------------------------------------------------------------------- the channel
class TelegramChannel:
    """The handlers. Each turns an update into an Incoming, asks the Assistant under the
    person's lock, and renders the Outcome. Nothing here decides what to say."""

    def __init__(
        self,
        assistant: Assistant,
        engine_in_thread: bool | None = None,
        purge_every: float = PURGE_EVERY,
    ) -> None:
        self.assistant = assistant
        self.purge_every = purge_every
        self._purger: asyncio.Task[None] | None = None
        self.store = assistant.store
        self.texts: Texts = assistant.engine.texts
        self.order = PerUserOrder()
        self.capacity = asyncio.Semaphore(MAX_IN_FLIGHT)
        # None: in a worker thread only when a classifier may take long. Without one a
        # step is ~0.4 ms of Python and SQLite, less than the hop to a thread and back.
        self.engine_in_thread = (
            assistant.has_classifier if engine_in_thread is None else engine_in_thread
        )
        self.username = ""

    # -------------------------------------------------------------- start-up
    async def register(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """post_init: the command menu and descriptions in Dutch (also the default) and English."""
        bot = application.bot
        self.username = bot.username
        profile = bot_profile(self.texts)
        for lang, code in (("nl", None), ("nl", "nl"), ("en", "en")):
            await bot.set_my_commands(profile.commands[lang], language_code=code)
            await bot.set_my_description(profile.descriptions[lang], language_code=code)
            await bot.set_my_short_description(profile.short_descriptions[lang], language_code=code)
        log.info("telegram_registered languages=nl,en")
        self._purger = asyncio.create_task(self._purge_idle())

    async def _purge_idle(self) -> None:
        """The bot runs for weeks: idle conversations must go after the TTL while it runs,
        not only at the next start."""
        while True:
            await asyncio.sleep(self.purge_every)
            try:
                removed = await asyncio.to_thread(self.assistant.purge)
                if removed:
                    log.info("sessions_purged count=%d", removed)
            except Exception as error:  # a locked database must not end the loop
                log.warning("purge_failed kind=%s", type(error).__name__)

    async def unregister(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """post_stop: end the purge loop with the application; tell Telegram which updates
        were answered, so none is delivered again at the next start."""
        if isinstance(application.bot, AckAfterTurnBot):
            try:
                await application.bot.confirm_finished()
            except Exception as error:  # they come again and are skipped by the journal
                log.info("telegram_confirm_failed kind=%s", type(error).__name__)
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None

    def install(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        private = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE
        groups = filters.ChatType.GROUPS & filters.UpdateType.MESSAGE
        application.add_handler(
            MessageHandler(private & filters.COMMAND, self.on_command, block=False)
        )
        application.add_handler(
            MessageHandler(private & filters.TEXT & ~filters.COMMAND, self.on_text, block=False)
        )
        application.add_handler(MessageHandler(private & MEDIA, self.on_media, block=False))
        application.add_handler(MessageHandler(private, self.on_other, block=False))
        application.add_handler(CallbackQueryHandler(self.on_button, block=False))
        application.add_handler(MessageHandler(groups, self.on_group_message, block=False))
        application.add_handler(
            ChatMemberHandler(self.on_added_to_group, ChatMemberHandler.MY_CHAT_MEMBER, block=False)
        )
        application.add_error_handler(self.on_error)

    # -------------------------------------------------------------- private chats
    async def on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            await self._serve(update, context, Incoming("command", message.text or ""))

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            await self._serve(update, context, Incoming("text", message.text or ""))

    async def on_media(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Never downloaded: the engine asks us to delete it and explains why."""
        await self._serve(update, context, Incoming("media"))

    async def on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Locations, contacts, polls...: nothing to read; the engine asks again."""
        await self._serve(update, context, Incoming("text", ""))

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        message = query.message
        if message is None or message.chat.type != ChatType.PRIVATE:
            await _quietly(query.answer())
            return
        # Stop the button's spinner while the answer is being made. Old keyboards stay:
        # pressing one again gets "no longer valid" and the current question.
        answered = asyncio.ensure_future(_quietly(query.answer()))
        try:
            await self._serve(update, context, Incoming("button", button_data(query.data)))
        finally:
            await answered

    async def _serve(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, incoming: Incoming
    ) -> None:
        user, chat = update.effective_user, update.effective_chat
        if user is None or chat is None:
            return
        key = self.assistant.key_for(CHANNEL, user.id)
        message = update.message
        message_id = message.message_id if message is not None else None
        # Taking the person's turn is the first thing that can wait: arrival order holds.
        async with self.order.turn(key), self.capacity:
            try:
                await self._turn(context.bot, key, chat.id, incoming, message_id, update.update_id)
            except Exception as error:  # reported and survived, never re-raised
                await self._failed(context.bot, error, key, chat.id, user.language_code)

    async def _turn(
        self,
        bot: Any,
        key: str,
        chat_id: int,
        incoming: Incoming,
        message_id: int | None,
        update_id: int | None = None,
    ) -> None:
        now = utcnow()
        incoming = replace(incoming, now=now)
        if self.engine_in_thread:
            plan = await asyncio.to_thread(self._step, key, incoming, message_id, update_id)
        else:
            plan = self._step(key, incoming, message_id, update_id)
        if plan is None:
            log.info("telegram_redelivery_skipped key=%s", key[:12])
            return
        outcome, earlier, messages, already, erase = plan
        if outcome is not None and outcome.delete_incoming and message_id is not None:
            await self._delete(bot, chat_id, [message_id], key)
        if outcome is not None and outcome.wipe_chat:
            mine = [message_id] if message_id is not None else []
            await self._delete(bot, chat_id, sorted({*earlier, *mine}), key)
        for number, message in enumerate(messages[already:], start=already + 1):
            delivered = await self._deliver(bot, chat_id, message)
            # One transaction per message sent: its id (remembered at once, so /wis finds it
            # even if a later part fails) with how far the turn got, or the end of the turn.
            with self.store.transaction():
                if not erase:
                    self.store.remember_message(key, delivered, now)
                if update_id is not None and number < len(messages):
                    self.store.mark_sent(key, number)
                elif update_id is not None:
                    self.store.finish_turn(key, keep=not erase)
        if update_id is not None and already >= len(messages):
            self.store.finish_turn(key, keep=not erase)  # nothing (left) to send
        log.debug("telegram_turn kind=%s replies=%d key=%s", incoming.kind, len(messages), key[:12])

    def _step(
        self, key: str, incoming: Incoming, message_id: int | None, update_id: int | None
    ) -> tuple[Outcome | None, list[int], list[Outgoing], int, bool] | None:
        """The blocking part (SQLite, the classifier), in one go so it can run in a thread.
        Message ids are read before a command, because an erase deletes them with the rest.

        With an update id, the turn is journaled (bot/channels/delivery.py): an update
        delivered again after a crash is skipped if it was answered (None), finishes
        sending if it was cut off while sending, and runs again from the state it began
        with if it was cut off before its answer was written down."""
        # One transaction for the whole step: the journal, the engine's new state and the
        # message id are written together (one commit instead of five), or not at all.
        with self.store.transaction():
            return self._journaled_step(key, incoming, message_id, update_id)

    def _journaled_step(
        self, key: str, incoming: Incoming, message_id: int | None, update_id: int | None
    ) -> tuple[Outcome | None, list[int], list[Outgoing], int, bool] | None:
        now = incoming.now or utcnow()
        if update_id is not None:
            turn = self.store.turn(key)
            if turn is not None and (
                turn.update_id > update_id or (turn.update_id == update_id and turn.stage == "done")
            ):
                return None
            if turn is not None and turn.update_id == update_id:
                if turn.stage == "sending" and turn.outbox is not None:
                    messages, erase = unpack(turn.outbox)
                    return None, [], messages, turn.sent, erase
                self.store.undo_turn(key)
            self.store.begin_turn(key, update_id, now)
        earlier = self.store.message_ids(key, now) if incoming.kind == "command" else []
        outcome = self.assistant.handle(key, incoming)
        if message_id is not None and not (outcome.erase or outcome.delete_incoming):
            self.store.remember_message(key, message_id, now)
        messages = [message for reply in outcome.replies for message in outgoing(reply)]
        if update_id is not None:
            self.store.journal_outbox(key, update_id, pack(messages, outcome.erase), now)
        return outcome, earlier, messages, 0, outcome.erase

    async def _deliver(self, bot: Any, chat_id: int, message: Outgoing) -> int:
        """Send one message and return its id. A text goes straight to the bot's `_post`
        (the limiter, retries and defaults all still apply): PTB's send_message would parse
        the Message Telegram echoes back, keyboard and all, into objects, which cost about
        a fifth of the bot's CPU under load, for the one number used here."""
        if message.filename is not None or not isinstance(bot, ExtBot):
            return int((await self._send(bot, chat_id, message)).message_id)
        data: dict[str, object] = {
            "chat_id": chat_id,
            "text": message.text,
            "link_preview_options": NO_LINK_PREVIEWS,
        }
        if message.buttons:
            data["reply_markup"] = {"inline_keyboard": keyboard_rows(message.buttons)}
        result = await bot._post("sendMessage", data)
        return int(result["message_id"])

    async def _send(self, bot: Any, chat_id: int, message: Outgoing) -> Message:
        markup = keyboard([Button(data, label) for data, label in message.buttons])
        if message.filename is not None:
            document = InputFile((message.content or "").encode("utf-8"), filename=message.filename)
            sent: Message = await bot.send_document(chat_id, document, reply_markup=markup)
            return sent
        sent = await bot.send_message(chat_id, message.text, reply_markup=markup)
        return sent

    async def send_reply(self, bot: Any, chat_id: int, reply: Reply) -> list[Message]:
        """One Reply as Telegram messages (see `outgoing`)."""
        return [await self._send(bot, chat_id, message) for message in outgoing(reply)]

    async def _delete(self, bot: Any, chat_id: int, message_ids: list[int], key: str) -> None:
        """Delete what Telegram still lets us (48 hours); a refusal is logged, not fatal."""
        for start in range(0, len(message_ids), DELETE_BATCH):
            batch = message_ids[start : start + DELETE_BATCH]
            try:
                if len(batch) == 1:
                    await bot.delete_message(chat_id, batch[0])
                else:
                    await bot.delete_messages(chat_id, batch)
            except (BadRequest, Forbidden) as error:
                log.info("telegram_delete_refused kind=%s key=%s", type(error).__name__, key[:12])

    # -------------------------------------------------------------- groups
    async def on_group_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answer only what is meant for the bot (a command, a mention, a reply to it), so a
        group is never flooded; read nothing else, store nothing."""
        message = update.effective_message
        if message is None:
            return
        text = message.text or ""
        meant_for_us = (
            bool(message.text and message.text.startswith("/"))
            or (self.username and f"@{self.username.lower()}" in text.lower())
            or (
                message.reply_to_message is not None
                and message.reply_to_message.from_user is not None
                and message.reply_to_message.from_user.id == context.bot.id
            )
        )
        if meant_for_us:
            await self._explain_private_only(context.bot, message.chat_id, update)

    async def on_added_to_group(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        member = update.my_chat_member
        if member is None or member.chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP):
            return
        joined = member.old_chat_member.status in ("left", "kicked")
        if joined and member.new_chat_member.status in ("member", "administrator"):
            await self._explain_private_only(context.bot, member.chat.id, update)

    async def _explain_private_only(self, bot: Any, chat_id: int, update: Update) -> None:
        user = update.effective_user
        lang = "en" if user and (user.language_code or "").startswith("en") else "nl"
        link = f"https://t.me/{self.username}"
        await bot.send_message(chat_id, self.texts.get(lang, "telegram.group_only", link=link))
        log.info("telegram_group_explained")

    # -------------------------------------------------------------- errors
    async def _failed(
        self, bot: Any, error: BaseException, key: str, chat_id: int, language_code: str | None
    ) -> None:
        """Log the kind and key prefix (never text), and tell the person, in their language,
        that their place is kept. The session is whatever the engine last saved."""
        log.warning(
            "telegram_error kind=%s where=%s key=%s", type(error).__name__, _where(error), key[:12]
        )
        lang = "en" if (language_code or "").startswith("en") else "nl"
        with contextlib.suppress(Exception):
            session = await asyncio.to_thread(self.store.load, key)
            if session is not None:
                lang = session.lang
        try:
            await bot.send_message(chat_id, self.texts.get(lang, "telegram.failed"))
        except Exception as second:  # Telegram itself is unreachable
            log.warning("telegram_error_unreported kind=%s key=%s", type(second).__name__, key[:12])

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Errors outside a person's turn (group messages, parsing, polling)."""
        error = context.error
        if error is None:
            return
        if isinstance(update, Update) and update.effective_user and update.effective_chat:
            key = self.assistant.key_for(CHANNEL, update.effective_user.id)
            if update.effective_chat.type == ChatType.PRIVATE:
                await self._failed(
                    context.bot,
                    error,
                    key,
                    update.effective_chat.id,
                    update.effective_user.language_code,
                )
                return
            log.warning(
                "telegram_error kind=%s where=%s group", type(error).__name__, _where(error)
            )
            return
        log.warning("telegram_error kind=%s where=%s", type(error).__name__, _where(error))


async def _quietly(coroutine: Coroutine[Any, Any, Any]) -> None:
    """A side call (answering a button press) must not stop the turn."""
    try:
        await coroutine
    except (BadRequest, Forbidden, NetworkError, RetryAfter) as error:
        log.info("telegram_side_call_failed kind=%s", type(error).__name__)


# ---------------------------------------------------------------------- wiring
def file_url_for(base_url: str) -> str:
    """A self-hosted Bot API server serves files next to the API: /bot -> /file/bot."""
    base = base_url.rstrip("/")
    if base.endswith("/bot"):
        return base[: -len("/bot")] + "/file/bot"
    return base + "/file/bot"


# ---------------------------------------------------------------------- webhook secret
class ConstantTimeSecretHandler(ptb_webhook.TelegramHandler):
    """PTB 22 compares X-Telegram-Bot-Api-Secret-Token with `!=` (timing tells a guesser
    how much is right) and logs a wrong one at DEBUG. Check it first with
    hmac.compare_digest; a request without the right secret never reaches PTB (issue 7)."""

    def _validate_post(self) -> None:
        if self.secret_token is not None:
            given = self.request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
            if not hmac.compare_digest(given.encode(), self.secret_token.encode()):
                raise tornado.web.HTTPError(HTTPStatus.FORBIDDEN)
        super()._validate_post()

    async def post(self) -> None:
        """Answer Telegram only once the update has been answered (or after
        WEBHOOK_ANSWER_WAIT): PTB says 200 as soon as the update is queued, so a crash
        lost every update in flight. Without a 2xx Telegram delivers the update again,
        and the turn journal skips or finishes it (bot/channels/delivery.py)."""
        bot = self.bot
        update_id = _update_id(self.request.body)
        if update_id is None or not isinstance(bot, AckAfterTurnBot):
            await super().post()  # nothing to wait for: PTB answers (400 for a bad body)
            return
        self._validate_post()  # no waiting for a request without the secret
        answered = bot.tracker.expect(update_id)
        try:
            await super().post()
        except BaseException:
            bot.tracker.forget(update_id)
            raise
        try:
            await asyncio.wait_for(asyncio.shield(answered), WEBHOOK_ANSWER_WAIT)
        except TimeoutError:
            log.warning("telegram_webhook_slow seconds=%d", WEBHOOK_ANSWER_WAIT)
        except asyncio.CancelledError:
            if not answered.cancelled():  # the request ended, not the update
                raise


def _update_id(body: bytes) -> int | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    update_id = data.get("update_id") if isinstance(data, dict) else None
    return update_id if isinstance(update_id, int) and not isinstance(update_id, bool) else None


def use_constant_time_secret() -> None:
    """PTB's webhook app builds its handler from this module global at start-up."""
    ptb_webhook.TelegramHandler = ConstantTimeSecretHandler  # type: ignore[misc]


def build_application(
    settings: Settings,
    assistant: Assistant,
    *,
    max_rate: float = DEFAULT_MAX_RATE,
    engine_in_thread: bool | None = None,
    purge_every: float = PURGE_EVERY,
) -> Application[Any, Any, Any, Any, Any, Any]:
    """The Application, built once: token, server, limiter, handlers, start-up hook.

    Updates are taken off the queue one by one but handled in their own tasks
    (block=False), so different people go concurrently while PerUserOrder keeps each
    person's updates in order."""
    token = validate_telegram_token(settings.telegram_token)
    use_constant_time_secret()
    # Opt in to PTB's coming timedelta durations now; otherwise every 429 warns about it.
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    channel = TelegramChannel(assistant, engine_in_thread=engine_in_thread, purge_every=purge_every)
    bot_profile(channel.texts)  # fail now, not after connecting, if a text is too long
    servers: dict[str, str] = {}
    if settings.telegram_base_url:
        servers["base_url"] = settings.telegram_base_url
        servers["base_file_url"] = file_url_for(settings.telegram_base_url)
    # Updates are confirmed to Telegram only once answered (bot/channels/delivery.py).
    bot = AckAfterTurnBot(
        UpdateTracker(),
        token=token,
        request=AiohttpRequest(CONNECTIONS),
        get_updates_request=AiohttpRequest(1),
        rate_limiter=PatientRateLimiter(max_rate),
        defaults=Defaults(link_preview_options=LINK_PREVIEWS),
        **servers,
    )
    builder = (
        ApplicationBuilder()
        .bot(bot)
        .application_class(TurnTrackingApplication)
        .concurrent_updates(False)
        .post_init(channel.register)
        .post_stop(channel.unregister)
    )
    application = builder.build()
    channel.install(application)
    application.bot_data["channel"] = channel
    return application


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    listen: str
    port: int
    path: str
    secret: str

    def __repr__(self) -> str:
        return f"WebhookSettings(listen={self.listen}, port={self.port}, path={self.path})"


def webhook_settings(
    env: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT
) -> WebhookSettings:
    """Read TELEGRAM_WEBHOOK_*; refuse to run a webhook without a strong secret token."""
    values = read_environment(env, root)
    url = values.get("TELEGRAM_WEBHOOK_URL", "").strip()
    if not url.startswith("https://"):
        raise ConfigError(
            "TELEGRAM_WEBHOOK_URL must be the public https:// address Telegram posts to, "
            "e.g. https://bot.example.nl/telegram (see docs/deploy.md)."
        )
    secret = values.get("TELEGRAM_WEBHOOK_SECRET", "").strip()
    if not _WEBHOOK_SECRET.match(secret):
        raise ConfigError(
            "TELEGRAM_WEBHOOK_SECRET must be set to 32-256 letters, digits, _ or -: make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
        )
    port_text = values.get("TELEGRAM_WEBHOOK_PORT", "8443").strip() or "8443"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"TELEGRAM_WEBHOOK_PORT must be a port number, not {port_text!r}.")
    path = values.get("TELEGRAM_WEBHOOK_PATH", "").strip().strip("/")
    return WebhookSettings(
        url=url,
        listen=values.get("TELEGRAM_WEBHOOK_LISTEN", "").strip() or "127.0.0.1",
        port=int(port_text),
        path=path or urlsplit(url).path.strip("/") or "telegram",
        secret=secret,
    )


def run(settings: Settings, *, webhook: bool, with_nlu: bool = True) -> int:
    """`hulpwijzer telegram [--webhook]`: check everything that can be checked offline
    first, then connect. Returns when stopped by SIGINT/SIGTERM (in-flight turns finish)."""
    from bot.app import build_assistant

    validate_telegram_token(settings.telegram_token)
    hook = webhook_settings(root=settings.root) if webhook else None
    protect_logs()
    assistant = build_assistant(settings, with_nlu=with_nlu)
    application = build_application(settings, assistant)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        if hook is None:
            log.info("telegram_polling")
            application.run_polling(
                allowed_updates=ALLOWED_UPDATES, poll_interval=0.0, close_loop=False
            )
        else:
            log.info("telegram_webhook port=%d", hook.port)
            application.run_webhook(
                listen=hook.listen,
                port=hook.port,
                url_path=hook.path,
                webhook_url=hook.url,
                secret_token=hook.secret,
                allowed_updates=ALLOWED_UPDATES,
                close_loop=False,
            )
    except InvalidToken:
        raise ConfigError(
            "Telegram does not accept TELEGRAM_BOT_TOKEN: copy it again from @BotFather "
            "(or /revoke and use the new one)."
        ) from None
    except NetworkError as error:
        raise ConfigError(
            f"Cannot reach the Bot API ({type(error).__name__}): check the network and "
            "TELEGRAM_BASE_URL."
        ) from None
    finally:
        # A failed start-up never reaches PTB's shutdown: close the HTTP sessions here.
        loop.run_until_complete(application.bot.shutdown())
        loop.close()
    return 0
