"""A fake Telegram Bot API server for tests and benchmarks (aiohttp, 127.0.0.1, free port).

The real bot talks to it over real HTTP through `TELEGRAM_BASE_URL`, so what is tested
is what runs in production: PTB's request layer, the rate limiter, retries, parsing.
It keeps every chat's messages like Telegram does (message ids per chat, deleting
removes them), records every call, and can be told to misbehave (429 with retry_after,
500, slow answers, dropped connections) for a number of calls or at random.

A faulted call is not carried out (no message is sent), as with the real server, so a
client that retries correctly ends with every reply delivered exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:AAHfakeTokenForTestsOnly_abcdefghijkl"
BOT_ID = 123456789
BOT_USERNAME = "HulpwijzerTestBot"

_JSON_FIELDS = {
    "reply_markup",
    "commands",
    "scope",
    "message_ids",
    "allowed_updates",
    "link_preview_options",
    "reply_parameters",
    "entities",
}
_INT_FIELDS = {"chat_id", "message_id", "offset", "limit", "timeout", "max_connections"}
# What a bot needs for a message to count as "a question the user can answer".
Json = dict[str, Any]


@dataclass
class Call:
    """One request the bot made: method, decoded parameters, when, and what became of it:
    `outcome` "ok" (carried out), "faulted" (refused or dropped on purpose), "error" (a bad
    request) or "gave-up" (the client left a slow call); `fault` names the fault served."""

    method: str
    params: Json
    at: float
    outcome: str = "ok"
    fault: str | None = None


@dataclass
class Fault:
    """Misbehave on matching calls: `kind` is "429", "500", "400", "slow" or "drop"."""

    kind: str
    methods: frozenset[str] | None = None  # None: any method except getUpdates
    times: int = 1
    retry_after: int = 1
    delay: float = 1.0

    def matches(self, method: str) -> bool:
        if self.times <= 0:
            return False
        if self.methods is None:
            return method != "getUpdates"
        return method in self.methods


@dataclass
class Chaos:
    """Random faults for load and fault runs: each call faults with probability `rate`."""

    rate: float
    kinds: tuple[str, ...] = ("429", "500", "slow", "drop")
    methods: frozenset[str] | None = None
    retry_after: int = 1
    delay: float = 0.5
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self, method: str) -> Fault | None:
        eligible = method != "getUpdates" if self.methods is None else method in self.methods
        if not eligible or self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        return Fault(kind, retry_after=self.retry_after, delay=self.delay)


@dataclass
class Chat:
    """One chat as the fake server knows it: its messages in order and what was deleted."""

    id: int
    type: str  # "private" or "group"
    title: str = ""
    messages: dict[int, Json] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)
    next_id: int = 1

    def as_json(self) -> Json:
        if self.type == "private":
            return {"id": self.id, "type": "private", "first_name": "Test"}
        return {"id": self.id, "type": self.type, "title": self.title or "Klas 4B"}

    def bot_messages(self) -> list[Json]:
        """Messages from the bot still visible in the chat, oldest first."""
        return [m for m in self.messages.values() if m["from"]["id"] == BOT_ID]

    def user_messages(self) -> list[Json]:
        return [m for m in self.messages.values() if m["from"]["id"] != BOT_ID]

    def texts(self) -> list[str]:
        return [m.get("text") or m.get("caption") or "" for m in self.bot_messages()]

    def last_buttons(self) -> list[Json]:
        """Buttons of the newest bot message that has any (what the user sees last)."""
        for message in reversed(self.bot_messages()):
            rows = (message.get("reply_markup") or {}).get("inline_keyboard")
            if rows:
                return [button for row in rows for button in row]
        return []


def _user(user_id: int, language_code: str | None) -> Json:
    user: Json = {"id": user_id, "is_bot": False, "first_name": "Test"}
    if language_code:
        user["language_code"] = language_code
    return user


def _bot_user() -> Json:
    return {"id": BOT_ID, "is_bot": True, "first_name": "Hulpwijzer", "username": BOT_USERNAME}


_MEDIA: dict[str, Callable[[str], Json]] = {
    "photo": lambda fid: {
        "photo": [{"file_id": fid, "file_unique_id": fid, "width": 90, "height": 90}]
    },
    "video": lambda fid: {
        "video": {"file_id": fid, "file_unique_id": fid, "width": 9, "height": 9, "duration": 1}
    },
    "voice": lambda fid: {"voice": {"file_id": fid, "file_unique_id": fid, "duration": 1}},
    "video_note": lambda fid: {
        "video_note": {"file_id": fid, "file_unique_id": fid, "length": 9, "duration": 1}
    },
    "document": lambda fid: {
        "document": {"file_id": fid, "file_unique_id": fid, "file_name": "scan.pdf"}
    },
    "sticker": lambda fid: {
        "sticker": {
            "file_id": fid,
            "file_unique_id": fid,
            "type": "regular",
            "width": 9,
            "height": 9,
            "is_animated": False,
            "is_video": False,
        }
    },
    "animation": lambda fid: {
        "animation": {
            "file_id": fid,
            "file_unique_id": fid,
            "width": 9,
            "height": 9,
            "duration": 1,
        },
        "document": {"file_id": fid, "file_unique_id": fid, "file_name": "a.gif.mp4"},
    },
    "audio": lambda fid: {"audio": {"file_id": fid, "file_unique_id": fid, "duration": 1}},
}
MEDIA_KINDS = tuple(_MEDIA)


class FakeTelegram:
    """The server. Use `async with FakeTelegram() as tg:`; point the bot at `tg.base_url`."""

    def __init__(self, token: str = TOKEN, long_poll_cap: float = 1.0) -> None:
        self.token = token
        self.long_poll_cap = long_poll_cap
        self.calls: list[Call] = []
        self.chats: dict[int, Chat] = {}
        self.updates: list[Json] = []
        self.confirmed_offset = 0
        self.served_at: dict[int, float] = {}
        self.faults: list[Fault] = []
        self.chaos: Chaos | None = None
        self.commands: dict[str, list[Json]] = {}
        self.descriptions: dict[str, str] = {}
        self.short_descriptions: dict[str, str] = {}
        self.webhook: Json = {}
        self.file_requests = 0
        self.in_flight = 0
        self.last_activity = time.monotonic()
        self.on_bot_message: list[Callable[[Chat, Json], None]] = []
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._file)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._new_update.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ------------------------------------------------------------------ faults
    def fail(
        self,
        kind: str,
        methods: Iterable[str] | None = None,
        times: int = 1,
        retry_after: int = 1,
        delay: float = 1.0,
    ) -> Fault:
        """Answer the next `times` matching calls with a fault instead of carrying them out."""
        fault = Fault(kind, frozenset(methods) if methods else None, times, retry_after, delay)
        self.faults.append(fault)
        return fault

    def _fault_for(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method):
                fault.times -= 1
                return fault
        return self.chaos.pick(method) if self.chaos else None

    # ------------------------------------------------------------------ the user's side
    def chat(self, chat_id: int, type: str = "private", title: str = "") -> Chat:
        if chat_id not in self.chats:
            self.chats[chat_id] = Chat(chat_id, type, title)
        return self.chats[chat_id]

    def _push(self, update: Json) -> int:
        update["update_id"] = next(self._update_ids)
        self.updates.append(update)
        self._new_update.set()
        return int(update["update_id"])

    def _user_message(
        self, chat: Chat, user_id: int, language_code: str | None, body: Json
    ) -> Json:
        message: Json = {
            "message_id": chat.next_id,
            "date": int(time.time()),
            "chat": chat.as_json(),
            "from": _user(user_id, language_code),
            **body,
        }
        chat.next_id += 1
        chat.messages[message["message_id"]] = message
        return message

    def text_update(self, user_id: int, text: str, language_code: str | None = "nl") -> Json:
        """The update for a typed text (a command if it starts with '/'), without queueing
        it: for delivering to a webhook. The message is in the chat from now on."""
        chat = self.chat(user_id)
        body: Json = {"text": text}
        if text.startswith("/"):
            command = text.split(" ", 1)[0]
            body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        message = self._user_message(chat, user_id, language_code, body)
        return {"update_id": next(self._update_ids), "message": message}

    def send_text(self, user_id: int, text: str, language_code: str | None = "nl") -> int:
        """The user types `text` in their private chat; returns the update id."""
        update = self.text_update(user_id, text, language_code)
        self.updates.append(update)
        self._new_update.set()
        return int(update["update_id"])

    def send_media(self, user_id: int, kind: str = "photo", language_code: str = "nl") -> int:
        chat = self.chat(user_id)
        body = _MEDIA[kind](f"file-{kind}-{chat.next_id}")
        message = self._user_message(chat, user_id, language_code, body)
        return self._push({"message": message})

    def press(
        self,
        user_id: int,
        data: str,
        message_id: int | None = None,
        language_code: str = "nl",
    ) -> int:
        """The user presses a button with `data` on a bot message (default: the newest one
        with buttons). Forged data is sent as given: Telegram does not check it either."""
        chat = self.chat(user_id)
        if message_id is None:
            with_buttons = [m for m in chat.bot_messages() if m.get("reply_markup")]
            message = with_buttons[-1] if with_buttons else chat.bot_messages()[-1]
        else:
            message = chat.messages[message_id]
        query = {
            "id": str(next(self._callback_ids)),
            "from": _user(user_id, language_code),
            "chat_instance": f"ci-{user_id}",
            "message": message,
            "data": data,
        }
        return self._push({"callback_query": query})

    def press_option(self, user_id: int, option: str) -> int:
        """Press the button whose data ends with ':option' on the newest keyboard."""
        chat = self.chat(user_id)
        for button in chat.last_buttons():
            if str(button.get("callback_data", "")).rsplit(":", 1)[-1] == option:
                return self.press(user_id, button["callback_data"])
        shown = [b.get("callback_data") for b in chat.last_buttons()]
        raise AssertionError(f"no button {option!r} on screen; buttons: {shown}")

    def add_to_group(self, chat_id: int, user_id: int, title: str = "Klas 4B") -> int:
        chat = self.chat(chat_id, "group", title)
        return self._push(
            {
                "my_chat_member": {
                    "chat": chat.as_json(),
                    "from": _user(user_id, "nl"),
                    "date": int(time.time()),
                    "old_chat_member": {"user": _bot_user(), "status": "left"},
                    "new_chat_member": {"user": _bot_user(), "status": "member"},
                }
            }
        )

    def group_text(self, chat_id: int, user_id: int, text: str, title: str = "Klas 4B") -> int:
        chat = self.chat(chat_id, "group", title)
        body: Json = {"text": text}
        if text.startswith("/"):
            command = text.split(" ", 1)[0]
            body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self._push({"message": self._user_message(chat, user_id, "nl", body)})

    # ------------------------------------------------------------------ reading what happened
    def calls_to(self, method: str, outcome: str | None = "ok") -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and (outcome is None or c.outcome == outcome)
        ]

    def sent(self, chat_id: int) -> list[Call]:
        """Every message the bot delivered to this chat (deleted or not), in order."""
        return [
            c
            for c in self.calls
            if c.outcome == "ok"
            and c.method in ("sendMessage", "sendDocument")
            and c.params.get("chat_id") == chat_id
        ]

    def sent_texts(self, chat_id: int) -> list[str]:
        return [
            str(c.params.get("text") or c.params.get("caption") or "") for c in self.sent(chat_id)
        ]

    def pending_updates(self) -> int:
        return sum(1 for u in self.updates if u["update_id"] >= self.confirmed_offset)

    async def wait_for(
        self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.01)

    async def wait_idle(self, quiet: float = 0.3, timeout: float = 15.0) -> None:
        """Wait until every update was fetched, no call is open and none came for `quiet` s."""
        deadline = time.monotonic() + timeout
        while True:
            unserved = len(self.updates) - len(self.served_at)
            idle_for = time.monotonic() - self.last_activity
            if unserved == 0 and self.in_flight == 0 and idle_for >= quiet:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the bot did not go quiet in time")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ HTTP
    async def _file(self, request: web.Request) -> web.Response:
        self.file_requests += 1
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"})

    async def _params(self, request: web.Request) -> Json:
        params: Json = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                form = await request.post()
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        params[name] = {
                            "filename": value.filename,
                            "content": value.file.read(),
                        }
                    else:
                        params[name] = value
        for name in list(params):
            value = params[name]
            if name in _JSON_FIELDS and isinstance(value, str):
                params[name] = json.loads(value)
            elif name in _INT_FIELDS and isinstance(value, str):
                try:
                    params[name] = int(value)
                except ValueError:
                    pass
        return params

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        if method == "getUpdates":
            return await self._serve(request, method)
        self.in_flight += 1
        try:
            return await self._serve(request, method)
        finally:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    async def _serve(self, request: web.Request, method: str) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params = await self._params(request)
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        fault = self._fault_for(method)
        if fault is not None:
            call.fault = fault.kind
            call.outcome = "faulted"
            if fault.kind == "429":
                return _error(
                    429,
                    f"Too Many Requests: retry after {fault.retry_after}",
                    {"retry_after": fault.retry_after},
                )
            if fault.kind == "500":
                return _error(500, "Internal Server Error")
            if fault.kind == "400":
                return _error(400, "Bad Request: something in the request was refused")
            if fault.kind == "drop":
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)
            await asyncio.sleep(fault.delay)  # "slow": answer late, then carry it out
            if request.transport is None or request.transport.is_closing():
                call.outcome = "gave-up"  # the client stopped waiting: not carried out
                return web.Response(status=500)
            call.outcome = "ok"
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            call.outcome = "error"
            return _error(404, "Not Found")
        try:
            result = await handler(params)
        except _ApiError as error:
            call.outcome = "error"
            return _error(error.status, error.description)
        call.at = time.monotonic()
        return web.json_response({"ok": True, "result": result})

    # ------------------------------------------------------------------ Bot API methods
    async def _m_getMe(self, params: Json) -> Json:
        return {
            **_bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_getUpdates(self, params: Json) -> list[Json]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = min(float(params.get("timeout") or 0), self.long_poll_cap)
        if offset:
            self.confirmed_offset = max(self.confirmed_offset, offset)
        deadline = time.monotonic() + timeout
        while True:
            ready = [u for u in self.updates if u["update_id"] >= self.confirmed_offset][:limit]
            if ready or time.monotonic() >= deadline:
                break
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass
        now = time.monotonic()
        for update in ready:
            self.served_at.setdefault(update["update_id"], now)
        return ready

    async def _m_deleteWebhook(self, params: Json) -> bool:
        self.webhook = {}
        return True

    async def _m_setWebhook(self, params: Json) -> bool:
        self.webhook = dict(params)
        return True

    async def _m_getWebhookInfo(self, params: Json) -> Json:
        return {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": 0,
        }

    async def _m_setMyCommands(self, params: Json) -> bool:
        self.commands[str(params.get("language_code") or "")] = list(params["commands"])
        return True

    async def _m_setMyDescription(self, params: Json) -> bool:
        self.descriptions[str(params.get("language_code") or "")] = str(
            params.get("description", "")
        )
        return True

    async def _m_setMyShortDescription(self, params: Json) -> bool:
        self.short_descriptions[str(params.get("language_code") or "")] = str(
            params.get("short_description", "")
        )
        return True

    def _bot_message(self, params: Json, body: Json) -> Json:
        chat = self.chats.get(int(params["chat_id"]))
        if chat is None:
            raise _ApiError(400, "Bad Request: chat not found")
        message: Json = {
            "message_id": chat.next_id,
            "date": int(time.time()),
            "chat": chat.as_json(),
            "from": _bot_user(),
            **body,
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        chat.next_id += 1
        chat.messages[message["message_id"]] = message
        for listener in self.on_bot_message:
            listener(chat, message)
        return message

    async def _m_sendMessage(self, params: Json) -> Json:
        text = str(params.get("text", ""))
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise _ApiError(400, "Bad Request: message is too long")
        self._check_markup(params)
        return self._bot_message(params, {"text": text})

    async def _m_sendDocument(self, params: Json) -> Json:
        document = params.get("document")
        if not isinstance(document, dict):
            raise _ApiError(400, "Bad Request: there is no document in the request")
        body: Json = {
            "document": {
                "file_id": "doc",
                "file_unique_id": "doc",
                "file_name": document["filename"],
                "file_size": len(document["content"]),
            }
        }
        if params.get("caption"):
            body["caption"] = params["caption"]
        self._check_markup(params)
        return self._bot_message(params, body)

    def _check_markup(self, params: Json) -> None:
        for row in (params.get("reply_markup") or {}).get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")

    def _existing(self, params: Json) -> tuple[Chat, Json]:
        chat = self.chats.get(int(params["chat_id"]))
        message = chat.messages.get(int(params["message_id"])) if chat else None
        if chat is None or message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        return chat, message

    async def _m_editMessageText(self, params: Json) -> Json:
        _, message = self._existing(params)
        message["text"] = str(params.get("text", ""))
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        else:
            message.pop("reply_markup", None)
        return message

    async def _m_editMessageReplyMarkup(self, params: Json) -> Json:
        _, message = self._existing(params)
        if params.get("reply_markup") and params["reply_markup"].get("inline_keyboard"):
            message["reply_markup"] = params["reply_markup"]
        else:
            message.pop("reply_markup", None)
        return message

    async def _m_deleteMessage(self, params: Json) -> bool:
        chat = self.chats.get(int(params["chat_id"]))
        message_id = int(params["message_id"])
        if chat is None or message_id not in chat.messages:
            raise _ApiError(400, "Bad Request: message to delete not found")
        del chat.messages[message_id]
        chat.deleted.append(message_id)
        return True

    async def _m_deleteMessages(self, params: Json) -> bool:
        chat = self.chats.get(int(params["chat_id"]))
        ids = [int(i) for i in params.get("message_ids", [])]
        if chat is None or not 1 <= len(ids) <= 100:
            raise _ApiError(400, "Bad Request: message identifiers are not specified")
        for message_id in ids:
            if chat.messages.pop(message_id, None) is not None:
                chat.deleted.append(message_id)
        return True

    async def _m_answerCallbackQuery(self, params: Json) -> bool:
        return True

    async def _m_close(self, params: Json) -> bool:
        return True

    async def _m_logOut(self, params: Json) -> bool:
        return True


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _error(status: int, description: str, parameters: Json | None = None) -> web.Response:
    body: Json = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
