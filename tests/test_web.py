"""The web chat through Starlette's test client: what a visitor (or a stranger) notices."""

from __future__ import annotations

import logging
import re
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # "use httpx2": the test client works the same either way
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from bot.app import Assistant
from bot.channels.web import (
    COOKIE,
    DEFAULT_EXIT_URL,
    RateLimiter,
    WebSettings,
    create_app,
    linkify,
    web_settings,
)
from bot.cli import main
from bot.errors import ConfigError

EXIT = "https://weather.example/today"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def assistant(make_assistant: Callable[..., Assistant]) -> Assistant:
    return make_assistant()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(assistant: Assistant, clock: FakeClock) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def build(base_url: str = "http://testserver", **overrides: object) -> TestClient:
        web = WebSettings(exit_url=EXIT, **overrides)  # type: ignore[arg-type]
        client = TestClient(create_app(assistant, web, clock), base_url=base_url)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "the page has no form token"
    return match.group(1)


def buttons_of(html: str) -> dict[str, str]:
    """Option id -> button data of the buttons on the page."""
    return {
        unescape(value).rsplit(":", 1)[1]: unescape(value)
        for value in re.findall(r'name="button" value="([^"]+)"', html)
    }


def visible_text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def press(client: TestClient, option: str) -> str:
    """Press a button on the current page the way a browser without JavaScript does."""
    page = client.get("/").text
    data = buttons_of(page)
    assert option in data, f"no button {option!r} on the page: {sorted(data)}"
    response = client.post("/send", data={"csrf": csrf_of(page), "button": data[option]})
    assert response.status_code == 200  # after the 303 to /#current
    return response.text


def say(client: TestClient, text: str) -> str:
    page = client.get("/").text
    response = client.post("/send", data={"csrf": csrf_of(page), "text": text})
    assert response.status_code == 200
    return response.text


def say_with_script(client: TestClient, text: str) -> dict[str, object]:
    """Type `text` the way the page's script sends it: the answer comes back as JSON."""
    page = client.get("/").text
    response = client.post(
        "/send", data={"csrf": csrf_of(page), "text": text}, headers={"X-Hulpwijzer": "fetch"}
    )
    assert response.status_code == 200
    answer: dict[str, object] = response.json()
    return answer


def session_rows(assistant: Assistant) -> int:
    path = assistant.store.path  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM sessions").fetchone()[0])


def stored_keys(assistant: Assistant) -> list[str]:
    path = assistant.store.path  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT key FROM sessions")]


PLAN_PATH = ("nl", "yes", "me", "a13_15", "bullying", "yes", "instagram")


# ---------------------------------------------------------------------- the first visit
def test_first_visit_sets_one_private_session_cookie(client: TestClient) -> None:
    response = client.get("/")
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1
    cookie = cookies[0]
    name, _, rest = cookie.partition("=")
    assert name == COOKIE
    value = rest.split(";", 1)[0]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
    attributes = cookie.lower()
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "secure" not in attributes  # plain http on a developer's machine
    # A browser-session cookie: gone when the browser closes.
    assert "max-age" not in attributes and "expires" not in attributes


def test_cookie_is_secure_over_https(make_client: Callable[..., TestClient]) -> None:
    client = make_client(base_url="https://testserver")
    cookie = client.get("/").headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "max-age=31536000" in client.get("/health").headers["strict-transport-security"]


def test_every_visitor_gets_a_different_random_id(
    make_client: Callable[..., TestClient],
) -> None:
    ids = {make_client().get("/").cookies[COOKIE] for _ in range(5)}
    assert len(ids) == 5


def test_store_key_is_an_hmac_of_the_cookie_not_the_cookie(
    client: TestClient, assistant: Assistant
) -> None:
    client.get("/")
    sid = client.cookies[COOKIE]
    assert stored_keys(assistant) == [assistant.key_for("web", sid)]
    assert sid not in stored_keys(assistant)[0]


def test_welcome_page_is_neutral_and_explains_exit_and_history(client: TestClient) -> None:
    page = client.get("/").text
    assert "<title>Chat</title>" in page
    assert 'href="/favicon.ico"' in page
    text = visible_text(page)
    assert "Snel weg" in text
    assert "twee keer op Esc" in text
    assert "geschiedenis van je browser" in text
    assert "privévenster" in text
    assert "In welke taal wil je praten?" in text  # the engine's welcome
    assert set(buttons_of(page)) == {"nl", "en"}


def test_page_loads_nothing_from_elsewhere_and_has_no_inline_code(client: TestClient) -> None:
    page = client.get("/").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/") or s.startswith("#") for s in sources)
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/static/chat.js" defer>']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers


def test_security_headers_on_pages_static_files_and_errors(client: TestClient) -> None:
    for response in (
        client.get("/"),
        client.get("/static/chat.js"),
        client.get("/favicon.ico"),
        client.get("/no-such-page"),
    ):
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert "form-action 'self' https://weather.example" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"
        assert headers["x-frame-options"] == "DENY"
        assert "server" not in headers or "uvicorn" not in headers["server"]


def test_static_files_and_favicon_are_served(client: TestClient) -> None:
    assert client.get("/static/chat.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/chat.css").headers["content-type"].startswith("text/css")
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.content[:4] == b"\x00\x00\x01\x00"


def test_unknown_page_is_a_calm_404_with_a_way_back(client: TestClient) -> None:
    response = client.get("/admin")
    assert response.status_code == 404
    assert "Deze pagina bestaat niet" in response.text
    assert 'href="/"' in response.text
    assert client.get("/send").status_code == 405


# ---------------------------------------------------------------------- deep links
def test_deep_link_english(client: TestClient) -> None:
    page = client.get("/?start=en").text
    assert '<html lang="en">' in page
    assert "Quick exit" in page and "How this chat works" in page
    assert "private (incognito) window" in page


def test_deep_link_volunteer_shows_step_notes(client: TestClient) -> None:
    page = visible_text(client.get("/?start=vrijwilliger").text)
    assert "Vrijwilliger" in page or "Volunteer" in page


def test_deep_link_lesson_starts_practice_mode(client: TestClient, assistant: Assistant) -> None:
    client.get("/?start=les")
    session = assistant.store.load(assistant.key_for("web", client.cookies[COOKIE]))
    assert session is not None and session.mode == "lesson"


def test_unknown_start_payload_is_a_plain_start(client: TestClient, assistant: Assistant) -> None:
    page = client.get("/?start=<script>").text
    assert "<script>" not in page.split("</head>", 1)[1].replace(
        '<script src="/static/chat.js" defer>', ""
    )
    session = assistant.store.load(assistant.key_for("web", client.cookies[COOKIE]))
    assert session is not None and session.mode == "user" and session.step == "welcome"


def test_a_deep_link_restarts_an_existing_conversation(
    client: TestClient, assistant: Assistant
) -> None:
    client.get("/")
    press(client, "nl")
    client.get("/?start=en")
    session = assistant.store.load(assistant.key_for("web", client.cookies[COOKIE]))
    assert session is not None and session.lang == "en" and session.step == "welcome"


# ---------------------------------------------------------------------- the conversation
def test_no_javascript_form_flow_reaches_the_plan(client: TestClient) -> None:
    client.get("/")
    page = ""
    for option in PLAN_PATH:
        page = press(client, option)
    text = visible_text(page)
    assert "Dit is jouw plan" in text
    assert "Kindertelefoon" in text
    assert "Instagram" in text  # the echo of the last pressed button
    assert 'href="https://kindertelefoon.nl"' in page  # domains are links
    assert set(buttons_of(page)) >= {"more", "letter"}


def test_form_post_redirects_to_the_current_turn(client: TestClient) -> None:
    page = client.get("/").text
    response = client.post(
        "/send",
        data={"csrf": csrf_of(page), "button": buttons_of(page)["nl"]},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/#current"
    again = client.get("/").text
    assert "Eerst dit: ben je nu veilig?" in again
    assert 'id="current"' in again
    # Reloading shows the same turn and changes nothing.
    assert client.get("/").text.count("ben je nu veilig") == 1


def test_javascript_path_returns_a_fragment_as_json(client: TestClient) -> None:
    page = client.get("/").text
    response = client.post(
        "/send",
        data={"csrf": csrf_of(page), "button": buttons_of(page)["en"]},
        headers={"X-Hulpwijzer": "fetch"},
    )
    assert response.status_code == 200
    result = response.json()
    assert result["lang"] == "en"
    assert result["ui"]["exit"] == "Quick exit"
    assert result["ended"] is False
    assert "First this: are you safe right now?" in result["html"]
    assert "English" in result["html"]  # what was pressed
    assert "<html" not in result["html"]


def test_free_text_is_answered_and_echoed_only_in_the_moment(
    client: TestClient, assistant: Assistant
) -> None:
    client.get("/")
    for option in ("nl", "yes", "me", "a16_17"):
        press(client, option)
    result = say_with_script(client, "ik <b>weet</b> het niet")
    assert "ik &lt;b&gt;weet&lt;/b&gt; het niet" in result["html"]
    assert "<b>" not in result["html"]
    # A reload shows the answer again, but the typed words are not kept for it.
    assert "weet</b>" not in client.get("/").text and "&lt;b&gt;" not in client.get("/").text


def test_typed_number_and_command_work(client: TestClient, assistant: Assistant) -> None:
    client.get("/")
    say(client, "1")  # Nederlands
    key = assistant.key_for("web", client.cookies[COOKIE])
    session = assistant.store.load(key)
    assert session is not None and session.step == "safety"
    page = say(client, "/help")
    assert "ben je nu veilig" in page


def test_forged_button_changes_nothing_and_asks_again(
    client: TestClient, assistant: Assistant
) -> None:
    client.get("/")
    press(client, "nl")
    key = assistant.key_for("web", client.cookies[COOKIE])
    before = assistant.store.load(key)
    page = client.get("/").text
    after_page = client.post("/send", data={"csrf": csrf_of(page), "button": "99:who:child"}).text
    assert "Deze knop werkt niet meer" in visible_text(after_page)
    assert "Eerst dit: ben je nu veilig?" in visible_text(after_page)
    after = assistant.store.load(key)
    assert after is not None and before is not None
    assert (after.step, after.answers) == (before.step, before.answers)


def test_tool_buttons_go_back_and_start_again(client: TestClient, assistant: Assistant) -> None:
    client.get("/")
    press(client, "nl")
    press(client, "yes")
    key = assistant.key_for("web", client.cookies[COOKIE])
    page = client.get("/").text
    back = client.post("/send", data={"csrf": csrf_of(page), "action": "back"}).text
    assert "Terug" in visible_text(back)
    session = assistant.store.load(key)
    assert session is not None and session.step == "safety"
    client.post("/send", data={"csrf": csrf_of(page), "action": "restart"})
    session = assistant.store.load(key)
    assert session is not None and session.step == "welcome"


def test_stop_deletes_everything_and_offers_a_new_start(
    client: TestClient, assistant: Assistant
) -> None:
    client.get("/")
    press(client, "nl")
    page = client.get("/").text
    response = client.post(
        "/send", data={"csrf": csrf_of(page), "action": "stop"}, follow_redirects=False
    )
    assert response.status_code == 200
    assert session_rows(assistant) == 0
    assert "gewist" in visible_text(response.text)
    assert not re.search(r'name="csrf" value="[0-9a-f]+"', response.text)  # nothing to act on
    assert re.search(r'<div id="controls" hidden>', response.text)
    assert f"{COOKIE}=" in response.headers["set-cookie"]
    assert "max-age=0" in response.headers["set-cookie"].lower()


def test_letter_can_be_downloaded_as_txt(client: TestClient) -> None:
    client.get("/")
    for option in (
        "nl",
        "yes",
        "me",
        "adult",
        "image_abuse",
        "public",
        "reddit",
        "stranger",
        "no",
        "letter",
        "reddit",
    ):
        press(client, option)
    say(client, "https://www.reddit.com/r/example/comments/abc123")
    say(client, "Sam de Vries")
    page = say(client, "sam@example.org")
    area = re.search(
        r'<textarea id="doc-[^"]+" name="content" readonly[^>]*>(.*?)</textarea>', page, re.S
    )
    assert area, "the letter is shown in a text box"
    content = unescape(area.group(1))
    assert (
        "Sam de Vries" in content and "https://www.reddit.com/r/example/comments/abc123" in content
    )
    assert re.search(r'class="copy"[^>]*hidden>Kopiëren</button>', page)  # shown by the script
    filename = re.search(r'name="filename" value="([^"]+)"', page)
    assert filename and filename.group(1).endswith(".txt")
    download = client.post(
        "/letter",
        data={"csrf": csrf_of(page), "filename": filename.group(1), "content": content},
    )
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="{filename.group(1)}"'
    )
    assert download.text == content


LETTER_PATH = (
    "nl", "yes", "me", "adult", "image_abuse", "public", "reddit", "stranger", "no", "letter",
    "reddit",
)  # fmt: skip
LETTER_URL = "https://www.reddit.com/r/example/comments/abc123"


def _views_hold(client: TestClient, text: str) -> bool:
    """Whether the server's memory of the last turns holds `text` anywhere."""
    views = client.app.state.chat.views._views  # type: ignore[attr-defined]
    return any(text in repr(view) for _, view in views.values())


def _up_to_the_e_mail_question(client: TestClient) -> None:
    client.get("/")
    for option in LETTER_PATH:
        press(client, option)
    say(client, LETTER_URL)
    say(client, "Sam de Vries")


def test_a_letter_shown_without_script_is_not_kept_for_a_reload(client: TestClient) -> None:
    _up_to_the_e_mail_question(client)
    shown = say(client, "sam@example.org")  # the redirect's GET shows the letter once
    assert "Sam de Vries" in visible_text(shown)
    assert not _views_hold(client, "Sam de Vries")
    again = visible_text(client.get("/").text)
    assert "Sam de Vries" not in again and "sam@example.org" not in again
    assert "Hier stond je brief" in again
    assert "Waar stuur je het naartoe?" in again  # the rest of the turn is still there


def test_a_letter_shown_with_script_is_never_kept_in_memory(client: TestClient) -> None:
    _up_to_the_e_mail_question(client)
    answer = say_with_script(client, "sam@example.org")
    assert "Sam de Vries" in str(answer["html"])
    assert not _views_hold(client, "Sam de Vries") and not _views_hold(client, "sam@example")
    assert "Hier stond je brief" in visible_text(client.get("/").text)


def test_letter_download_needs_the_token_and_a_safe_name(client: TestClient) -> None:
    page = client.get("/").text
    assert client.post("/letter", data={"filename": "a.txt", "content": "x"}).status_code == 403
    response = client.post(
        "/letter",
        data={"csrf": csrf_of(page), "filename": '../x"; evil.html', "content": "hi"},
    )
    assert response.headers["content-disposition"] == 'attachment; filename="hulpwijzer.txt"'


def test_page_after_a_server_restart_shows_the_current_question(
    make_assistant: Callable[..., Assistant], clock: FakeClock
) -> None:
    first = TestClient(create_app(make_assistant(), WebSettings(exit_url=EXIT), clock))
    first.get("/")
    press(first, "nl")
    press(first, "yes")
    cookie = first.cookies[COOKIE]
    second = TestClient(create_app(make_assistant(), WebSettings(exit_url=EXIT), clock))
    second.cookies.set(COOKIE, cookie)
    page = visible_text(second.get("/").text)
    assert "Over wie gaat het?" in page
    assert "In welke taal" not in page


# ---------------------------------------------------------------------- quick exit
def test_quick_exit_ends_the_session_and_leaves(client: TestClient, assistant: Assistant) -> None:
    client.get("/")
    press(client, "nl")
    assert session_rows(assistant) == 1
    page = client.get("/").text
    response = client.post("/exit", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == EXIT
    assert session_rows(assistant) == 0
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert '"cookies"' in response.headers["clear-site-data"]
    # The next visit is a new conversation.
    client.cookies.clear()
    assert "In welke taal" in client.get("/").text


def test_quick_exit_always_leaves_but_needs_the_token_to_delete(
    client: TestClient, assistant: Assistant
) -> None:
    client.get("/")
    response = client.post("/exit", data={"csrf": "0" * 40}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == EXIT
    assert session_rows(assistant) == 1
    response = client.post("/exit", content=b"\xff" * 10, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == EXIT


def test_exit_url_default_and_configuration(tmp_path: Path) -> None:
    assert web_settings({}, tmp_path).exit_url == DEFAULT_EXIT_URL
    assert "weer" in DEFAULT_EXIT_URL or "buienradar" in DEFAULT_EXIT_URL
    chosen = web_settings({"HULPWIJZER_WEB_EXIT_URL": "https://www.nu.nl/"}, tmp_path)
    assert chosen.exit_url == "https://www.nu.nl/" and chosen.exit_origin == "https://www.nu.nl"
    for bad in ("javascript:alert(1)", "www.nu.nl", 'https://x.nl/"onload'):
        with pytest.raises(ConfigError, match="HULPWIJZER_WEB_EXIT_URL"):
            web_settings({"HULPWIJZER_WEB_EXIT_URL": bad}, tmp_path)
    with pytest.raises(ConfigError, match="HULPWIJZER_WEB_IP_PER_MINUTE"):
        web_settings({"HULPWIJZER_WEB_IP_PER_MINUTE": "lots"}, tmp_path)


# ---------------------------------------------------------------------- CSRF
def test_post_without_token_is_refused_and_changes_nothing(
    client: TestClient, assistant: Assistant
) -> None:
    page = client.get("/").text
    key = assistant.key_for("web", client.cookies[COOKIE])
    data = buttons_of(page)["nl"]
    for form in (
        {"button": data},
        {"button": data, "csrf": "f" * 40},
        {"button": data, "csrf": ""},
    ):
        response = client.post("/send", data=form)
        assert response.status_code == 403
        assert "Deze pagina is verlopen" in response.text
    session = assistant.store.load(key)
    assert session is not None and session.step == "welcome"


def test_token_of_another_visitor_is_refused(make_client: Callable[..., TestClient]) -> None:
    alice, mallory = make_client(), make_client()
    alice.get("/")
    token = csrf_of(mallory.get("/").text)
    page = alice.get("/").text
    response = alice.post("/send", data={"csrf": token, "button": buttons_of(page)["nl"]})
    assert response.status_code == 403


def test_post_without_cookie_is_refused(make_client: Callable[..., TestClient]) -> None:
    visitor = make_client()
    page = visitor.get("/").text
    visitor.cookies.clear()
    response = visitor.post("/send", data={"csrf": csrf_of(page), "text": "hoi"})
    assert response.status_code == 403
    assert 'href="/"' in response.text  # a way to start again


def test_cross_site_requests_are_refused(client: TestClient) -> None:
    page = client.get("/").text
    form = {"csrf": csrf_of(page), "button": buttons_of(page)["nl"]}
    assert (
        client.post("/send", data=form, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    )
    assert (
        client.post("/send", data=form, headers={"Origin": "https://evil.example"}).status_code
        == 403
    )
    ok = client.post(
        "/send", data=form, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    )
    assert ok.status_code == 200


# ---------------------------------------------------------------------- limits
def test_too_large_body_is_413_and_changes_nothing(
    make_client: Callable[..., TestClient], assistant: Assistant
) -> None:
    client = make_client(max_body=2048)
    page = client.get("/").text
    response = client.post("/send", data={"csrf": csrf_of(page), "text": "x" * 5000})
    assert response.status_code == 413
    assert "Dat bericht is te lang" in response.text
    assert "In welke taal" in visible_text(response.text)  # the question is still there

    def chunks() -> Iterator[bytes]:
        yield f"csrf={csrf_of(page)}&text=".encode()
        for _ in range(10):
            yield b"y" * 512

    chunked = client.post(
        "/send",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 413
    session = assistant.store.load(assistant.key_for("web", client.cookies[COOKIE]))
    assert session is not None and session.step == "welcome"


def test_longest_allowed_message_fits_the_default_limit(client: TestClient) -> None:
    client.get("/")
    press(client, "nl")
    page = client.get("/").text
    # 4,000 characters of non-Latin text, percent-encoded, is still accepted.
    response = client.post("/send", data={"csrf": csrf_of(page), "text": "ж" * 4000})
    assert response.status_code == 200


def test_rate_limit_per_session_is_429_with_retry_after(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(session_per_minute=3)
    page = client.get("/").text
    form = {"csrf": csrf_of(page), "text": "hallo"}
    statuses = [client.post("/send", data=form).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.post("/send", data=form, headers={"X-Hulpwijzer": "fetch"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "Dat ging even te snel" in limited.json()["html"]
    clock.now += 60
    assert client.post("/send", data=form).status_code == 200


def test_rate_limit_per_address_covers_many_sessions(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    app_client = make_client(ip_per_minute=5)
    statuses = []
    for _ in range(6):
        app_client.cookies.clear()
        statuses.append(app_client.get("/").status_code)
    assert statuses == [200] * 5 + [429]
    clock.now += 30
    app_client.cookies.clear()
    assert app_client.get("/").status_code == 200


def test_rate_limiter_forgets_idle_visitors() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0], max_keys=10)
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    for number in range(20):
        limiter.allow(f"v{number}")
    now[0] += 120
    limiter.prune()
    assert len(limiter) == 0


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"text": "hoi"}', "application/json"),
        (b"text=a&text=b&csrf=TOKEN", "application/x-www-form-urlencoded"),
        (b"text=%ff%fe&csrf=TOKEN", "application/x-www-form-urlencoded"),
        (b"button=x&text=y&csrf=TOKEN", "application/x-www-form-urlencoded"),
        (b"action=format-disk&csrf=TOKEN", "application/x-www-form-urlencoded"),
        (b"csrf=TOKEN", "application/x-www-form-urlencoded"),
        (b"button=" + b"1" * 300 + b"&csrf=TOKEN", "application/x-www-form-urlencoded"),
        (b"&".join(b"f%d=1" % n for n in range(20)), "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_posts_get_a_calm_400(
    client: TestClient, assistant: Assistant, content: bytes, content_type: str
) -> None:
    page = client.get("/").text
    body = content.replace(b"TOKEN", csrf_of(page).encode())
    response = client.post("/send", content=body, headers={"content-type": content_type})
    assert response.status_code == 400
    assert "Dat begreep ik niet" in response.text
    assert "In welke taal" in visible_text(response.text)
    session = assistant.store.load(assistant.key_for("web", client.cookies[COOKIE]))
    assert session is not None and session.step == "welcome"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["text", "button", "action"]),
    value=st.text(max_size=300),
)
def test_any_form_value_gets_an_answer_never_a_crash(
    client: TestClient, clock: FakeClock, field: str, value: str
) -> None:
    clock.now += 60  # each example gets a fresh rate-limit allowance
    page = client.get("/").text
    response = client.post(
        "/send", data={"csrf": csrf_of(page), field: value}, headers={"X-Hulpwijzer": "fetch"}
    )
    assert response.status_code in (200, 400)
    assert response.json()["html"]


# ---------------------------------------------------------------------- privacy in logs
def test_logs_carry_no_text_cookie_or_address(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/")
    sid = client.cookies[COOKIE]
    press(client, "nl")
    say(client, "mijn naam is Geheime Gerrit")
    client.post("/send", data={"csrf": "bad", "text": "nog iets Geheims"})
    everything = "\n".join(record.getMessage() for record in caplog.records)
    assert "web_turn" in everything
    for secret in ("Geheime", "Geheims", sid, "testclient"):
        assert secret not in everything


def test_linkify_escapes_and_links_domains_only() -> None:
    html = str(linkify('Zie helpwanted.nl. Mail <a href="x">naam@example.nl</a>, of 0800-0432.'))
    assert '<a href="https://helpwanted.nl" rel="noopener noreferrer" target="_blank">' in html
    assert "helpwanted.nl</a>." in html
    assert "&lt;a href=&#34;x&#34;&gt;" in html
    assert "naam@example.nl" in html and 'href="https://example.nl"' not in html


# ---------------------------------------------------------------------- the command
def test_cli_web_needs_a_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HULPWIJZER_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("bot.config.PROJECT_ROOT", tmp_path)
    assert main(["web", "--port", "0", "--db", str(tmp_path / "x.sqlite3")]) == 2
    assert "HULPWIJZER_SECRET" in capsys.readouterr().err
