"""`hulpwijzer` subcommands: one library, one CLI over the same functions."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import Settings, load_settings
from bot.errors import ConfigError, DataError

log = logging.getLogger("hulpwijzer")


def _settings(args: argparse.Namespace, require_secret: bool = False) -> Settings:
    db = getattr(args, "db", None)
    overrides = {"HULPWIJZER_DB": str(db)} if db else None
    return load_settings(require_secret=require_secret, overrides=overrides)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def cmd_chat(args: argparse.Namespace) -> int:
    from bot.app import build_assistant
    from bot.channels import console

    settings = _settings(args)
    _configure_logging(settings.log_level)
    if settings.secret_generated:
        print(
            f"(A new secret key was made in {settings.var_dir / 'secret.key'}; "
            "it encrypts what is stored. Keep it private.)",
            file=sys.stderr,
        )
    assistant = build_assistant(settings, with_nlu=not args.no_nlu)
    for stream in (sys.stdout, sys.stdin):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(encoding="utf-8", errors="replace")
    return console.run(assistant, sys.stdin, sys.stdout, lang=args.lang, mode=args.mode)


def cmd_check(args: argparse.Namespace) -> int:
    from bot.checks import check_all

    root = Path(args.root) if args.root else None
    problems = check_all(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found.", file=sys.stderr)
        return 1
    print("All data files are valid.")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Only the store: retention must work even when a data file is broken, and building
    the Assistant would purge first and report 0 (issue 7)."""
    from datetime import UTC, datetime

    from bot.store import SQLiteSessionStore, session_cipher

    settings = _settings(args)
    store = SQLiteSessionStore(settings.db_path, session_cipher(settings.secret))
    removed = store.purge(datetime.now(UTC) - settings.session_ttl)
    store.close()
    print(f"Purged {removed} idle session(s) older than {settings.session_ttl}.")
    return 0


def cmd_nlu(args: argparse.Namespace) -> int:
    from bot import nlu

    settings = _settings(args)
    if args.nlu_command == "train":
        return nlu.cmd_nlu_train(settings.nlu_dir, settings.var_dir)
    if args.nlu_command == "eval":
        path = Path(args.path) if args.path else None
        return nlu.cmd_nlu_eval(settings.nlu_dir, settings.var_dir, path)
    # classify follows NLU_BACKEND (embedded, or a Rasa server), as the conversation does.
    chosen = None
    if settings.nlu_backend == "rasa":
        chosen = nlu.make_classifier(
            backend="rasa",
            rasa_url=settings.rasa_url,
            nlu_dir=settings.nlu_dir,
            cache_dir=settings.var_dir,
        )
    return nlu.cmd_nlu_classify(
        settings.nlu_dir, settings.var_dir, sys.stdin, sys.stdout, classifier=chosen
    )


def cmd_letter(args: argparse.Namespace) -> int:
    from bot.config import PROJECT_ROOT
    from bot.letters import cmd_letter as print_letter

    return print_letter(args, PROJECT_ROOT / "data", sys.stdout, sys.stderr)


def cmd_telegram(args: argparse.Namespace) -> int:
    from bot.channels import telegram

    settings = _settings(args, require_secret=True)
    _configure_logging(settings.log_level)
    return telegram.run(settings, webhook=args.webhook, with_nlu=not args.no_nlu)


def cmd_web(args: argparse.Namespace) -> int:
    from bot.channels import web

    settings = _settings(args, require_secret=True)
    _configure_logging(settings.log_level)
    return web.run(settings, host=args.host, port=args.port, with_nlu=not args.no_nlu)


def cmd_script(args: argparse.Namespace) -> int:
    from bot.app import load_knowledge
    from bot.script import cmd_script as export_script

    settings = _settings(args)
    knowledge = load_knowledge(settings)
    hours = max(1, round(settings.session_ttl.total_seconds() / 3600))
    return export_script(args, knowledge.flow, knowledge.texts, knowledge.directory, hours)


def cmd_qr(args: argparse.Namespace) -> int:
    from bot.lesson import cmd_qr as write_qr

    return write_qr(args, sys.stdout, sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hulpwijzer",
        description="Hulpwijzer: triage and a personal plan after online abuse.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="talk to Hulpwijzer in the terminal")
    chat.add_argument("--lang", choices=["nl", "en"], default=None)
    chat.add_argument("--mode", choices=["user", "volunteer", "lesson"], default="user")
    chat.add_argument("--db", type=Path, default=None, help="SQLite file (default var/)")
    chat.add_argument("--no-nlu", action="store_true", help="buttons only, no text classifier")
    chat.set_defaults(func=cmd_chat)

    check = sub.add_parser("check", help="validate every data file and the flow graph")
    check.add_argument("--root", default=None, help="project folder to check (default: this)")
    check.set_defaults(func=cmd_check)

    purge = sub.add_parser("purge", help="delete sessions idle longer than the TTL")
    purge.add_argument("--db", type=Path, default=None)
    purge.set_defaults(func=cmd_purge)

    nlu = sub.add_parser("nlu", help="train, evaluate or try the text classifier")
    nlu_sub = nlu.add_subparsers(dest="nlu_command", required=True)
    nlu_sub.add_parser("train", help="train (or load from cache) the embedded classifier")
    evaluate = nlu_sub.add_parser("eval", help="evaluate on nlu/tests or a given file/folder")
    evaluate.add_argument("path", nargs="?", default=None)
    nlu_sub.add_parser("classify", help="one message per line in, one JSON object per line out")
    nlu.set_defaults(func=cmd_nlu)

    from bot.letters import add_letter_arguments

    letter = sub.add_parser("letter", help="print a draft removal request, sheet or checklist")
    add_letter_arguments(letter)
    letter.set_defaults(func=cmd_letter)

    tg = sub.add_parser("telegram", help="run the Telegram bot (long polling, or --webhook)")
    tg.add_argument(
        "--webhook", action="store_true", help="serve a webhook (TELEGRAM_WEBHOOK_* settings)"
    )
    tg.add_argument("--db", type=Path, default=None, help="SQLite file (default var/)")
    tg.add_argument("--no-nlu", action="store_true", help="buttons only, no text classifier")
    tg.set_defaults(func=cmd_telegram)

    # -- more subcommands register below (telegram, web, letter, script, qr) --
    script = sub.add_parser("script", help="export the flow as a printable volunteer script")
    script.add_argument("--format", choices=["html", "md"], default="md")
    script.add_argument("--lang", choices=["nl", "en"], default="nl")
    script.add_argument("--out", type=Path, default=None, help="file to write (default: print)")
    script.set_defaults(func=cmd_script)

    qr = sub.add_parser("qr", help="write a QR code (PNG) for a Telegram deep link")
    qr.add_argument("--payload", default="les", help="start parameter (default: les)")
    qr.add_argument("--bot-username", required=True, help="the bot's username, without @")
    qr.add_argument("--out", required=True, help="PNG file to write")
    qr.set_defaults(func=cmd_qr)
    web = sub.add_parser("web", help="serve the web chat (anonymous, with a quick exit)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on")
    web.add_argument("--port", type=int, default=8080)
    web.add_argument("--db", type=Path, default=None, help="SQLite file (default var/)")
    web.add_argument("--no-nlu", action="store_true", help="buttons only, no text classifier")
    web.set_defaults(func=cmd_web)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, DataError) as error:
        problems = error.problems if isinstance(error, DataError) else [str(error)]
        for problem in problems:
            print(f"hulpwijzer: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
