"""Load on the Telegram channel: N simulated people through whole conversations.

    .venv/bin/python bench/telegram_load.py [--users 200] [--engine auto|thread|inline]
                                            [--max-rate 0] [--chaos 0.0] [--nlu]

The fake Bot API server (tests/fake_telegram.py) runs in this process and plays the
people; the bot runs in its own process, built by the same `build_application` that
`hulpwijzer telegram` uses, long polling over real HTTP on 127.0.0.1. Each person
follows one of the button-only conversations in tests/conversations/ and ends with /wis.

Before the run, every script is replayed against a local Assistant to learn exactly
which messages each turn must produce; the run then counts per person what arrived:
fewer is "lost", more is "duplicated". A person acts again only when the whole answer to
the previous turn arrived, like someone waiting for the next question.

--max-rate 0 switches the bot's own 30 messages/s throttle off, to measure capacity:
with it on, 30 messages/s (Telegram's limit) is the ceiling by design.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_telegram import TOKEN, Chaos, Chat, FakeTelegram  # noqa: E402
from scripted import Turn, dry_run, load_scripts  # noqa: E402

from bot.app import build_assistant  # noqa: E402
from bot.config import load_settings  # noqa: E402

SECRET = "bench-secret-" + "b" * 40


# --------------------------------------------------------------------------- the bot process
def serve_bot(engine: str, max_rate: float, nlu: bool) -> None:
    """Child process: the bot exactly as `hulpwijzer telegram` builds it, plus knobs."""
    from bot.channels.telegram import ALLOWED_UPDATES, build_application, protect_logs

    settings = load_settings(require_secret=True)
    protect_logs()
    assistant = build_assistant(settings, with_nlu=nlu)
    in_thread = {"thread": True, "inline": False}.get(engine)  # auto: as in production
    application = build_application(
        settings, assistant, max_rate=max_rate, engine_in_thread=in_thread
    )
    profile_to = os.environ.get("BENCH_PROFILE")
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    application.run_polling(allowed_updates=ALLOWED_UPDATES, poll_interval=0.0)
    if profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- scripts
def expected_messages(scripts: list[list[Turn]], tmp: Path) -> list[list[list[str]]]:
    """Replay each script on a local Assistant: the texts each turn must produce."""
    return [run.turns for run in dry_run(scripts, tmp, SECRET)]


# --------------------------------------------------------------------------- the people
@dataclass
class Person:
    user_id: int
    script: list[tuple[str, str]]
    expected: list[list[str]]
    turn: int = -1
    got: list[list[str]] = field(default_factory=list)
    update_id: int = 0
    latencies: list[float] = field(default_factory=list)
    done: bool = False

    @property
    def updates(self) -> int:
        return len(self.script)


class Crowd:
    """Plays every person: acts, then waits until the whole answer has arrived."""

    def __init__(self, tg: FakeTelegram, people: list[Person], think: float = 0.0) -> None:
        self.tg = tg
        self.think = think
        self.rng = random.Random(3)
        self.people = {p.user_id: p for p in people}
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self.remaining = len(people)
        self.stray = 0
        tg.on_bot_message.append(self.on_bot_message)

    def start(self) -> None:
        for person in self.people.values():
            self.act(person)

    def act(self, person: Person) -> None:
        person.turn += 1
        if person.turn == person.updates:
            person.done = True
            self.remaining -= 1
            if self.remaining == 0:
                self.finished.set()
            return
        person.got.append([])
        kind, value = person.script[person.turn]
        if kind == "send":
            person.update_id = self.tg.send_text(person.user_id, value)
        elif kind == "media":
            person.update_id = self.tg.send_media(person.user_id, value)
        elif kind == "press_raw":
            person.update_id = self.tg.press(person.user_id, value)
        else:
            person.update_id = self.tg.press_option(person.user_id, value)
        if not person.expected[person.turn]:
            self.loop.call_soon(self.act, person)  # a turn that must stay silent

    def on_bot_message(self, chat: Chat, message: dict[str, Any]) -> None:
        person = self.people.get(chat.id)
        if person is None or person.done or person.turn < 0:
            self.stray += 1
            return
        person.got[person.turn].append(str(message.get("text") or ""))
        if len(person.got[person.turn]) == len(person.expected[person.turn]):
            served = self.tg.served_at.get(person.update_id, time.monotonic())
            person.latencies.append(time.monotonic() - served)
            if self.think:
                pause = self.rng.uniform(0.5, 1.5) * self.think
                self.loop.call_later(pause, self.act, person)
            else:
                self.loop.call_soon(self.act, person)


# --------------------------------------------------------------------------- the run
async def run(args: argparse.Namespace) -> dict[str, Any]:
    scripts = [[*script, ("send", "/wis")] for script in load_scripts()]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        expected = expected_messages(scripts, tmp)
        async with FakeTelegram(long_poll_cap=1.0) as tg:
            env = {
                **os.environ,
                "HULPWIJZER_SECRET": SECRET,
                "HULPWIJZER_DB": str(tmp / "bot.sqlite3"),
                "HULPWIJZER_VAR": str(tmp / "var"),
                "HULPWIJZER_LOG_LEVEL": "WARNING",
                "NLU_BACKEND": "embedded" if args.nlu else "none",
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "TELEGRAM_BASE_URL": tg.base_url,
            }
            bot = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve-bot",
                    "--engine",
                    args.engine,
                    "--max-rate",
                    str(args.max_rate),
                    *(["--nlu"] if args.nlu else []),
                ],
                env=env,
                cwd=ROOT,
            )
            try:
                await tg.wait_for(lambda: "en" in tg.short_descriptions, 120, "bot start-up")
                people = [
                    Person(1000 + n, scripts[n % len(scripts)], expected[n % len(scripts)])
                    for n in range(args.users)
                ]
                tg.chaos = Chaos(args.chaos, seed=7) if args.chaos else None
                crowd = Crowd(tg, people, args.think)
                cpu_before = cpu_seconds(bot.pid)
                harness_before = time.process_time()
                started = time.monotonic()
                crowd.start()
                try:
                    await asyncio.wait_for(crowd.finished.wait(), args.timeout)
                except TimeoutError:
                    pass
                elapsed = time.monotonic() - started
                cpu = cpu_seconds(bot.pid) - cpu_before
                harness = time.process_time() - harness_before
                await asyncio.sleep(1.0)  # late duplicates would arrive now
                rss = peak_rss_mb(bot.pid)
            finally:
                bot.send_signal(signal.SIGTERM)
                await asyncio.to_thread(bot.wait, 30)
        row = report(people, crowd, tg, elapsed, cpu, rss, args)
        row["harness_cpu_s"] = harness
        return row


def report(
    people: list[Person],
    crowd: Crowd,
    tg: FakeTelegram,
    elapsed: float,
    cpu: float,
    rss: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    updates = sum(len(p.got) for p in people)
    lost = duplicated = mismatched = 0
    for person in people:
        for turn, got in enumerate(person.got):
            want = person.expected[turn]
            lost += max(0, len(want) - len(got))
            duplicated += max(0, len(got) - len(want))
            mismatched += sum(
                1 for a, b in zip(got, want, strict=False) if a != b and "open" not in a + b
            )
        lost += sum(len(t) for t in person.expected[len(person.got) :])
    latencies = sorted(x * 1000 for p in people for x in p.latencies)
    faults = sum(1 for c in tg.calls if c.fault)
    return {
        "users": len(people),
        "engine": args.engine,
        "max_rate": args.max_rate,
        "chaos": args.chaos,
        "think": args.think,
        "updates": updates,
        "seconds": elapsed,
        "updates_per_s": updates / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan"),
        "lost": lost,
        "duplicated": duplicated + crowd.stray,
        "mismatched": mismatched,
        "unfinished": sum(1 for p in people if not p.done),
        "api_calls": sum(1 for c in tg.calls if c.method != "getUpdates"),
        "faults": faults,
        "bot_cpu_s": cpu,
        "peak_rss_mb": rss,
    }


def print_table(row: dict[str, Any]) -> None:
    print(
        "| users | think s | engine | updates | updates/s | p50 ms | p99 ms | lost | duplicated "
        "| API calls | faults | bot CPU ms/update | peak RSS MB | harness CPU s |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per_update = row["bot_cpu_s"] * 1000 / row["updates"] if row["updates"] else float("nan")
    print(
        f"| {row['users']} | {row['think']:g} | {row['engine']} | {row['updates']} "
        f"| {row['updates_per_s']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
        f"| {row['lost']} | {row['duplicated']} | {row['api_calls']} | {row['faults']} "
        f"| {per_update:.2f} | {row['peak_rss_mb']:.0f} | {row['harness_cpu_s']:.1f} |"
    )
    if row["mismatched"] or row["unfinished"]:
        print(
            f"\n{row['mismatched']} message(s) differed from the expected text; "
            f"{row['unfinished']} person(s) did not finish."
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument(
        "--engine",
        choices=["auto", "thread", "inline"],
        default="auto",
        help="run Assistant.handle in a worker thread, on the event loop, or as "
        "`hulpwijzer telegram` does (a thread only with a classifier)",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=0.0,
        help="the bot's own messages/s throttle (0: off, 30: production)",
    )
    parser.add_argument(
        "--chaos",
        type=float,
        default=0.0,
        help="fraction of API calls answered with 429/500/slow/dropped",
    )
    parser.add_argument("--nlu", action="store_true", help="load the embedded classifier")
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="seconds a person pauses before acting again (0.5-1.5x, random)",
    )
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--serve-bot", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bot:
        serve_bot(args.engine, args.max_rate, args.nlu)
        return 0
    row = asyncio.run(run(args))
    print_table(row)
    return 0 if row["lost"] == 0 and row["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
