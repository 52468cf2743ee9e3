"""The volunteer script: the whole triage flow as a printable document (Markdown or HTML).

It is built from the same data the bot runs on (data/flow.yml, responses/, the
organisations), so the script a volunteer holds can't drift from what the bot says.
Every sentence in it, headings included, is a key in responses/<lang>.yml.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment
from markupsafe import Markup, escape

from bot.directory import Directory
from bot.engine import TriageEngine
from bot.flow import ERASE, RESUME, SUGGESTION, Condition, Flow, Step, Target
from bot.texts import Texts

Format = Literal["md", "html"]
FORMATS: tuple[Format, ...] = ("md", "html")
TIERS = ("first", "step", "more")
# Shown in the safety section with their numbers, whatever the flow says.
CRISIS_ORGS = ("zelfmoordpreventie_113", "politie_112")
SPECIAL_KEYS = {
    RESUME: "script.target.resume",
    SUGGESTION: "script.target.suggestion",
    ERASE: "script.target.erase",
}
DOCUMENT_KINDS = ("letter_ready", "aangifte", "evidence")
DOT_TIMEOUT = 20  # seconds; a stuck Graphviz must not hang the export
# The headings and fixed phrases every format uses (keys under `script.` in responses/).
WORDS = (
    "title", "intro", "safety_heading", "crisis_contacts", "overview_heading",
    "overview_note", "steps_heading", "says", "note", "orgs", "options", "col_number",
    "col_option", "col_next", "entry", "plan_ref", "plan_heading", "plan_intro",
    "col_advice", "col_when", "col_org", "orgs_heading", "orgs_intro", "route", "then",
)


@dataclass(frozen=True)
class Said:
    """One thing the bot says at a step; `when` is set for a variant (e.g. who: a parent)."""

    text: str
    when: str | None = None


@dataclass(frozen=True)
class Goto:
    """Where an answer leads: a step (linkable) or a special target, maybe under a condition."""

    label: str
    step: str | None
    target: str
    when: str | None = None


@dataclass(frozen=True)
class OptionRow:
    number: int
    label: str
    leads_to: list[Goto]
    shown_if: str | None = None


@dataclass(frozen=True)
class ScriptStep:
    id: str
    entry: bool
    says: list[Said]
    variants: list[Said]
    note: str | None
    orgs: list[str]
    options: list[OptionRow]
    before: str | None = None
    after: str | None = None
    free_text: str | None = None
    asked_if: str | None = None
    # Branches shared by every answer without its own target, shown once under the table.
    then: list[Goto] = field(default_factory=list)


@dataclass(frozen=True)
class AdviceRow:
    text: str
    when: str
    org: str | None
    route: str | None


@dataclass(frozen=True)
class Script:
    """Everything a renderer needs, already in one language."""

    lang: str
    words: dict[str, str]
    safety_rules: list[str]
    crisis_orgs: list[str]
    steps: list[ScriptStep]
    edges: list[tuple[str, str]]
    entry_points: list[str]
    tiers: list[tuple[str, list[AdviceRow]]]
    organisations: list[str]
    nodes: list[str] = field(default_factory=list)


class ScriptBuilder:
    """Reads the flow once and words it in one language."""

    def __init__(
        self, flow: Flow, texts: Texts, directory: Directory, lang: str, ttl_hours: int = 24
    ) -> None:
        self.flow = flow
        self.texts = texts
        self.directory = directory
        self.lang = lang
        self.ttl_hours = ttl_hours
        self.engine = TriageEngine(flow, texts, directory, lambda _text: None)
        # Which step asks for a slot: conditions name the slot by that step's id.
        self._slot_step: dict[str, Step] = {}
        for step in flow.steps.values():
            for option in step.options:
                for slot in option.set:
                    self._slot_step.setdefault(slot, step)

    def t(self, key: str, variant: str | None = None) -> str:
        placeholder = self.texts.get(self.lang, "script.placeholder")
        return self.texts.get(
            self.lang, key, variant, hours=self.ttl_hours, situation=placeholder
        )

    def build(self) -> Script:
        steps = [self._step(step) for step in self.flow.steps.values()]
        used_orgs: list[str] = []
        for org_id in [
            *CRISIS_ORGS,
            *(o for s in self.flow.steps.values() for o in s.orgs),
            *(a.org for a in self.flow.advice if a.org),
        ]:
            if org_id not in used_orgs and org_id in self.directory.organisations:
                used_orgs.append(org_id)
        return Script(
            lang=self.lang,
            words={word: self.t(f"script.{word}") for word in WORDS},
            safety_rules=[line for line in self.t("script.safety").splitlines() if line.strip()],
            crisis_orgs=[self._org(o) for o in CRISIS_ORGS if o in self.directory.organisations],
            steps=steps,
            edges=self._edges(),
            entry_points=list(self.flow.entry_points),
            tiers=[(self.t(f"script.tier.{tier}"), self._advice(tier)) for tier in TIERS],
            organisations=[self._org(o) for o in used_orgs],
            nodes=list(self.flow.steps),
        )

    # ------------------------------------------------------------------ steps
    def _step(self, step: Step) -> ScriptStep:
        variants: list[Said] = []
        if step.variant_by:
            prefix = f"{step.text}."
            names = sorted(
                key[len(prefix):]
                for key in self.texts.catalogues.get(self.lang, {})
                if key.startswith(prefix) and key[len(prefix):] != "default"
            )
            for name in names:
                when = self._condition({step.variant_by: [name]})
                variants.append(Said(self.t(step.text, name), when))
        asked_if = None
        if step.ask_if:
            asked_if = self.texts.get(
                self.lang,
                "script.asked_if",
                condition=self._condition(step.ask_if),
                next=", ".join(g.label for g in self._gotos(step.next)),
            )
        shared = isinstance(step.next, list) and len(step.next) > 1
        see_below = [Goto(self.t("script.see_below"), None, "")]
        options = [
            OptionRow(
                number=number,
                label=self.t(option.label),
                leads_to=(
                    see_below
                    if shared and option.next is None
                    else self._gotos(step.target_of(option))
                ),
                shown_if=self._condition(option.show_if) if option.show_if else None,
            )
            for number, option in enumerate(step.options, start=1)
        ]
        return ScriptStep(
            id=step.id,
            entry=step.id in self.flow.entry_points,
            says=[Said(self.t(step.text))],
            variants=variants,
            note=self.t(step.note) if step.note else None,
            orgs=[self._org(o) for o in step.orgs if o in self.directory.organisations],
            options=options,
            before=self.t(f"script.document.{step.kind}") if step.kind in DOCUMENT_KINDS else None,
            after=self.t("script.plan_ref") if step.kind in ("plan", "plan_more") else None,
            free_text=self.t(f"script.free_text.{step.free_text}") if step.free_text else None,
            asked_if=asked_if,
            then=self._gotos(step.next) if shared else [],
        )

    def _gotos(self, target: Target | None) -> list[Goto]:
        if target is None:
            return []
        if isinstance(target, str):
            return [self._goto(target, None)]
        gotos: list[Goto] = []
        for number, branch in enumerate(target):
            when: str | None
            if branch.when:
                when = self.texts.get(
                    self.lang, "script.if", condition=self._condition(branch.when)
                )
            else:
                when = self.t("script.otherwise") if number else None
            gotos.append(self._goto(branch.goto, when))
        return gotos

    def _goto(self, name: str, when: str | None) -> Goto:
        if name in SPECIAL_KEYS:
            return Goto(self.t(SPECIAL_KEYS[name]), None, name, when)
        return Goto(name, name, name, when)

    def _condition(self, condition: Condition) -> str:
        """`age: Jonger dan 13 of 13 tot en met 15; situation: Pesten`, from the option labels."""
        joiner = self.t("script.or")
        parts = []
        for slot, values in condition.items():
            step = self._slot_step.get(slot)
            name = step.id if step is not None else slot
            labels = [self._value(slot, value) for value in values]
            parts.append(f"{name}: {joiner.join(labels)}")
        return "; ".join(parts)

    def _value(self, slot: str, value: str) -> str:
        if value == "-":
            return self.t("script.not_answered")
        step = self._slot_step.get(slot)
        candidates = [step] if step is not None else []
        for candidate in [*candidates, *self.flow.steps.values()]:
            for option in candidate.options:
                if option.set.get(slot) == value:
                    return self.t(option.label)
        return value

    def _edges(self) -> list[tuple[str, str]]:
        edges: list[tuple[str, str]] = []
        for step in self.flow.steps.values():
            targets = [self._gotos(step.target_of(o)) for o in step.options]
            targets.append(self._gotos(step.next) if step.ask_if else [])
            for gotos in targets:
                for goto in gotos:
                    if goto.target and (step.id, goto.target) not in edges:
                        edges.append((step.id, goto.target))
        return edges

    # ------------------------------------------------------------------ plan
    def _advice(self, tier: str) -> list[AdviceRow]:
        rows = []
        for advice in sorted(
            (a for a in self.flow.advice if a.tier == tier), key=lambda a: a.priority
        ):
            when = self._condition(advice.when) if advice.when else self.t("script.everyone")
            if advice.unless:
                unless = self.texts.get(
                    self.lang, "script.unless", condition=self._condition(advice.unless)
                )
                when = f"{when}; {unless}"
            rows.append(
                AdviceRow(
                    text=self.t(advice.text),
                    when=when,
                    org=self._org(advice.org) if advice.org else None,
                    route=self.t("script.route") if advice.route else None,
                )
            )
        return rows

    def _org(self, org_id: str) -> str:
        return self.engine.organisation_text(self.lang, org_id)


def build_script(
    flow: Flow, texts: Texts, directory: Directory, lang: str, ttl_hours: int = 24
) -> Script:
    return ScriptBuilder(flow, texts, directory, lang, ttl_hours).build()


# ---------------------------------------------------------------------- Markdown
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _quote(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.splitlines()]


def _goto_md(goto: Goto) -> str:
    shown = f"`{goto.label}`" if goto.step else goto.label
    return f"{shown} ({goto.when})" if goto.when else shown


def _node(name: str) -> str:
    """A Mermaid/DOT node id: step ids are safe; special targets lose their '@'."""
    return "n_" + re.sub(r"[^a-z0-9_]", "", name)


def mermaid(script: Script) -> str:
    lines = ["flowchart TD"]
    specials = sorted({b for _, b in script.edges if b in SPECIAL_KEYS})
    for name in [*script.nodes, *specials]:
        shape = f'(["{name}"])' if name in SPECIAL_KEYS else f'["{name}"]'
        lines.append(f"  {_node(name)}{shape}")
    for a, b in script.edges:
        lines.append(f"  {_node(a)} --> {_node(b)}")
    if script.entry_points:
        lines.append("  classDef entry stroke-dasharray: 5 5")
        lines.append(f"  class {','.join(_node(e) for e in script.entry_points)} entry")
    return "\n".join(lines)


def render_markdown(script: Script) -> str:
    w = script.words
    out: list[str] = [f"# {w['title']}", "", w["intro"], ""]
    out += [f"## {w['safety_heading']}", ""]
    out += [f"{n}. {rule}" for n, rule in enumerate(script.safety_rules, start=1)]
    out += ["", f"**{w['crisis_contacts']}**", ""]
    out += [f"- {org}" for org in script.crisis_orgs]
    out += ["", f"## {w['overview_heading']}", "", w["overview_note"], ""]
    out += ["```mermaid", mermaid(script), "```", ""]
    out += [f"## {w['steps_heading']}", ""]
    for step in script.steps:
        out += [f"### `{step.id}`", ""]
        if step.entry:
            out += [f"*{w['entry']}*", ""]
        if step.asked_if:
            out += [f"*{step.asked_if}*", ""]
        out += [f"**{w['says']}**", ""]
        if step.before:
            out += [f"*{step.before}*", ""]
        for said in step.says:
            out += [*_quote(said.text), ""]
        for said in step.variants:
            out += [f"- *{said.when}*", ""]
            out += ["  " + line for line in _quote(said.text)]
            out += [""]
        if step.after:
            out += [f"*{step.after}*", ""]
        if step.orgs:
            out += [f"**{w['orgs']}**", ""]
            out += [f"- {org}" for org in step.orgs]
            out += [""]
        if step.note:
            out += [f"**{w['note']}:** {step.note}", ""]
        if step.free_text:
            out += [f"*{step.free_text}*", ""]
        out += [
            f"| {w['col_number']} | {w['col_option']} | {w['col_next']} |",
            "|---|---|---|",
        ]
        for row in step.options:
            label = row.label + (f" ({row.shown_if})" if row.shown_if else "")
            leads = "<br>".join(_goto_md(g) for g in row.leads_to)
            out.append(f"| {row.number} | {_cell(label)} | {_cell(leads)} |")
        out.append("")
        if step.then:
            out += [f"**{w['then']}**", ""]
            out += [f"- {_goto_md(g)}" for g in step.then]
            out.append("")
    out += [f"## {w['plan_heading']}", "", w["plan_intro"], ""]
    for heading, rows in script.tiers:
        out += [f"### {heading}", ""]
        out += [f"| {w['col_advice']} | {w['col_when']} | {w['col_org']} |", "|---|---|---|"]
        for advice in rows:
            who = advice.org or ""
            if advice.route:
                who = f"{who}<br>{advice.route}" if who else advice.route
            out.append(f"| {_cell(advice.text)} | {_cell(advice.when)} | {_cell(who)} |")
        out.append("")
    out += [f"## {w['orgs_heading']}", "", w["orgs_intro"], ""]
    out += [f"- {org}" for org in script.organisations]
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------- HTML
_CSS = """
:root { color-scheme: light; }
body { font: 11pt/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #111; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; border-bottom: 2px solid #333; }
h3 { font-size: 1.1rem; margin-bottom: .3rem; }
blockquote { margin: .4rem 0; padding: .3rem .8rem; border-left: 4px solid #3b6ea8;
  background: #f2f6fb; white-space: normal; }
.variant { margin: .2rem 0 .2rem 1.2rem; font-size: .95em; }
.variant blockquote { border-left-color: #9bb3cf; background: #f8fafd; }
.note { background: #fff6dd; border: 1px solid #e8cf7a; padding: .3rem .6rem; }
.meta { font-style: italic; color: #444; }
.safety { border: 2px solid #b00020; padding: .5rem 1rem; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; margin: .4rem 0 1rem; }
th, td { border: 1px solid #999; padding: .25rem .4rem; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
th { background: #eee; }
th.n, td.n { width: 2.2rem; }
article.step { margin-bottom: 1.2rem; }
.diagram svg { max-width: 100%; height: auto; max-height: 24cm; }
.outline { columns: 2; font-size: .9em; }
code { font-size: .95em; }
a { color: #1d4f91; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 9.5pt; max-width: none; margin: 0; padding: 0; }
  a { color: inherit; text-decoration: none; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  .page { break-after: page; page-break-after: always; }
  blockquote, .note, .safety, tr, td, th, li { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  .diagram svg { max-height: 25cm; }
}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="{{ s.lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ w.title }}</title>
<style>@@CSS@@</style>
</head>
<body>
<header>
<h1>{{ w.title }}</h1>
<p>{{ w.intro | br }}</p>
</header>
<section id="safety" class="safety">
<h2>{{ w.safety_heading }}</h2>
<ol>
{% for rule in s.safety_rules %}<li>{{ rule }}</li>
{% endfor %}</ol>
<p><strong>{{ w.crisis_contacts }}</strong></p>
<ul>
{% for org in s.crisis_orgs %}<li>{{ org }}</li>
{% endfor %}</ul>
</section>
<section id="overview" class="page">
<h2>{{ w.overview_heading }}</h2>
<p>{{ w.overview_note }}</p>
<div class="diagram">
{%- if svg %}{{ svg }}{% else %}
<ul class="outline">
{% for name, targets in outline %}<li><a href="#step-{{ name }}"><code>{{ name }}</code></a> →
{%- for b in targets %}{% if not loop.first %},{% endif %} {% if b in s.nodes -%}
<a href="#step-{{ b }}">{{ b }}</a>{% else %}{{ b }}{% endif %}{% endfor %}</li>
{% endfor %}</ul>
{% endif -%}
</div>
</section>
<section id="steps">
<h2>{{ w.steps_heading }}</h2>
{% for step in s.steps %}<article class="step" id="step-{{ step.id }}">
<h3><code>{{ step.id }}</code></h3>
{% if step.entry %}<p class="meta">{{ w.entry }}</p>
{% endif %}{% if step.asked_if %}<p class="meta">{{ step.asked_if }}</p>
{% endif %}<h4>{{ w.says }}</h4>
{% if step.before %}<p class="meta">{{ step.before }}</p>
{% endif %}{% for said in step.says %}<blockquote>{{ said.text | br }}</blockquote>
{% endfor %}{% for said in step.variants %}<div class="variant"><p class="meta">{{ said.when }}</p>
<blockquote>{{ said.text | br }}</blockquote></div>
{% endfor %}{% if step.after %}<p class="meta">{{ step.after }}</p>
{% endif %}{% if step.orgs %}<p><strong>{{ w.orgs }}</strong></p>
<ul>
{% for org in step.orgs %}<li>{{ org }}</li>
{% endfor %}</ul>
{% endif %}{% if step.note %}<p class="note"><strong>{{ w.note }}:</strong> {{ step.note }}</p>
{% endif %}{% if step.free_text %}<p class="meta">{{ step.free_text }}</p>
{% endif %}<table>
<thead><tr><th class="n">{{ w.col_number }}</th><th>{{ w.col_option }}</th>
<th>{{ w.col_next }}</th></tr></thead>
<tbody>
{% for row in step.options %}<tr><td class="n">{{ row.number }}</td><td>{{ row.label }}
{%- if row.shown_if %} <span class="meta">({{ row.shown_if }})</span>{% endif %}</td><td>
{%- for g in row.leads_to %}{% if not loop.first %}<br>{% endif %}
{%- if g.step %}<a href="#step-{{ g.step }}"><code>{{ g.label }}</code></a>
{%- else %}{{ g.label }}{% endif %}
{%- if g.when %} <span class="meta">({{ g.when }})</span>{% endif %}{% endfor %}</td></tr>
{% endfor %}</tbody>
</table>
{% if step.then %}<p><strong>{{ w.then }}</strong></p>
<ul>
{% for g in step.then %}<li>
{%- if g.step %}<a href="#step-{{ g.step }}"><code>{{ g.label }}</code></a>
{%- else %}{{ g.label }}{% endif %}
{%- if g.when %} <span class="meta">({{ g.when }})</span>{% endif %}</li>
{% endfor %}</ul>
{% endif %}</article>
{% endfor %}</section>
<section id="plan">
<h2>{{ w.plan_heading }}</h2>
<p>{{ w.plan_intro }}</p>
{% for heading, rows in s.tiers %}<h3>{{ heading }}</h3>
<table>
<thead><tr><th>{{ w.col_advice }}</th><th>{{ w.col_when }}</th><th>{{ w.col_org }}</th></tr></thead>
<tbody>
{% for a in rows %}<tr><td>{{ a.text | br }}</td><td>{{ a.when }}</td><td>{{ a.org or "" }}
{%- if a.route %}{% if a.org %}<br>{% endif %}{{ a.route }}{% endif %}</td></tr>
{% endfor %}</tbody>
</table>
{% endfor %}</section>
<section id="organisations">
<h2>{{ w.orgs_heading }}</h2>
<p>{{ w.orgs_intro }}</p>
<ul>
{% for org in s.organisations %}<li>{{ org }}</li>
{% endfor %}</ul>
</section>
</body>
</html>
"""


def _br(text: str) -> Markup:
    return Markup("<br>\n").join(escape(line) for line in text.splitlines())


def dot_source(script: Script) -> str:
    lines = [
        "digraph flow {",
        '  graph [rankdir=TB, nodesep=0.25, ranksep=0.3, size="7.5,10"];',
        '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=10];',
        "  edge [arrowsize=0.6];",
    ]
    specials = sorted({b for _, b in script.edges if b in SPECIAL_KEYS})
    for name in [*script.nodes, *specials]:
        style = ', style="rounded,dashed"' if name in script.entry_points else ""
        shape = ", shape=ellipse" if name in SPECIAL_KEYS else ""
        lines.append(f'  {_node(name)} [label="{name}"{style}{shape}];')
    lines += [f"  {_node(a)} -> {_node(b)};" for a, b in script.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


_UNSAFE_SVG = re.compile(r"<script|href|\bsrc\s*=|url\(|<foreignObject|@import", re.IGNORECASE)


def graphviz_svg(script: Script, dot: str | None) -> str | None:
    """The overview as inline SVG, or None when Graphviz is absent, fails, or its output
    refers to anything outside the file (the HTML must make no external requests)."""
    if not dot:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, our own DOT source on stdin
            [dot, "-Tsvg"],
            input=dot_source(script),
            capture_output=True,
            text=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    start = done.stdout.find("<svg")
    if done.returncode != 0 or start < 0:
        return None
    svg = done.stdout[start:].strip()
    body = re.sub(r'xmlns(:xlink)?="[^"]*"', "", svg)
    if _UNSAFE_SVG.search(body) or not svg.endswith("</svg>"):
        return None
    return svg


def outline(script: Script) -> list[tuple[str, list[str]]]:
    """The overview without Graphviz: every step with the steps its answers lead to."""
    targets: dict[str, list[str]] = {name: [] for name in script.nodes}
    for a, b in script.edges:
        targets[a].append(b)
    return list(targets.items())


def render_html(script: Script, dot: str | None = None) -> str:
    """One self-contained page: inline CSS, inline SVG or outline, no external requests."""
    env = Environment(autoescape=True, keep_trailing_newline=True)
    env.filters["br"] = _br
    found = graphviz_svg(script, dot)
    # Our own Graphviz output, checked by graphviz_svg for scripts and outside references.
    svg = Markup(found) if found is not None else None  # noqa: S704
    template = env.from_string(_TEMPLATE.replace("@@CSS@@", _CSS))
    return template.render(s=script, w=script.words, svg=svg, outline=outline(script))


def export(
    flow: Flow,
    texts: Texts,
    directory: Directory,
    fmt: Format,
    lang: str,
    ttl_hours: int = 24,
    dot: str | None = None,
) -> str:
    script = build_script(flow, texts, directory, lang, ttl_hours)
    return render_html(script, dot) if fmt == "html" else render_markdown(script)


def find_dot() -> str | None:
    """Graphviz is optional: without it the HTML overview is a plain outline."""
    return shutil.which("dot")


def cmd_script(args: Any, flow: Flow, texts: Texts, directory: Directory, ttl_hours: int) -> int:
    """`hulpwijzer script`: print the script, or write it to --out."""
    text = export(flow, texts, directory, args.format, args.lang, ttl_hours, find_dot())
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"hulpwijzer script: can't write {str(out)!r} ({error.strerror}).", file=sys.stderr)
        return 2
    print(f"Wrote {out}.", file=sys.stderr)
    return 0
