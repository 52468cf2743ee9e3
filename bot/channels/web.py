"""The web chat: an anonymous page on the same Assistant, for people without Telegram.

A thin Starlette adapter. One HttpOnly cookie holds a random id; the store key is an HMAC
of it (like Telegram's user id) and the CSRF token is another HMAC of it, so nothing about
the visitor is kept beyond the encrypted session. The page works with plain form posts
(Post/Redirect/Get) and, when JavaScript runs, without reloads: the same endpoint returns
the same HTML fragment as JSON. Quick exit (a button, or Escape twice) ends the session.
Logs carry event kinds and key prefixes only: no text, no cookie, no address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.app import Assistant
from bot.config import PROJECT_ROOT, Settings, read_environment
from bot.errors import ConfigError
from bot.events import Incoming, Outcome, Reply
from bot.session import Session

log = logging.getLogger("hulpwijzer.web")

CHANNEL = "web"
COOKIE = "sid"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "web_static"
TEMPLATE_DIR = HERE / "web_templates"
DEFAULT_EXIT_URL = "https://www.buienradar.nl/"
# A typed message is at most 4,000 characters (the engine's limit); percent-encoded
# non-Latin text takes up to 12 bytes a character, and a letter is posted back to download.
DEFAULT_MAX_BODY = 64 * 1024
MAX_FIELDS = 8
BUTTON_DATA_LIMIT = 200
# /?start=... deep links: the same payloads as Telegram's /start.
START_PAYLOADS = frozenset({"nl", "en", "les", "lesson", "vrijwilliger", "volunteer"})
# The small tool row under the chat sends these commands (aliases every language knows).
ACTIONS = {"back": "/back", "restart": "/restart", "stop": "/stop", "help": "/help"}
_SID = re.compile(r"^[A-Za-z0-9_-]{43}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.txt$")
# Domains in texts (organisations, report pages) become links; e-mail addresses do not.
_LINK = re.compile(
    r"(?<![@\w.-])((?:https?://)?(?:[a-z0-9-]+\.)+(?:nl|com|org|net|eu|be|info|gov)"
    r"(?:/[^\s()<>]*)?)",
    re.IGNORECASE,
)
_PURGE_EVERY = 15 * 60.0


# ---------------------------------------------------------------------- settings
@dataclass(frozen=True)
class WebSettings:
    """What an operator can tune. Rates are requests per minute, as a bucket that refills."""

    exit_url: str = DEFAULT_EXIT_URL
    session_per_minute: int = 40
    # A whole classroom can share one address behind the school's router.
    ip_per_minute: int = 1200
    max_body: int = DEFAULT_MAX_BODY
    cached_views: int = 5_000
    trusted_proxies: str = "127.0.0.1"

    @property
    def exit_origin(self) -> str:
        parts = urlsplit(self.exit_url)
        return f"{parts.scheme}://{parts.netloc}"


def _positive(values: Mapping[str, str], name: str, default: int) -> int:
    text = values.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) <= 10_000_000:
        raise ConfigError(f"{name} must be a whole number above 0, not {text!r}.")
    return int(text)


def web_settings(env: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT) -> WebSettings:
    """Read HULPWIJZER_WEB_*; fail at start-up with one sentence when one is unusable."""
    values = read_environment(env, root)
    exit_url = values.get("HULPWIJZER_WEB_EXIT_URL", "").strip() or DEFAULT_EXIT_URL
    parts = urlsplit(exit_url)
    if (
        parts.scheme not in ("https", "http")
        or not parts.netloc
        or any(ch in exit_url for ch in " \"'<>\\")
    ):
        raise ConfigError(
            "HULPWIJZER_WEB_EXIT_URL must be a full web address of a neutral site, "
            f"e.g. {DEFAULT_EXIT_URL}"
        )
    return WebSettings(
        exit_url=exit_url,
        session_per_minute=_positive(values, "HULPWIJZER_WEB_SESSION_PER_MINUTE", 40),
        ip_per_minute=_positive(values, "HULPWIJZER_WEB_IP_PER_MINUTE", 1200),
        max_body=_positive(values, "HULPWIJZER_WEB_MAX_BODY_BYTES", DEFAULT_MAX_BODY),
        trusted_proxies=values.get("HULPWIJZER_WEB_TRUSTED_PROXIES", "").strip() or "127.0.0.1",
    )


# ---------------------------------------------------------------------- abuse resistance
class RateLimiter:
    """Token buckets in memory (one process): `per_minute` at once, refilled evenly."""

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_keys:
            self.prune()
        return True

    def retry_after(self, key: str) -> int:
        tokens, _ = self._buckets.get(key, (self.capacity, 0.0))
        return max(1, int((1.0 - tokens) / self.rate + 0.999))

    def prune(self) -> None:
        """Forget buckets that have refilled: they hold nothing a fresh one would not."""
        now = self._clock()
        full = [
            key
            for key, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.rate >= self.capacity
        ]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class Rejected(Exception):
    """A request a user (or a stranger) can cause: answered with a calm page, never a trace."""

    def __init__(self, status: int, text_key: str, retry_after: int | None = None) -> None:
        super().__init__(text_key)
        self.status = status
        self.text_key = text_key
        self.retry_after = retry_after


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """An url-encoded form of at most `limit` bytes, counted as it arrives (chunked too)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Rejected(413, "web.error.too_large")
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Rejected(400, "web.error.bad_request")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(413, "web.error.too_large")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "web.error.bad_request") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise Rejected(400, "web.error.bad_request")
        form[name] = value
    return form


# ---------------------------------------------------------------------- what a page shows
@dataclass(frozen=True)
class View:
    """One turn as the page shows it. `echo` is a pressed button's label, never typed text
    once the turn is kept for a reload."""

    lang: str
    replies: tuple[Reply, ...] = ()
    echo: str | None = None
    intro: bool = False
    ended: bool = False
    notice: str | None = None

    @property
    def has_letter(self) -> bool:
        return any(reply.document is not None for reply in self.replies)

    def without_letters(self, note: str) -> View:
        """This turn with each drafted letter (name, e-mail, links) replaced by `note`: what
        is kept in memory for a reload once the page has shown the letter."""
        if not self.has_letter:
            return self
        replies = tuple(Reply(note) if r.document is not None else r for r in self.replies)
        return replace(self, replies=replies)


class ViewCache:
    """The last turn per session, in memory only, so a reload or redirect shows it again.
    Bounded; quick exit and /stop drop it; it expires with the session. A drafted letter
    is kept only until a page has shown it once (`View.without_letters`)."""

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._views: OrderedDict[str, tuple[float, View]] = OrderedDict()

    def get(self, key: str) -> View | None:
        item = self._views.get(key)
        if item is None:
            return None
        if time.monotonic() - item[0] > self.ttl:
            del self._views[key]
            return None
        self._views.move_to_end(key)
        return item[1]

    def put(self, key: str, view: View) -> None:
        self._views[key] = (time.monotonic(), view)
        self._views.move_to_end(key)
        while len(self._views) > self.max_entries:
            self._views.popitem(last=False)

    def drop(self, key: str) -> None:
        self._views.pop(key, None)

    def prune(self) -> None:
        limit = time.monotonic() - self.ttl
        for key in [k for k, (at, _) in self._views.items() if at < limit]:
            del self._views[key]

    def __len__(self) -> int:
        return len(self._views)


def paragraphs(text: str) -> Markup:
    """Blank lines make paragraphs; single newlines stay (CSS pre-line); domains link."""
    blocks = [block for block in text.split("\n\n") if block.strip()]
    return Markup("").join(Markup("<p>{}</p>").format(linkify(block)) for block in blocks)


def linkify(text: str) -> Markup:
    """Escape everything; wrap web addresses in a link that leaves no referrer behind."""
    out: list[Markup] = []
    position = 0
    for match in _LINK.finditer(text):
        address = match.group(1).rstrip(".,;:!?")
        start, end = match.start(1), match.start(1) + len(address)
        out.append(escape(text[position:start]))
        href = (
            address
            if address.lower().startswith(("http://", "https://"))
            else (f"https://{address}")
        )
        out.append(
            Markup('<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>').format(
                href, address
            )
        )
        position = end
    out.append(escape(text[position:]))
    return Markup("").join(out)


class Labels:
    """`web.*` texts for templates: `ui.copy` must be the text, not dict.copy."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        self._texts = dict(texts)

    def __getattr__(self, name: str) -> str:
        try:
            return self._texts[name]
        except KeyError:
            raise AttributeError(name) from None


# ---------------------------------------------------------------------- headers
class SecurityHeaders:
    """Adds the same strict headers to every response (pages, static files, errors)."""

    def __init__(self, app: ASGIApp, exit_origin: str) -> None:
        self.app = app
        csp = (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; "
            f"form-action 'self' {exit_origin}"
        )
        self.headers = [
            ("content-security-policy", csp),
            ("x-content-type-options", "nosniff"),
            # Other sites (the exit site, an organisation's) never learn where a visitor came
            # from; our own form posts keep a real Origin header for the CSRF check.
            ("referrer-policy", "same-origin"),
            ("x-frame-options", "DENY"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
            ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()"),
            ("x-robots-tag", "noindex, nofollow"),
            # Nothing of the conversation in the browser's cache or history snapshots.
            ("cache-control", "no-store"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    headers[name] = value
                if https:
                    headers["strict-transport-security"] = "max-age=31536000"
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------- the channel
@dataclass
class WebChat:
    """Everything one web process keeps in memory, and the request handlers over it."""

    assistant: Assistant
    settings: WebSettings = field(default_factory=WebSettings)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.sessions = RateLimiter(self.settings.session_per_minute, self.clock)
        self.addresses = RateLimiter(self.settings.ip_per_minute, self.clock)
        self.views = ViewCache(self.settings.cached_views, self.assistant.ttl.total_seconds())
        self._ip_salt = secrets.token_bytes(16)
        self.texts = self.assistant.engine.texts
        self._ui: dict[str, dict[str, str]] = {}
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATE_DIR),
            auto_reload=False,
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["paragraphs"] = paragraphs

    # ------------------------------------------------------------ identity
    def key(self, sid: str) -> str:
        return self.assistant.key_for(CHANNEL, sid)

    def csrf(self, sid: str) -> str:
        """Bound to the cookie by HMAC: nothing to store, useless without the cookie."""
        return self.assistant.key_for("web-csrf", sid)[:40]

    def address_key(self, request: Request) -> str:
        """Rate limits count per address without keeping the address itself."""
        host = request.client.host if request.client else "-"
        return hashlib.blake2b(host.encode(), key=self._ip_salt, digest_size=12).hexdigest()

    @staticmethod
    def sid_of(request: Request) -> str | None:
        sid = request.cookies.get(COOKIE, "")
        return sid if _SID.match(sid) else None

    def ui(self, lang: str) -> dict[str, str]:
        """Every `web.*` text of one language, by its short name (web.error.x -> error_x)."""
        labels = self._ui.get(lang)
        if labels is None:
            entries = self.texts.catalogues.get(lang) or self.texts.catalogues["nl"]
            labels = {
                key[4:].replace(".", "_"): value
                for key, value in entries.items()
                if key.startswith("web.")
            }
            self._ui[lang] = labels
        return labels

    # ------------------------------------------------------------ rendering
    def page(
        self,
        view: View,
        sid: str | None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        html = self.templates.get_template("page.html").render(
            view=view,
            lang=view.lang,
            ui=Labels(self.ui(view.lang)),
            csrf=self.csrf(sid) if sid and not view.ended else "",
            exit_url=self.settings.exit_url,
            uid=secrets.token_hex(4),
        )
        return HTMLResponse(html, status_code=status, headers=headers)

    def fragment(self, view: View, sid: str | None) -> str:
        return self.templates.get_template("turn.html").render(
            view=view,
            ui=Labels(self.ui(view.lang)),
            csrf=self.csrf(sid) if sid and not view.ended else "",
            uid=secrets.token_hex(4),
        )

    def view_of(self, outcome: Outcome, lang: str, **extra: Any) -> View:
        return View(lang=lang, replies=tuple(outcome.replies), ended=outcome.erase, **extra)

    # ------------------------------------------------------------ turns
    async def run_turn(self, key: str, incoming: Incoming) -> tuple[Outcome, str]:
        """The Assistant is synchronous (SQLite): run it off the event loop."""
        outcome, session = await run_in_threadpool(self._handle, key, incoming)
        lang = session.lang if session is not None else self._lang_before(key)
        if outcome.erase:
            self.views.drop(key)
        return outcome, lang

    def _handle(self, key: str, incoming: Incoming) -> tuple[Outcome, Session | None]:
        """One hop to a worker thread: the turn, then the language it left the session in."""
        outcome = self.assistant.handle(key, incoming)
        return outcome, self.assistant.store.load(key)

    def _lang_before(self, key: str) -> str:
        previous = self.views.get(key)
        return previous.lang if previous is not None else "nl"

    def _set_cookie(self, response: Response, request: Request, sid: str) -> None:
        response.set_cookie(
            COOKIE,
            sid,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def _clear_cookie(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )

    def _limit_address(self, request: Request) -> None:
        key = self.address_key(request)
        if not self.addresses.allow(key):
            raise Rejected(429, "web.error.too_many", self.addresses.retry_after(key))

    # ------------------------------------------------------------ endpoints
    async def home(self, request: Request) -> Response:
        """GET /: a new conversation (or a deep link's), or the last turn again."""
        try:
            self._limit_address(request)
        except Rejected as rejected:
            return self.rejected(request, rejected, None)
        start = request.query_params.get("start", "").strip().lower()
        payload = start if start in START_PAYLOADS else ""
        sid = self.sid_of(request)
        new = sid is None
        if sid is None:
            sid = secrets.token_urlsafe(32)
        key = self.key(sid)
        view = None if (new or "start" in request.query_params) else self.views.get(key)
        if view is None:
            session = None if new else await run_in_threadpool(self.assistant.store.load, key)
            if session is None or "start" in request.query_params:
                command = f"/start {payload}".strip()
                outcome, lang = await self.run_turn(key, Incoming("command", command))
                view = self.view_of(outcome, lang, intro=True)
                log.info("web_start key=%s", key[:12])
            else:
                # Shown again after a restart of the server: the current question.
                outcome, lang = await self.run_turn(
                    key, Incoming("command", f"/language {session.lang}")
                )
                view = self.view_of(outcome, lang)
            self.views.put(key, view)
        response = self.page(view, sid)
        if view.has_letter:  # shown now: not kept for a reload
            self.views.put(key, view.without_letters(self.ui(view.lang)["letter_not_kept"]))
        if new:
            self._set_cookie(response, request, sid)
        return response

    async def send(self, request: Request) -> Response:
        """POST /send: a button, typed text or a tool action. PRG for forms, JSON for fetch."""
        fetch = request.headers.get("x-hulpwijzer") == "fetch"
        sid = self.sid_of(request)
        try:
            self._limit_address(request)
            form = await read_form(request, self.settings.max_body)
            sid = self._check_origin_and_token(request, form)
            key = self.key(sid)
            if not self.sessions.allow(key):
                raise Rejected(429, "web.error.too_many", self.sessions.retry_after(key))
            incoming, echo = self._incoming(form, key)
        except Rejected as rejected:
            return self.rejected(request, rejected, sid, fetch=fetch)
        outcome, lang = await self.run_turn(key, incoming)
        kept_echo = echo if incoming.kind != "text" else None
        view = self.view_of(outcome, lang, echo=kept_echo)
        if not outcome.erase:
            # Without script the letter is shown by the redirect to GET /; with script it
            # is in this answer already, so memory never holds it.
            kept = view.without_letters(self.ui(lang)["letter_not_kept"]) if fetch else view
            self.views.put(key, kept)
        log.info("web_turn kind=%s key=%s", incoming.kind, key[:12])
        if fetch:
            shown = self.view_of(outcome, lang, echo=echo)
            response: Response = JSONResponse(
                {
                    "html": self.fragment(shown, sid),
                    "lang": lang,
                    "ui": self.ui(lang),
                    "ended": outcome.erase,
                }
            )
        elif outcome.erase:
            response = self.page(view, None)
        else:
            response = RedirectResponse("/#current", status_code=303)
        if outcome.erase:
            self._clear_cookie(response, request)
        return response

    async def quick_exit(self, request: Request) -> Response:
        """POST /exit: end the session and leave for the neutral site. Never an error page:
        whoever presses it wants out now."""
        sid = self.sid_of(request)
        try:
            form = await read_form(request, 4096)
            if sid is not None and hmac.compare_digest(form.get("csrf", ""), self.csrf(sid)):
                key = self.key(sid)
                await run_in_threadpool(self.assistant.store.delete, key)
                self.views.drop(key)
                self.sessions.prune()
                log.info("web_quick_exit key=%s", key[:12])
        except Rejected:
            pass
        response = RedirectResponse(self.settings.exit_url, status_code=303)
        self._clear_cookie(response, request)
        response.headers["clear-site-data"] = '"cache", "cookies", "storage"'
        return response

    async def letter(self, request: Request) -> Response:
        """POST /letter: the letter shown on the page, back as a .txt download."""
        sid = self.sid_of(request)
        try:
            self._limit_address(request)
            form = await read_form(request, self.settings.max_body)
            sid = self._check_origin_and_token(request, form)
        except Rejected as rejected:
            return self.rejected(request, rejected, sid)
        filename = form.get("filename", "")
        if not _FILENAME.match(filename):
            filename = "hulpwijzer.txt"
        content = form.get("content", "").replace("\r\n", "\n")
        log.info("web_letter_download key=%s", self.key(sid)[:12])
        return Response(
            content,
            media_type="text/plain; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    async def favicon(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon")

    async def health(self, request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    # ------------------------------------------------------------ checks
    def _check_origin_and_token(self, request: Request, form: Mapping[str, str]) -> str:
        """CSRF: the browser says the request is same-origin (when it says anything), the
        cookie is there, and the form carries the token derived from it."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Rejected(403, "web.error.expired")
        origin = request.headers.get("origin")
        # "null" comes from browsers that hide the origin; the token still has to match.
        if origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get(
            "host", ""
        ):
            raise Rejected(403, "web.error.expired")
        sid = self.sid_of(request)
        if sid is None or not hmac.compare_digest(form.get("csrf", ""), self.csrf(sid)):
            raise Rejected(403, "web.error.expired")
        return sid

    def _incoming(self, form: Mapping[str, str], key: str) -> tuple[Incoming, str | None]:
        chosen = [name for name in ("button", "text", "action") if name in form]
        if len(chosen) != 1:
            raise Rejected(400, "web.error.bad_request")
        name = chosen[0]
        value = form[name]
        if name == "button":
            if len(value) > BUTTON_DATA_LIMIT:
                raise Rejected(400, "web.error.bad_request")
            return Incoming("button", value), self._label_of(key, value)
        if name == "action":
            if value not in ACTIONS:
                raise Rejected(400, "web.error.bad_request")
            lang = self._lang_before(key)
            return Incoming("command", ACTIONS[value]), self.ui(lang).get(value)
        text = value.replace("\r\n", "\n")
        return Incoming("text", text), text

    def _label_of(self, key: str, data: str) -> str | None:
        """The label of the pressed button, from the turn that showed it."""
        previous = self.views.get(key)
        if previous is None:
            return None
        for reply in previous.replies:
            for button in reply.buttons:
                if button.data == data:
                    return button.label
        return None

    def rejected(
        self, request: Request, rejected: Rejected, sid: str | None, fetch: bool = False
    ) -> Response:
        """A calm answer in the page (or fragment) the user was on; nothing changes."""
        key = self.key(sid) if sid else None
        previous = self.views.get(key) if key else None
        lang = previous.lang if previous else "nl"
        notice = self.ui(lang).get(rejected.text_key[4:].replace(".", "_"), "")
        headers = {"retry-after": str(rejected.retry_after)} if rejected.retry_after else None
        valid = rejected.status != 403 and sid is not None
        log.info("web_rejected status=%s", rejected.status)
        if fetch:
            view = View(lang=lang, notice=notice, ended=not valid)
            return JSONResponse(
                {
                    "html": self.fragment(view, sid if valid else None),
                    "error": rejected.status,
                    "ended": not valid,
                },
                status_code=rejected.status,
                headers=headers,
            )
        if valid and previous is not None:
            view = View(lang=lang, replies=previous.replies, echo=previous.echo, notice=notice)
        else:
            view = View(lang=lang, notice=notice, ended=not valid)
        return self.page(view, sid if valid else None, rejected.status, headers)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        key = "web.error.not_found" if status == 404 else "web.error.bad_request"
        return self.rejected(request, Rejected(status, key), None)

    async def server_error(self, request: Request, exc: Exception) -> Response:
        log.error("web_error type=%s", type(exc).__name__)
        return self.rejected(request, Rejected(500, "web.error.server"), None)

    # ------------------------------------------------------------ housekeeping
    async def housekeeping(self) -> None:
        """Purge idle sessions and forget full buckets and old views, every quarter hour."""
        while True:
            await asyncio.sleep(_PURGE_EVERY)
            try:
                removed = await run_in_threadpool(self.assistant.purge)
                self.views.prune()
                self.sessions.prune()
                self.addresses.prune()
                log.info("web_purge removed=%s", removed)
            except Exception as error:  # keep serving; the next round tries again
                log.warning("web_purge_failed type=%s", type(error).__name__)


def create_app(
    assistant: Assistant,
    settings: WebSettings | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The ASGI app: routes, strict headers, friendly error pages, a purge task."""
    chat = WebChat(assistant, settings or WebSettings(), clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(chat.housekeeping())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[
            Route("/", chat.home, methods=["GET"]),
            Route("/send", chat.send, methods=["POST"]),
            Route("/exit", chat.quick_exit, methods=["POST"]),
            Route("/letter", chat.letter, methods=["POST"]),
            Route("/favicon.ico", chat.favicon, methods=["GET"]),
            Route("/health", chat.health, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={
            404: chat.not_found,
            405: chat.not_found,
            500: chat.server_error,
        },
        middleware=[Middleware(SecurityHeaders, exit_origin=chat.settings.exit_origin)],
        lifespan=lifespan,
    )
    app.state.chat = chat
    return app


def run(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    with_nlu: bool = True,
) -> int:
    """`hulpwijzer web`: check the settings, load everything, then serve until stopped."""
    import uvicorn

    from bot.app import build_assistant

    web = web_settings(root=settings.root)
    assistant = build_assistant(settings, with_nlu=with_nlu)
    app = create_app(assistant, web)
    log.info("web_listening port=%s", port)
    uvicorn.run(
        app,
        host=host,
        port=port,
        # uvicorn's access log writes every client address and query string: never on.
        access_log=False,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=web.trusted_proxies,
        log_level="warning",
    )
    return 0
