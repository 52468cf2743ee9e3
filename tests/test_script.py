"""The volunteer script export and the lesson QR code.

The expectations come from data/flow.yml and responses/ themselves, so a step or an
option added to the flow can't be left out of the script without a test failing."""

from __future__ import annotations

import re
import stat
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bot import cli
from bot.app import Knowledge
from bot.lesson import QR_BORDER_BOXES, QR_BOX_PIXELS, deep_link, make_qr
from bot.script import Said, build_script, export, mermaid, render_html
from bot.session import LANGUAGES

VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
}


def _export(knowledge: Knowledge, fmt: str, lang: str, dot: str | None = None) -> str:
    return export(
        knowledge.flow, knowledge.texts, knowledge.directory, fmt, lang, dot=dot  # type: ignore[arg-type]
    )


def _unescape_md(text: str) -> str:
    return text.replace("\\|", "|")


class _Checker(HTMLParser):
    """Balanced tags, and every address the page refers to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.references: list[str] = []
        self.text: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "xlink:href", "srcset", "action", "data", "poster"):
                self.references.append(value or "")
            if name == "id" and value:
                self.ids.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "xlink:href"):
                self.references.append(value or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else '-'}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check_html(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.problems == []
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    return checker


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_every_step_and_every_option_is_in_the_script(
    knowledge: Knowledge, lang: str, fmt: str
) -> None:
    page = _export(knowledge, fmt, lang)
    shown = _unescape_md(page) if fmt == "md" else "".join(_check_html(page).text)
    texts = knowledge.texts
    for step in knowledge.flow.steps.values():
        assert step.id in shown, f"step {step.id} missing"
        placeholder = texts.get(lang, "script.placeholder")
        said = texts.get(lang, step.text, None, hours=24, situation=placeholder)
        assert said.splitlines()[0] in shown, step.id
        if step.note:
            assert texts.get(lang, step.note) in shown, f"note of {step.id} missing"
        for option in step.options:
            label = texts.get(lang, option.label)
            assert label in shown, f"{step.id}.{option.id}: {label!r} missing"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_steps_come_in_the_order_of_the_flow(knowledge: Knowledge, lang: str) -> None:
    page = _export(knowledge, "md", lang)
    positions = [page.index(f"### `{step_id}`") for step_id in knowledge.flow.steps]
    assert positions == sorted(positions)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_plan_lists_every_advice_with_numbers_and_hours_from_the_data(
    knowledge: Knowledge, lang: str
) -> None:
    page = _unescape_md(_export(knowledge, "md", lang))
    plan = page[page.index(f"## {knowledge.texts.get(lang, 'script.plan_heading')}"):]
    for advice in knowledge.flow.advice:
        first_line = knowledge.texts.get(lang, advice.text).splitlines()[0]
        assert first_line in plan, advice.id
    police = knowledge.directory.organisations["politie"]
    assert police.phone is not None and police.phone in plan
    assert "08:00-22:00" in plan  # the police callback hours, from organisations.yml
    for org_id in {a.org for a in knowledge.flow.advice if a.org}:
        assert knowledge.directory.organisations[org_id].name in plan


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_it_opens_with_the_safety_rules_then_the_overview(knowledge: Knowledge, fmt: str) -> None:
    page = _export(knowledge, fmt, "nl")
    texts = knowledge.texts
    safety = page.index(texts.get("nl", "script.safety_heading"))
    overview = page.index(texts.get("nl", "script.overview_heading"))
    first_step = page.index("welcome", overview)
    assert safety < overview < first_step
    rules = texts.get("nl", "script.safety")
    assert "foto's" in rules and "113" in rules and "112" in rules
    # The crisis lines with their numbers from the data, before any step.
    assert page.index("0800-0113") < overview


def test_markdown_overview_is_a_mermaid_graph_of_every_edge(knowledge: Knowledge) -> None:
    page = _export(knowledge, "md", "nl")
    block = page[page.index("```mermaid") : page.index("```", page.index("```mermaid") + 3)]
    assert block.startswith("```mermaid\nflowchart TD")
    for step in knowledge.flow.steps.values():
        assert f'n_{step.id}["{step.id}"]' in block
    assert "n_safety --> n_danger" in block and "n_stop_confirm --> n_erase" in block


def test_html_is_valid_self_contained_and_printable(knowledge: Knowledge) -> None:
    page = _export(knowledge, "html", "en")
    checker = _check_html(page)
    assert page.startswith("<!DOCTYPE html>")
    # Only links inside the page: no scripts, styles, fonts or images from elsewhere.
    assert checker.references, "expected in-page links between steps"
    assert all(ref.startswith("#") for ref in checker.references), checker.references
    for ref in checker.references:
        assert ref[1:] in checker.ids, f"link to missing {ref}"
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered and "<img" not in lowered
    assert "@import" not in lowered and "url(" not in lowered
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", lowered)
    # Prints on A4 without cutting rows or tables in two.
    assert "@page { size: A4" in page
    assert "@media print" in page
    assert re.search(r"tr, td, th[^}]*break-inside: avoid", page)
    assert "thead { display: table-header-group; }" in page


def test_without_graphviz_the_overview_is_an_outline(knowledge: Knowledge) -> None:
    page = _export(knowledge, "html", "nl", dot=None)
    assert '<ul class="outline">' in page and "<svg" not in page
    outline = page[page.index('<ul class="outline">') :]
    assert '<a href="#step-safety"><code>safety</code></a>' in outline


def _fake_dot(tmp_path: Path, svg: str) -> str:
    """A stand-in for Graphviz `dot` that answers with a fixed SVG (no Graphviz needed)."""
    path = tmp_path / "dot"
    path.write_text(f"#!/bin/sh\ncat > /dev/null\ncat <<'SVG'\n{svg}\nSVG\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


GRAPHVIZ_LIKE = (
    '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
    '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
    ' "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
    '<svg width="80pt" height="40pt" viewBox="0 0 80 40" xmlns="http://www.w3.org/2000/svg" '
    'xmlns:xlink="http://www.w3.org/1999/xlink"><g id="graph0" class="graph">'
    "<title>flow</title><text x=\"5\" y=\"20\">welcome</text></g></svg>"
)


def test_with_graphviz_the_overview_is_inline_svg(knowledge: Knowledge, tmp_path: Path) -> None:
    page = _export(knowledge, "html", "nl", dot=_fake_dot(tmp_path, GRAPHVIZ_LIKE))
    _check_html(page)
    assert '<g id="graph0" class="graph">' in page
    assert "<?xml" not in page and "svg11.dtd" not in page
    assert '<ul class="outline">' not in page


def test_an_svg_that_reaches_outside_is_not_embedded(knowledge: Knowledge, tmp_path: Path) -> None:
    linked = GRAPHVIZ_LIKE.replace(
        "<text", '<a xlink:href="https://example.org/x"><text'
    ).replace("</text>", "</text></a>")
    page = _export(knowledge, "html", "nl", dot=_fake_dot(tmp_path, linked))
    assert "example.org" not in page
    assert '<ul class="outline">' in page


def test_a_broken_graphviz_falls_back_to_the_outline(knowledge: Knowledge, tmp_path: Path) -> None:
    broken = tmp_path / "dot"
    broken.write_text("#!/bin/sh\nexit 3\n", encoding="utf-8")
    broken.chmod(0o755)
    page = _export(knowledge, "html", "nl", dot=str(broken))
    assert '<ul class="outline">' in page


def test_text_from_the_data_is_escaped_in_html(knowledge: Knowledge) -> None:
    script = build_script(knowledge.flow, knowledge.texts, knowledge.directory, "nl")
    script.steps[0].says[0] = Said("<script>alert(1)</script>")
    page = render_html(script)
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page
    assert mermaid(script).startswith("flowchart TD")


@pytest.fixture
def quiet_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads settings from the environment; keep its files out of the project."""
    monkeypatch.setenv("HULPWIJZER_SECRET", "script-test-" + "y" * 40)
    monkeypatch.setenv("HULPWIJZER_VAR", str(tmp_path / "var"))


@pytest.mark.usefixtures("quiet_settings")
def test_cli_script_writes_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "script.html"
    assert cli.main(["script", "--format", "html", "--lang", "en", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert '<html lang="en">' in page
    assert cli.main(["script", "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("# Hulpwijzer")


@pytest.mark.usefixtures("quiet_settings")
def test_cli_script_to_a_missing_folder_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "script.md"
    assert cli.main(["script", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err


# ---------------------------------------------------------------------- QR code
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _modules(path: Path) -> list[list[bool]]:
    """Read the PNG back module by module (dark = True), sampling each box's centre."""
    image = Image.open(path).convert("L")
    count = image.width // QR_BOX_PIXELS
    half = QR_BOX_PIXELS // 2
    centres = [n * QR_BOX_PIXELS + half for n in range(count)]
    return [[image.getpixel((x, y)) < 128 for x in centres] for y in centres]  # type: ignore[operator]


def test_qr_png_encodes_the_lesson_deep_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "les.png"
    args = ["qr", "--payload", "les", "--bot-username", "HulpwijzerBot", "--out", str(out)]
    assert cli.main(args) == 0
    link = "https://t.me/HulpwijzerBot?start=les"
    assert link in capsys.readouterr().out
    width, height = _png_size(out)
    assert width == height and 300 <= width <= 2000
    # No QR decoder ships with the project; instead the image, read back pixel by pixel,
    # must be exactly the code for this link (and not for a similar one).
    expected = make_qr(link).get_matrix()
    assert len(expected) * QR_BOX_PIXELS == width
    assert QR_BORDER_BOXES >= 4  # the quiet zone scanners need
    assert _modules(out) == expected
    assert _modules(out) != make_qr("https://t.me/HulpwijzerBot?start=lesson").get_matrix()


def test_qr_accepts_an_at_sign_before_the_username() -> None:
    assert deep_link("@Hulp_wijzer_bot", "les-1") == "https://t.me/Hulp_wijzer_bot?start=les-1"


@pytest.mark.parametrize(
    ("username", "payload", "out_name", "mentions"),
    [
        ("abcd", "les", "q.png", "--bot-username"),
        ("a" * 33, "les", "q.png", "--bot-username"),
        ("hulp-wijzer", "les", "q.png", "--bot-username"),
        ("HulpwijzerBot", "", "q.png", "--payload"),
        ("HulpwijzerBot", "les les", "q.png", "--payload"),
        ("HulpwijzerBot", "l" * 65, "q.png", "--payload"),
        ("HulpwijzerBot", "les", "q.jpg", "--out"),
        ("HulpwijzerBot", "les", "missing/q.png", "--out"),
    ],
)
def test_bad_qr_input_exits_2_with_one_sentence(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    username: str,
    payload: str,
    out_name: str,
    mentions: str,
) -> None:
    out = tmp_path / out_name
    args = ["qr", "--payload", payload, "--bot-username", username, "--out", str(out)]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(".") and mentions in lines[0]
    assert not out.exists()
