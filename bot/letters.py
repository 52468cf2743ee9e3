"""Drafting removal requests, the aangifte preparation sheet and the evidence checklist.

The texts live in `responses/letters/<lang>/*.txt.j2` (Jinja2) and `responses/letters/<lang>.yml`;
this module only chooses the template, the article(s) and the route, and checks what the person
typed. Typed values reach a template only as variables of a sandboxed environment, after
`clean_text` or a validator, so nothing typed can ever be compiled or change the letter's shape.

Which article fits which situation (`article_for`):
- image_abuse: 139h Sr for an adult, 252 Sr (sexual images of a minor) for someone under 18;
- sextortion: 318 (afdreiging) and 317 (afpersing, when violence is threatened), plus 252 for
  a minor because the images are then child sexual abuse material;
- doxing 285d, stalking 285b, threat 285;
- bullying: 261 (smaad) and 262 (laster), because bullying that can be reported as illegal
  content is usually spreading things that harm someone's good name; plain insults have no
  article in facts.md (belediging is not there), so the person may need to edit the letter;
- impersonation: none (facts.md has no impersonation article); the DSA notice then rests on
  unlawful processing of personal data (GDPR art. 17) and the platform's own terms;
- other: none, and only the aangifte sheet and the evidence checklist apply.

For child sexual abuse material (a minor and an image situation) the DSA notice is anonymous:
name and e-mail are never asked, kept or printed, and the GDPR request (which needs an
identity) is not offered.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Literal, cast
from urllib.parse import urlsplit

import yaml
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from bot.directory import LANGUAGES, Directory, Law, Platform, as_link, load_directory
from bot.directory import SITUATIONS as DIRECTORY_SITUATIONS
from bot.errors import DataError

LetterKind = Literal["dsa", "avg", "delist", "aangifte", "evidence"]
KINDS: tuple[LetterKind, ...] = ("dsa", "avg", "delist", "aangifte", "evidence")
# The triage's situations plus "other" (something else: only the sheet and checklist fit).
SITUATIONS = (*DIRECTORY_SITUATIONS, "other")
# Situations where the content is (or threatens to be) sexual images of the person.
IMAGE_SITUATIONS = frozenset({"image_abuse", "sextortion"})

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "responses" / "letters"

MAX_URLS = 10
MAX_USERNAMES = 10
MAX_URL_LEN = 2000
MAX_EMAIL_LEN = 254
MAX_NAME_LEN = 100
MAX_USERNAME_LEN = 200
MAX_WHEN_LEN = 100
MAX_DETAILS_LEN = 1000

# Which letters make sense for which situation (before the child-abuse rule below).
_KINDS_BY_SITUATION: dict[str, tuple[LetterKind, ...]] = {
    "image_abuse": ("dsa", "avg", "delist", "aangifte", "evidence"),
    "sextortion": ("dsa", "avg", "delist", "aangifte", "evidence"),
    "bullying": ("dsa", "avg", "aangifte", "evidence"),
    "stalking": ("dsa", "avg", "aangifte", "evidence"),
    "doxing": ("dsa", "avg", "aangifte", "evidence"),
    "threat": ("dsa", "aangifte", "evidence"),
    "impersonation": ("dsa", "avg", "aangifte", "evidence"),
    "other": ("aangifte", "evidence"),
}

_ARTICLES: dict[str, tuple[str, ...]] = {
    "image_abuse": ("139h",),
    "sextortion": ("318", "317"),
    "bullying": ("261", "262"),
    "stalking": ("285b",),
    "doxing": ("285d",),
    "threat": ("285",),
    "impersonation": (),
    "other": (),
}

# Characters that move or hide text without being visible: bidi embeddings, overrides and
# isolates, marks, and the byte-order mark. They can make a letter read differently than typed.
_INVISIBLE = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
)
_EMAIL_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\\\]]{1,64}$")
_FILE_STEM = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_TEMPLATE_SUFFIX = ".txt.j2"
_CATALOGUE_KEYS = ("titles", "filenames", "placeholders", "labels", "errors")


class LetterInputError(ValueError):
    """Something the person typed can't go into a letter.

    `key` names the problem (a key under `errors:` in responses/letters/<lang>.yml) so a
    channel can show the translated sentence; the message never repeats the input.
    """

    def __init__(self, key: str, field: str | None = None) -> None:
        self.key = key
        self.field = field
        where = f" in {field}" if field else ""
        super().__init__(f"letter input rejected: {key}{where}")


# ---------------------------------------------------------------------------------- checks


def _is_hidden_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in _INVISIBLE


def clean_text(value: str, max_len: int) -> str:
    """One line of typed text made safe to print: NFC, no control or bidi characters.

    Line breaks and tabs become spaces (a name can't add lines to a letter), runs of
    spaces shrink to one. Raises LetterInputError("too_long") when the result is longer
    than `max_len`; absurdly long input is refused before any work is done.
    """
    if len(value) > 4 * max_len + 64:
        raise LetterInputError("too_long")
    text = unicodedata.normalize("NFC", value)
    kept = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif not _is_hidden_control(char):
            kept.append(char)
    cleaned = " ".join("".join(kept).split())
    if len(cleaned) > max_len:
        raise LetterInputError("too_long")
    return cleaned


def _valid_host(host: str, allow_ip: bool = True) -> bool:
    """A host name with at least one dot and sane labels, or (if allowed) an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return allow_ip
    labels = host.removesuffix(".").split(".")
    if len(labels) < 2:
        return False
    for label in labels:
        if not 1 <= len(label) <= 63 or label.startswith("-") or label.endswith("-"):
            return False
        if not label.replace("-", "").isalnum():
            return False
    tld = labels[-1]
    return tld.isalpha() or tld.startswith("xn--")


def validate_url(value: str) -> str:
    """An http(s) web address with a real host, as the person pasted it (outer spaces trimmed).

    Refuses other schemes (javascript:, data:, file:), user names or passwords in the
    address, spaces, control characters and addresses over 2000 characters.
    """
    if len(value) > 2 * MAX_URL_LEN:
        raise LetterInputError("too_long", "url")
    text = value.strip()
    if len(text) > MAX_URL_LEN:
        raise LetterInputError("too_long", "url")
    if any(_is_hidden_control(char) for char in text):
        raise LetterInputError("control_chars", "url")
    if not text or any(char.isspace() for char in text):
        raise LetterInputError("url_invalid", "url")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise LetterInputError("url_invalid", "url") from exc
    host = parts.hostname
    if (
        parts.scheme.lower() not in ("http", "https")
        or not host
        or "@" in parts.netloc
        or not _valid_host(host)
    ):
        raise LetterInputError("url_invalid", "url")
    return unicodedata.normalize("NFC", text)


def validate_email(value: str) -> str:
    """A pragmatic e-mail check: one @, a plausible local part, a domain with a dot."""
    if len(value) > 2 * MAX_EMAIL_LEN:
        raise LetterInputError("too_long", "email")
    text = value.strip()
    if len(text) > MAX_EMAIL_LEN:
        raise LetterInputError("too_long", "email")
    if any(_is_hidden_control(char) for char in text):
        raise LetterInputError("control_chars", "email")
    local, at, domain = text.rpartition("@")
    if (
        not at
        or not _EMAIL_LOCAL.match(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or not _valid_host(domain, allow_ip=False)
        or domain.endswith(".")
    ):
        raise LetterInputError("email_invalid", "email")
    return unicodedata.normalize("NFC", text)


# ------------------------------------------------------------------------------ the request


@dataclass(frozen=True)
class LetterRequest:
    """What a letter is drafted from. Personal fields live only as long as one draft."""

    kind: LetterKind
    situation: str
    lang: str
    platform: str | None = None
    urls: tuple[str, ...] = ()
    name: str | None = None
    email: str | None = None
    minor: bool = False
    # Optional, for the aangifte sheet and the letters: accounts involved, when, what happened.
    usernames: tuple[str, ...] = ()
    when: str | None = None
    details: str | None = None


@dataclass(frozen=True)
class Letter:
    """A finished draft: the text to send or keep, where to send it and what happens next."""

    kind: LetterKind
    lang: str
    title: str
    body: str
    filename: str
    send_to: str
    next_steps: str


def is_csam_case(situation: str, minor: bool) -> bool:
    """Sexual images of someone under 18: the notice is anonymous and nothing is saved."""
    return minor and situation in IMAGE_SITUATIONS


def kinds_for(situation: str, minor: bool) -> tuple[LetterKind, ...]:
    """The letters that fit a situation; the engine offers only these."""
    if situation not in _KINDS_BY_SITUATION:
        raise LetterInputError("unknown_situation")
    kinds = _KINDS_BY_SITUATION[situation]
    if is_csam_case(situation, minor):
        # A GDPR request needs the person's identity; for child sexual abuse material the
        # route is the anonymous DSA notice (and Meldpunt Kinderporno), never a named letter.
        kinds = tuple(kind for kind in kinds if kind != "avg")
    return kinds


def asks_identity(kind: str, situation: str, minor: bool) -> bool:
    """Whether the letter has name and e-mail fields, so whether the chat may ask for them."""
    return kind in ("dsa", "avg") and not is_csam_case(situation, minor)


def article_for(situation: str, minor: bool) -> list[str]:
    """Law ids (keys of data/laws.yml) the letter cites, strongest fit first."""
    if situation not in _ARTICLES:
        raise LetterInputError("unknown_situation")
    if situation == "image_abuse":
        return ["252"] if minor else ["139h"]
    articles = list(_ARTICLES[situation])
    if situation == "sextortion" and minor:
        articles.append("252")
    return articles


def _clean_optional(value: str | None, max_len: int) -> str | None:
    if value is None:
        return None
    return clean_text(value, max_len) or None


def validate_request(req: LetterRequest, directory: Directory) -> LetterRequest:
    """A cleaned copy of the request, or LetterInputError naming the first problem.

    Fields the letter does not use (name and e-mail for an anonymous notice or a sheet)
    are dropped, so they can't leak into it. Idempotent.
    """
    if req.kind not in KINDS:
        raise LetterInputError("unknown_kind", "kind")
    if req.lang not in LANGUAGES:
        raise LetterInputError("unknown_language", "lang")
    if req.situation not in SITUATIONS:
        raise LetterInputError("unknown_situation", "situation")
    if req.kind not in kinds_for(req.situation, req.minor):
        raise LetterInputError("kind_not_applicable", "kind")

    platform = req.platform
    if platform is not None:
        platform = clean_text(platform, 40).lower()
        if platform not in directory.platforms:
            raise LetterInputError("unknown_platform", "platform")
    elif req.kind in ("dsa", "avg"):
        platform = "other"

    if len(req.urls) > MAX_URLS:
        raise LetterInputError("too_many_urls", "urls")
    urls = tuple(dict.fromkeys(validate_url(url) for url in req.urls))

    if len(req.usernames) > MAX_USERNAMES:
        raise LetterInputError("too_many_usernames", "usernames")
    usernames = tuple(
        dict.fromkeys(
            cleaned for item in req.usernames if (cleaned := clean_text(item, MAX_USERNAME_LEN))
        )
    )

    name: str | None = None
    email: str | None = None
    if asks_identity(req.kind, req.situation, req.minor):
        name = _clean_optional(req.name, MAX_NAME_LEN)
        email = validate_email(req.email) if req.email and req.email.strip() else None

    return replace(
        req,
        platform=platform,
        urls=urls,
        usernames=usernames,
        name=name,
        email=email,
        minor=bool(req.minor),
        when=_clean_optional(req.when, MAX_WHEN_LEN),
        details=_clean_optional(req.details, MAX_DETAILS_LEN),
    )


# ------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class _PlatformView:
    """What a template may know about a platform: checked fields only, in one language."""

    id: str
    name: str
    how: str | None
    url: str | None
    dsa_contact: str | None
    notes: tuple[str, ...]
    stopncii: bool | None
    take_it_down: bool | None


@dataclass(frozen=True)
class _LawView:
    id: str
    article: str
    title: str
    plain: str
    complaint_offence: bool


def _route_situation(platform: Platform, situation: str) -> str | None:
    """The route to use: the situation's own, sextortion falls back to intimate images, and
    'another website' has one route for everything."""
    if situation in platform.routes:
        return situation
    if (situation == "sextortion" or platform.id == "other") and "image_abuse" in platform.routes:
        return "image_abuse"
    return None


def _platform_view(platform: Platform, situation: str, lang: str) -> _PlatformView:
    route_key = _route_situation(platform, situation) if platform.shows("routes") else None
    route = platform.routes[route_key] if route_key else None
    return _PlatformView(
        id=platform.id,
        name=platform.name.get(lang),
        how=route.how.get(lang) if route else None,
        url=as_link(route.url) if route and route.url else None,
        dsa_contact=platform.dsa_contact if platform.shows("dsa_contact") else None,
        notes=platform.notes.get(lang) if platform.shows("notes") else (),
        stopncii=platform.stopncii if platform.shows("stopncii") else None,
        take_it_down=platform.take_it_down if platform.shows("take_it_down") else None,
    )


def _law_view(law: Law, lang: str) -> _LawView:
    return _LawView(
        id=law.id,
        article=law.article,
        title=law.title.get(lang),
        plain=law.plain.get(lang),
        complaint_offence=law.complaint_offence,
    )


def _refuse_none(value: Any) -> Any:
    """A template printing None is a bug (e.g. a name in an anonymous notice): fail loudly."""
    if value is None:
        raise TemplateError("a template printed a value that is not there")
    return value


@lru_cache(maxsize=8)
def _environment(folder: str) -> SandboxedEnvironment:
    """One sandboxed, plain-text environment per language folder.

    Autoescape is off because the output is plain text, not HTML; safety comes from never
    compiling typed text and from cleaning every typed value before it gets here.
    """
    return SandboxedEnvironment(
        loader=FileSystemLoader(folder),
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        finalize=_refuse_none,
    )


@lru_cache(maxsize=8)
def _catalogue(path: str) -> dict[str, dict[str, str]]:
    """The short texts of one language; a broken file is an operator error."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError([f"{path}: can't read it ({exc.__class__.__name__})"]) from exc
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise DataError([f"{path}: must be a mapping with {', '.join(_CATALOGUE_KEYS)}"])
    for key in _CATALOGUE_KEYS:
        section = raw.get(key)
        if not isinstance(section, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in section.items()
        ):
            problems.append(f"{path}: {key} must be a mapping of names to texts")
    if problems:
        raise DataError(problems)
    return {key: dict(raw[key]) for key in _CATALOGUE_KEYS}


def _texts(templates_dir: Path, lang: str) -> dict[str, dict[str, str]]:
    return _catalogue(str(templates_dir / f"{lang}.yml"))


def _tidy(text: str) -> str:
    """No trailing spaces, at most one blank line in a row, no blank edges."""
    lines = [line.rstrip() for line in text.splitlines()]
    tidy = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return tidy.strip("\n")


def _lookup(section: dict[str, str], key: str, where: str) -> str:
    try:
        return section[key]
    except KeyError:
        raise DataError([f"{where}: text {key!r} is missing"]) from None


def draft(req: LetterRequest, directory: Directory, templates_dir: Path | None = None) -> Letter:
    """Validate the request and render the letter, where to send it and what comes next.

    Raises LetterInputError for anything the person typed, DataError when a data or
    template file is broken (an operator error).
    """
    req = validate_request(req, directory)
    folder = templates_dir or DEFAULT_TEMPLATES_DIR
    texts = _texts(folder, req.lang)
    where = str(folder / f"{req.lang}.yml")
    placeholders = texts["placeholders"]
    csam = is_csam_case(req.situation, req.minor)

    laws = []
    for law_id in article_for(req.situation, req.minor):
        if law_id not in directory.laws:
            raise DataError([f"data/laws.yml: article {law_id} is missing; letters cite it"])
        laws.append(_law_view(directory.laws[law_id], req.lang))

    platform = (
        _platform_view(directory.platforms[req.platform], req.situation, req.lang)
        if req.platform
        else None
    )
    google = directory.platforms.get("google")
    google_route = google.routes.get("image_abuse") if google and google.shows("routes") else None
    identity = asks_identity(req.kind, req.situation, req.minor)
    context: dict[str, Any] = {
        "kind": req.kind,
        "lang": req.lang,
        "situation": req.situation,
        "minor": req.minor,
        "csam": csam,
        "platform": platform,
        "laws": laws,
        "urls": list(req.urls),
        "usernames": list(req.usernames),
        "when": req.when,
        "details": req.details,
        # None for an anonymous notice: printing it would fail (see _refuse_none).
        "name": (req.name or _lookup(placeholders, "name", where)) if identity else None,
        "email": (req.email or _lookup(placeholders, "email", where)) if identity else None,
        "ph": placeholders,
        "google_url": as_link(google_route.url) if google_route and google_route.url else None,
    }

    env = _environment(str(folder / req.lang))
    try:
        body = env.get_template(f"{req.kind}{_TEMPLATE_SUFFIX}").render(context)
        send_to = env.get_template(f"send_to{_TEMPLATE_SUFFIX}").render(context)
        next_steps = env.get_template(f"next_steps{_TEMPLATE_SUFFIX}").render(context)
        title = env.from_string(_lookup(texts["titles"], req.kind, where)).render(
            platform=platform.name if platform else "", platform_id=req.platform or ""
        )
    except TemplateError as exc:
        raise DataError(
            [f"{folder / req.lang}: template for {req.kind} is broken ({exc.__class__.__name__})"]
        ) from exc

    stem = _lookup(texts["filenames"], req.kind, where)
    if not _FILE_STEM.match(stem):
        raise DataError([f"{where}: filenames.{req.kind} may only use a-z, 0-9 and '-'"])
    if req.platform and req.kind != "delist":
        stem = f"{stem}-{req.platform.replace('_', '-')}"

    return Letter(
        kind=req.kind,
        lang=req.lang,
        title=_tidy(title),
        body=_tidy(body) + "\n",
        filename=f"{stem}.txt",
        send_to=_tidy(send_to),
        next_steps=_tidy(next_steps),
    )


def describe_error(error: LetterInputError, lang: str, templates_dir: Path | None = None) -> str:
    """The one sentence a person sees for an input problem, in their language."""
    folder = templates_dir or DEFAULT_TEMPLATES_DIR
    lang = lang if lang in LANGUAGES else "nl"
    return _lookup(_texts(folder, lang)["errors"], error.key, str(folder / f"{lang}.yml"))


def check_templates(templates_dir: Path | None = None) -> list[str]:
    """Every problem with the letter texts, for `hulpwijzer check`: missing or extra
    templates in a language, templates that don't parse, keys missing in a language."""
    folder = templates_dir or DEFAULT_TEMPLATES_DIR
    problems: list[str] = []
    files: dict[str, set[str]] = {}
    keys: dict[str, set[str]] = {}
    for lang in LANGUAGES:
        lang_dir = folder / lang
        files[lang] = {p.name for p in lang_dir.glob(f"*{_TEMPLATE_SUFFIX}")}
        env = _environment(str(lang_dir))
        for name in sorted(files[lang]):
            try:
                env.parse((lang_dir / name).read_text(encoding="utf-8"))
            except TemplateError as exc:
                problems.append(f"{lang_dir / name}: does not parse ({exc})")
        for needed in (*KINDS, "send_to", "next_steps"):
            if f"{needed}{_TEMPLATE_SUFFIX}" not in files[lang]:
                problems.append(f"{lang_dir}: template {needed}{_TEMPLATE_SUFFIX} is missing")
        try:
            texts = _texts(folder, lang)
        except DataError as exc:
            problems.extend(exc.problems)
            continue
        keys[lang] = {f"{section}.{key}" for section, entries in texts.items() for key in entries}
    for lang in LANGUAGES:
        for other in LANGUAGES:
            if lang == other:
                continue
            for name in sorted(files[other] - files[lang]):
                problems.append(f"{folder / lang}: template {name} exists only in {other}")
            if lang in keys and other in keys:
                for key in sorted(keys[other] - keys[lang]):
                    problems.append(f"{folder / f'{lang}.yml'}: text {key} is missing")
    return problems


# -------------------------------------------------------------------------------------- CLI


def add_letter_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `hulpwijzer letter`. Nothing is required or restricted by argparse, so every
    wrong value gets the same one-sentence error as in the chat (exit status 2)."""
    parser.add_argument("--kind", default="", metavar="|".join(KINDS), help="which letter")
    parser.add_argument("--situation", default="", metavar="|".join(SITUATIONS))
    parser.add_argument("--platform", default=None, metavar="ID", help="a platform id")
    parser.add_argument("--lang", default="nl", metavar="|".join(LANGUAGES))
    parser.add_argument(
        "--url",
        dest="urls",
        action="append",
        default=[],
        metavar="URL",
        help=f"web address of the content (repeat, up to {MAX_URLS})",
    )
    parser.add_argument("--name", default=None, help="notifier's name (else a placeholder)")
    parser.add_argument("--email", default=None, help="notifier's e-mail (else a placeholder)")
    parser.add_argument("--minor", action="store_true", help="the person is under 18")
    parser.add_argument(
        "--username",
        dest="usernames",
        action="append",
        default=[],
        metavar="NAME",
        help="account or profile link involved (repeat)",
    )
    parser.add_argument("--when", default=None, help="date, time or period")
    parser.add_argument("--details", default=None, help="what happened, in a few words")


def format_letter(letter: Letter, templates_dir: Path | None = None) -> str:
    """The whole draft as a volunteer reads it in a terminal: title, letter, route, next."""
    folder = templates_dir or DEFAULT_TEMPLATES_DIR
    labels = _texts(folder, letter.lang)["labels"]
    where = str(folder / f"{letter.lang}.yml")
    return "\n".join(
        [
            letter.title,
            "=" * len(letter.title),
            "",
            letter.body.rstrip("\n"),
            "",
            _lookup(labels, "send_to", where),
            letter.send_to,
            "",
            _lookup(labels, "next_steps", where),
            letter.next_steps,
            "",
        ]
    )


def cmd_letter(
    args: argparse.Namespace,
    data_dir: Path,
    stdout: IO[str],
    stderr: IO[str],
    templates_dir: Path | None = None,
) -> int:
    """`hulpwijzer letter`: print a draft; a wrong value prints one sentence, exit status 2.

    Templates default to `responses/letters` next to `data_dir`. Nothing typed is logged.
    """
    folder = templates_dir or data_dir.parent / "responses" / "letters"
    lang = args.lang if args.lang in LANGUAGES else "en"
    request = LetterRequest(
        kind=cast(LetterKind, args.kind or ""),
        situation=args.situation or "",
        lang=args.lang or "",
        platform=args.platform,
        urls=tuple(args.urls or ()),
        name=args.name,
        email=args.email,
        minor=bool(args.minor),
        usernames=tuple(args.usernames or ()),
        when=args.when,
        details=args.details,
    )
    try:
        letter = draft(request, load_directory(data_dir), folder)
    except LetterInputError as error:
        print(describe_error(error, lang, folder), file=stderr)
        return 2
    stdout.write(format_letter(letter, folder))
    return 0
