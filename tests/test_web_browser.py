"""The web chat in a real headless Chromium (Debian's package, driven by Playwright).

A person clicks through to the plan, types, leaves with the quick exit or Escape twice,
walks the page by keyboard only, and uses it with JavaScript switched off. The server is
uvicorn on 127.0.0.1; the "neutral site" is answered by the browser itself, so nothing
leaves the machine. Set HULPWIJZER_SCREENSHOTS=docs/screenshots to refresh the README's
pictures while these tests run.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from conftest import NOON, SECRET
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from bot.app import Assistant
from bot.channels.web import WebSettings, create_app
from bot.engine import TriageEngine
from bot.store import SQLiteSessionStore, session_cipher

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXIT_URL = "https://weather.example/vandaag"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
SHOTS = os.environ.get("HULPWIJZER_SCREENSHOTS", "")
TIMEOUT_MS = 10_000

PLAN_CLICKS = (
    "Nederlands",
    "Ja, ik ben veilig",
    "Over mij",
    "13 tot en met 15",
    "Pesten",
    "Ja",
    "Instagram",
)


class Server:
    """uvicorn in a thread on a socket bound before it starts (no port races)."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        app = create_app(assistant, WebSettings(exit_url=EXIT_URL))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-browser") / "hw.sqlite3"


@pytest.fixture(scope="module")
def server(engine: TriageEngine, classifier: object, db_path: Path) -> Iterator[Server]:
    store = SQLiteSessionStore(db_path, session_cipher(SECRET))
    assistant = Assistant(engine, store, SECRET, classifier, lambda: NOON)  # type: ignore[arg-type]
    with Server(assistant) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def neutral_site(route: Route) -> None:
    route.fulfill(
        status=200,
        content_type="text/html; charset=utf-8",
        body="<!doctype html><title>Weer</title><h1>Het weer vandaag</h1>",
    )


@pytest.fixture
def new_context(browser: Browser, server: Server) -> Iterator[Callable[..., BrowserContext]]:
    contexts: list[BrowserContext] = []

    def make(**options: object) -> BrowserContext:
        options.setdefault("viewport", PHONE)
        options.setdefault("reduced_motion", "reduce")
        context = browser.new_context(base_url=server.url, **options)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        context.route("https://weather.example/**", neutral_site)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context().new_page()


def click(page: Page, label: str) -> None:
    """Press the option with exactly this label in the latest turn."""
    page.locator("#current").get_by_role("button", name=label, exact=True).click()


def current_text(page: Page) -> str:
    return page.locator("#current").inner_text()


def session_count(db_path: Path) -> int:
    with sqlite3.connect(db_path) as db:
        return int(db.execute("SELECT count(*) FROM sessions").fetchone()[0])


def session_exists(server: Server, page: Page) -> bool:
    cookies = [c for c in page.context.cookies() if c["name"] == "sid"]
    if not cookies:
        return False
    key = server.assistant.key_for("web", cookies[0]["value"])
    return server.assistant.store.load(key) is not None


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def shoot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def walk_to_plan(page: Page) -> None:
    for label in PLAN_CLICKS:
        click(page, label)
    expect(page.locator("#current")).to_contain_text("Dit is jouw plan")


# ---------------------------------------------------------------------- with JavaScript
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_click_through_to_the_plan_without_reloads(
    new_context: Callable[..., BrowserContext], viewport: dict[str, int]
) -> None:
    page = new_context(viewport=viewport).new_page()
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/?start=nl")
    expect(page).to_have_title("Chat")
    expect(page.get_by_role("heading", name="Zo werkt deze chat")).to_be_visible()
    expect(page).to_have_url(page.url.split("?")[0])  # the deep link is taken off the address
    size = "phone" if viewport is PHONE else "desktop"
    shoot(page, f"welcome-{size}")
    page.evaluate("window.stillTheSamePage = true")
    walk_to_plan(page)
    assert page.evaluate("window.stillTheSamePage") is True  # no page loads on the way
    plan = current_text(page)
    assert "Kindertelefoon" in plan
    expect(page.locator("#current").get_by_role("link", name="kindertelefoon.nl")).to_be_visible()
    # Earlier turns stay readable, their buttons are gone; the quick exit is in view.
    assert page.locator(".options").count() == 1
    expect(page.get_by_role("button", name="Snel weg")).to_be_in_viewport()
    shoot(page, f"plan-{size}")
    assert errors == []  # no CSP violations, no script errors


def test_free_text_is_understood_and_crisis_comes_first(page: Page) -> None:
    page.goto("/")
    for label in PLAN_CLICKS[:4]:
        click(page, label)
    # Type only once the last answer is on screen (the script sends one thing at a time;
    # a message sent while an answer is on its way stays in the box, CI saw it once).
    expect(page.locator("#current")).to_contain_text("Wat is er gebeurd?")
    expect(page.locator("#log")).not_to_have_attribute("aria-busy", "true")
    box = page.get_by_label("Typ je bericht")
    box.fill("ik word gepest op school")
    box.press("Enter")
    expect(page.locator("#current")).to_contain_text("ik word gepest op school")
    expect(page.locator("#current")).to_contain_text("Klopt dat?")
    assert "ik word gepest op school" in current_text(page)  # shown as what I said
    expect(box).to_have_value("")
    expect(box).to_be_focused()
    box.fill("ik wil dood")
    page.get_by_role("button", name="Versturen").click()
    expect(page.locator("#current")).to_contain_text("113")


def test_quick_exit_button_leaves_and_ends_the_session(page: Page, server: Server) -> None:
    page.goto("/")
    click(page, "Nederlands")
    expect(page.locator("#current")).to_contain_text("ben je nu veilig")
    assert session_exists(server, page)
    cookie = next(c for c in page.context.cookies() if c["name"] == "sid")
    key = server.assistant.key_for("web", cookie["value"])
    page.get_by_role("button", name="Snel weg").click()
    page.wait_for_url(EXIT_URL)
    expect(page.get_by_role("heading", name="Het weer vandaag")).to_be_visible()
    wait_until(lambda: server.assistant.store.load(key) is None)
    # location.replace: Back does not return to the chat.
    page.go_back()
    assert "127.0.0.1" not in page.url


def test_escape_twice_leaves_and_ends_the_session(page: Page, server: Server) -> None:
    page.goto("/")
    click(page, "Nederlands")
    expect(page.locator("#current")).to_contain_text("ben je nu veilig")
    cookie = next(c for c in page.context.cookies() if c["name"] == "sid")
    key = server.assistant.key_for("web", cookie["value"])
    page.get_by_label("Typ je bericht").focus()  # also from inside the text box
    page.keyboard.press("Escape")
    assert page.url.startswith(server.url)  # once is not enough
    page.keyboard.press("Escape")
    page.wait_for_url(EXIT_URL)
    wait_until(lambda: server.assistant.store.load(key) is None)


def test_keyboard_only_walk_to_the_plan(page: Page) -> None:
    page.goto("/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Naar de vraag")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Snel weg")).to_be_focused()
    page.get_by_role("link", name="Naar de vraag").focus()
    page.keyboard.press("Enter")  # skip to the question
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Nederlands")).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.press("Enter")
    # After each answer the focus is on the first new option: Tab/Enter go on.
    steps = [
        ("Ja, ik ben veilig", 0),
        ("Over mij", 0),
        ("13 tot en met 15", 1),
        ("Pesten", 2),
        ("Ja", 0),
        ("Instagram", 0),
    ]
    for label, tabs in steps:
        # The answer must be on screen first: until then the first option of the previous
        # turn still has the focus, and a Tab would land there (CI saw it once).
        expect(
            page.locator("#current").get_by_role("button", name=label, exact=True)
        ).to_be_visible()
        expect(page.locator("#log")).not_to_have_attribute("aria-busy", "true")
        expect(page.locator("#current .options button").first).to_be_focused()
        for _ in range(tabs):
            page.keyboard.press("Tab")
        expect(page.get_by_role("button", name=label, exact=True)).to_be_focused()
        page.keyboard.press("Enter")
    expect(page.locator("#current")).to_contain_text("Dit is jouw plan")
    expect(page.locator("#current .options button").first).to_be_focused()


def test_letter_copy_and_download(new_context: Callable[..., BrowserContext]) -> None:
    context = new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto("/")
    for label in ("Nederlands", "Ja, ik ben veilig", "Over mij", "18 of ouder"):
        click(page, label)
    click(page, "Naaktbeelden of seksuele beelden zijn gedeeld zonder toestemming")
    click(page, "Op een openbare website")
    click(page, "Reddit")
    click(page, "Iemand die ik niet ken")
    click(page, "Nee")
    click(page, "Verwijderverzoek opstellen")
    click(page, "Reddit")
    box = page.get_by_label("Typ je bericht")
    # Each answer waits for its question: the page ignores a send while one is on its way.
    for question, answer in (
        ("Wat zijn de webadressen", "https://www.reddit.com/r/example/comments/abc123"),
        ("Wil je je naam typen?", "Sam de Vries"),
        ("En je e-mailadres?", "sam@example.org"),
    ):
        expect(page.get_by_text(question).last).to_be_visible()
        box.fill(answer)
        box.press("Enter")
        expect(box).to_have_value("")
    letter = page.get_by_label("Tekst van de brief")
    expect(letter).to_contain_text("Sam de Vries")
    content = letter.input_value()
    page.get_by_role("button", name="Kopiëren").click()
    expect(page.locator(".copy-status")).to_contain_text("gekopieerd")
    assert page.evaluate("navigator.clipboard.readText()") == content
    with page.expect_download() as info:
        page.get_by_role("button", name="Downloaden (.txt)").click()
    download = info.value
    assert download.suggested_filename.endswith(".txt")
    assert Path(download.path()).read_text(encoding="utf-8") == content
    page.locator(".letter").scroll_into_view_if_needed()
    shoot(page, "letter-desktop")


# ---------------------------------------------------------------------- layout and motion
@pytest.mark.parametrize("width", [320, 640], ids=["320px", "200pct-zoom"])
def test_narrow_screens_need_no_sideways_scrolling(
    new_context: Callable[..., BrowserContext], width: int
) -> None:
    # 640 CSS pixels is what a 1280-pixel window shows at 200% zoom.
    page = new_context(viewport={"width": width, "height": 640}).new_page()
    page.goto("/")
    walk_to_plan(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    expect(page.get_by_role("button", name="Snel weg")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Versturen")).to_be_in_viewport()


def test_reduced_motion_turns_the_animation_off(
    new_context: Callable[..., BrowserContext],
) -> None:
    still = new_context(reduced_motion="reduce").new_page()
    moving = new_context(reduced_motion="no-preference").new_page()
    names = []
    for page in (still, moving):
        page.goto("/")
        click(page, "Nederlands")
        expect(page.locator("#current")).to_contain_text("ben je nu veilig")
        names.append(
            page.evaluate("getComputedStyle(document.getElementById('current')).animationName")
        )
    assert names == ["none", "arrive"]


def test_screen_reader_structure(page: Page) -> None:
    page.goto("/")
    log = page.get_by_role("log", name="Gesprek")
    expect(log).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("group", name="Kies een antwoord")).to_be_visible()
    expect(page.get_by_label("Typ je bericht")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    assert page.evaluate("document.documentElement.lang") == "nl"
    click(page, "English")
    expect(page.locator("#current")).to_contain_text("are you safe")
    assert page.evaluate("document.documentElement.lang") == "en"
    expect(page.get_by_role("button", name="Quick exit")).to_be_visible()
    expect(page.get_by_label("Type your message")).to_be_visible()


# ---------------------------------------------------------------------- without JavaScript
def test_without_javascript_forms_reach_the_plan_and_quick_exit_works(
    new_context: Callable[..., BrowserContext], server: Server
) -> None:
    page = new_context(java_script_enabled=False, viewport=PHONE).new_page()
    page.goto("/?start=nl")
    for label in PLAN_CLICKS:
        with page.expect_navigation():
            click(page, label)
    expect(page.locator("#current")).to_contain_text("Dit is jouw plan")
    assert page.url.endswith("/#current")
    shoot(page, "plan-nojs-phone")
    with page.expect_navigation():
        page.get_by_label("Typ je bericht").fill("/terug")
        page.get_by_role("button", name="Versturen").click()
    expect(page.locator("#current")).to_contain_text("Waar gebeurt het vooral?")
    assert session_exists(server, page)
    cookie = next(c for c in page.context.cookies() if c["name"] == "sid")
    key = server.assistant.key_for("web", cookie["value"])
    page.get_by_role("button", name="Snel weg").click()
    page.wait_for_url(EXIT_URL)
    assert server.assistant.store.load(key) is None
