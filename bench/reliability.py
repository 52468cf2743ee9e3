"""Reliability under faults: N people, a misbehaving Bot API, a SIGKILL and a SIGTERM.

    .venv/bin/python bench/reliability.py [--users 200] [--faults 0.05] [--seed 7]

The fake Bot API server (tests/fake_telegram.py) runs in this process and plays the
people; the bot is the real program, `python -m bot telegram --no-nlu`, long polling
over HTTP on 127.0.0.1 with a SQLite file in a temporary folder. During the run:

- a fraction of Bot API calls is answered with 429 (retry_after 1 s), 500, a slow answer,
  an answer slower than the bot's read timeout (a timeout), or a dropped connection;
  getUpdates itself gets 500s and dropped connections too;
- when about a third of all updates are done the bot is killed with SIGKILL, the
  database is opened as it was left, and the bot is started again;
- when about two thirds are done it gets SIGTERM (as from systemd or docker stop): every
  update it had already taken must be answered before it exits; then it is started again.

Each person follows one of the button-only conversations in tests/conversations/ (replayed
first on a local Assistant, to know every message each turn must produce and the step
each person must end at) and acts again only when every message of the answer has
arrived (a repeated message does not count twice). At the end the messages each chat
received are compared with the expected ones: missing ones are *lost*, extra ones
*duplicated*. Every person's stored session must be at the step the dry run ended at, and
PRAGMA integrity_check must say ok.

One kind of repeat cannot be avoided by any bot: a message Telegram had accepted when the
SIGKILL came, before the bot could write down that it was sent (its answer was still on
the way, or the commit not yet made). The Bot API has no idempotency key, so the restarted
bot cannot tell it from a message that never arrived, and sends it again rather than risk
leaving someone without an answer. The harness counts these exactly: after the kill it
compares the messages the server carried out with the message ids the bot's database
holds. A run passes only if nothing is lost and every repeat is one of those messages,
each sent again exactly once.

tests/test_faults.py runs the same harness with 30 people in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_telegram import TOKEN, Chaos, Chat, FakeTelegram, Fault  # noqa: E402
from scripted import DryRun, Turn, dry_run, load_scripts  # noqa: E402

from bot.channels.telegram import READ_TIMEOUT  # noqa: E402
from bot.store import SQLiteSessionStore, session_cipher, user_key  # noqa: E402

SECRET = "reliability-secret-" + "r" * 40
FIRST_USER = 880_000_000
REPLY_METHODS = frozenset(
    {
        "sendMessage",
        "sendDocument",
        "answerCallbackQuery",
        "deleteMessage",
        "deleteMessages",
        "editMessageReplyMarkup",
    }
)


# --------------------------------------------------------------------------- faults
class Faults(Chaos):
    """Chaos with a real timeout among the kinds, and getUpdates broken now and then."""

    def __init__(self, rate: float, seed: int) -> None:
        super().__init__(rate, seed=seed, retry_after=1, delay=0.5)
        self.counts: Counter[str] = Counter()
        self.enabled = True

    def pick(self, method: str) -> Fault | None:
        if not self.enabled:
            return None
        if method == "getUpdates":
            if self.rng.random() >= self.rate / 4:
                return None
            kind = self.rng.choice(["500", "drop"])
            self.counts[f"getUpdates {kind}"] += 1
            return Fault(kind)
        if method not in REPLY_METHODS or self.rng.random() >= self.rate:
            return None
        kind = self.rng.choices(["429", "500", "slow", "timeout", "drop"], [3, 3, 2, 1, 3])[0]
        self.counts[kind] += 1
        if kind == "timeout":
            return Fault("slow", delay=READ_TIMEOUT + 3.0)  # the bot gives up first
        return Fault(kind, retry_after=1, delay=0.5)


# --------------------------------------------------------------------------- the people
@dataclass
class Person:
    user_id: int
    script: list[Turn]
    expected: DryRun
    turn: int = -1
    this_turn: list[str] = field(default_factory=list)  # texts received since the last act
    received: list[str] = field(default_factory=list)
    update_ids: list[int] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)
    done: bool = False


class Crowd:
    """Plays every person: act, wait until the whole answer has arrived, act again."""

    def __init__(self, tg: FakeTelegram, people: list[Person]) -> None:
        self.tg = tg
        self.people = {p.user_id: p for p in people}
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self.remaining = len(people)
        self.turns_done = 0
        self.stray = 0
        tg.on_bot_message.append(self.on_bot_message)

    @property
    def total_turns(self) -> int:
        return sum(len(p.script) for p in self.people.values())

    def start(self) -> None:
        for person in self.people.values():
            self.act(person)

    def act(self, person: Person) -> None:
        person.turn += 1
        person.this_turn = []
        if person.turn == len(person.script):
            person.done = True
            self.remaining -= 1
            if self.remaining == 0:
                self.finished.set()
            return
        kind, value = person.script[person.turn]
        if kind == "send":
            update = self.tg.send_text(person.user_id, value)
        elif kind == "media":
            update = self.tg.send_media(person.user_id, value)
        elif kind == "press_raw":
            update = self.tg.press(person.user_id, value)
        else:
            update = self.tg.press_option(person.user_id, value)
        person.update_ids.append(update)
        if not person.expected.turns[person.turn]:
            person.answered.add(update)
            self.turns_done += 1
            self.loop.call_soon(self.act, person)

    def on_bot_message(self, chat: Chat, message: dict[str, Any]) -> None:
        person = self.people.get(chat.id)
        if person is None:
            self.stray += 1
            return
        person.received.append(str(message.get("text") or ""))
        if person.done or person.turn < 0:
            return
        person.this_turn.append(person.received[-1])
        if _contains_in_order(person.this_turn, person.expected.turns[person.turn]):
            person.answered.add(person.update_ids[-1])
            self.turns_done += 1
            self.loop.call_soon(self.act, person)

    def in_flight(self, grace: float = 0.0) -> set[int]:
        """Updates the bot has taken (getUpdates served them at least `grace` seconds ago,
        so the answer to that poll has reached it) whose answer is incomplete."""
        served = self.tg.served_at
        before = time.monotonic() - grace
        return {
            update
            for person in self.people.values()
            for update in person.update_ids
            if served.get(update, before + 1) <= before and update not in person.answered
        }


def _contains_in_order(got: list[str], want: list[str]) -> bool:
    """Whether every wanted message arrived, in order (repeats and others in between)."""
    remaining = iter(got)
    return all(any(text == seen for seen in remaining) for text in want)


# --------------------------------------------------------------------------- the bot process
class Bot:
    def __init__(
        self, env: dict[str, str], log: Path, args: tuple[str, ...] = ("telegram", "--no-nlu")
    ) -> None:
        self.env = env
        self.log = log
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, tg: FakeTelegram) -> float:
        registered = len(tg.calls_to("setMyShortDescription"))
        began = time.monotonic()
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                *self.args,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        self.starts += 1
        await tg.wait_for(
            lambda: len(tg.calls_to("setMyShortDescription")) >= registered + 3,
            120,
            "the bot to start",
        )
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def terminate(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM, then the exit status and how long the graceful stop took."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        return code, time.monotonic() - began

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()


# --------------------------------------------------------------------------- the run
@dataclass
class Result:
    users: int
    updates: int = 0
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    # Messages Telegram had carried out but the bot had not written down at the SIGKILL:
    # the only ones that may (and must) come twice. Their texts, to match the repeats.
    unnoted_at_kill: list[str] = field(default_factory=list)
    repeats_unexplained: int = 0
    differed: int = 0
    unfinished: int = 0
    in_flight_at_kill: int = 0
    sessions_at_kill: int = 0
    sessions_readable_after_kill: int = 0
    sessions_at_their_step_after_kill: int = 0
    restart_seconds: float = 0.0
    in_flight_at_term: int = 0
    answered_before_exit: int = 0
    term_exit_code: int | None = None
    term_seconds: float = 0.0
    sessions_final_ok: int = 0
    integrity: str = ""
    errors_logged: int = 0
    tracebacks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _key(user_id: int) -> str:
    return user_key(SECRET, "telegram", user_id)


def _open_store(path: Path) -> SQLiteSessionStore:
    return SQLiteSessionStore(path, session_cipher(SECRET))


async def run(
    users: int, fault_rate: float, seed: int, folder: Path, stall: float = 30.0
) -> Result:
    scripts = load_scripts()
    runs = dry_run(scripts, folder, SECRET)
    result = Result(users=users)
    database = folder / "bot.sqlite3"
    rng = random.Random(seed)
    async with FakeTelegram(long_poll_cap=1.0) as tg:
        env = {
            **os.environ,
            "HULPWIJZER_SECRET": SECRET,
            "HULPWIJZER_DB": str(database),
            "HULPWIJZER_VAR": str(folder / "var"),
            "HULPWIJZER_LOG_LEVEL": "WARNING",
            "NLU_BACKEND": "none",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_BASE_URL": tg.base_url,
        }
        bot = Bot(env, folder / "bot.log")
        await bot.start(tg)
        order = list(range(len(scripts)))
        rng.shuffle(order)
        people = [
            Person(FIRST_USER + n, scripts[order[n % len(order)]], runs[order[n % len(order)]])
            for n in range(users)
        ]
        faults = Faults(fault_rate, seed)
        tg.chaos = faults
        crowd = Crowd(tg, people)
        total = crowd.total_turns
        started = time.monotonic()
        crowd.start()

        async def until(fraction: float | None) -> None:
            """Until a fraction of all turns is done (None: all), or nothing moved for
            `stall` seconds (a person waiting for an answer that never comes)."""
            target = total if fraction is None else fraction * total
            last, moved = crowd.turns_done, time.monotonic()
            while crowd.turns_done < target and not crowd.finished.is_set():
                await asyncio.sleep(0.05)
                if crowd.turns_done != last:
                    last, moved = crowd.turns_done, time.monotonic()
                elif time.monotonic() - moved > stall:
                    return

        # ---- SIGKILL at a third, look at the database as the kill left it, restart.
        await until(1 / 3)
        result.in_flight_at_kill = len(crowd.in_flight())
        bot.kill()
        await bot.wait()
        # Requests the bot wrote before it died may still be read and carried out now (a
        # call faulted as a timeout ends only after READ_TIMEOUT + 3 s, as given up).
        await tg.wait_for(lambda: tg.in_flight == 0, 30, "the dead bot's calls to end")
        await asyncio.sleep(0.2)
        await tg.wait_for(lambda: tg.in_flight == 0, 30, "the dead bot's calls to end")
        seen = {p.user_id: _steps_after_kill(p) for p in people}
        store = _open_store(database)
        stored = {p.user_id: store.load(_key(p.user_id)) for p in people}
        rows = store.db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        result.unnoted_at_kill = _unnoted(tg, store, people)
        store.close()
        result.sessions_at_kill = int(rows)
        result.sessions_readable_after_kill = sum(1 for s in stored.values() if s is not None)
        result.sessions_at_their_step_after_kill = sum(
            1 for user, s in stored.items() if s is not None and s.step in seen[user]
        )
        result.restart_seconds = await bot.start(tg)

        # ---- SIGTERM at two thirds: everything taken must be answered before the exit.
        await until(2 / 3)
        # Updates served in the last half second may still be on their way in a poll that
        # the stop cancels; they stay unconfirmed and come with the next start (counted
        # in lost/duplicated like every other).
        taken = crowd.in_flight(grace=0.5)
        result.in_flight_at_term = len(taken)
        result.term_exit_code, result.term_seconds = await bot.terminate()
        answered = {u for p in people for u in p.answered}
        result.answered_before_exit = len(taken & answered)
        await bot.start(tg)

        await until(None)
        result.seconds = time.monotonic() - started
        faults.enabled = False
        await tg.wait_idle(quiet=1.0, timeout=60)  # late duplicates would arrive now
        code, _ = await bot.terminate()
        if code != 0:
            result.problems.append(f"the bot exited with {code} on the final SIGTERM")
        result.faults = faults.counts
    _judge(result, people, database, folder / "bot.log")
    return result


def _unnoted(tg: FakeTelegram, store: SQLiteSessionStore, people: list[Person]) -> list[str]:
    """Texts of the messages in the chats whose ids the bot's database does not hold."""
    now = datetime.now(UTC)
    texts: list[str] = []
    for person in people:
        noted = set(store.message_ids(_key(person.user_id), now))
        chat = tg.chat(person.user_id)
        texts += [
            str(message.get("text") or "")
            for message in chat.bot_messages()
            if message["message_id"] not in noted
        ]
    return texts


def _steps_after_kill(person: Person) -> set[str]:
    """Steps the stored session may be at when the bot is killed: after the last turn
    whose answer arrived, or after the one in flight (processed, answer not yet sent)."""
    answered_turns = sum(1 for u in person.update_ids if u in person.answered)
    steps = {_step_after(person, answered_turns)}
    if answered_turns < len(person.update_ids):
        steps.add(_step_after(person, answered_turns + 1))
    return steps


def _step_after(person: Person, turns: int) -> str:
    return person.expected.steps[turns - 1] if turns else "-"


def _judge(result: Result, people: list[Person], database: Path, log: Path) -> None:
    may_repeat = Counter(result.unnoted_at_kill)
    for person in people:
        want = [text for turn in person.expected.turns for text in turn]
        matcher = difflib.SequenceMatcher(a=want, b=person.received, autojunk=False)
        for tag, a0, a1, b0, b1 in matcher.get_opcodes():
            if tag == "delete":
                result.lost += a1 - a0
            elif tag == "insert":
                result.duplicated += b1 - b0
                for text in person.received[b0:b1]:
                    if may_repeat[text] > 0:
                        may_repeat[text] -= 1
                    else:
                        result.repeats_unexplained += 1
            elif tag == "replace":
                result.differed += max(a1 - a0, b1 - b0)
                result.lost += max(0, (a1 - a0) - (b1 - b0))
                result.duplicated += max(0, (b1 - b0) - (a1 - a0))
        result.unfinished += 0 if person.done else 1
        result.updates += len(person.update_ids)
    store = _open_store(database)
    for person in people:
        session = store.load(_key(person.user_id))
        final = person.expected.final  # the scripts keep their session: never None
        if (
            session is not None
            and final is not None
            and (session.step, session.answers, session.lang, session.mode)
            == (final.step, final.answers, final.lang, final.mode)
        ):
            result.sessions_final_ok += 1
    result.integrity = str(store.db.execute("PRAGMA integrity_check").fetchone()[0])
    store.close()
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    result.errors_logged = text.count("telegram_error")
    result.tracebacks = text.count("Traceback")
    if result.lost:
        result.problems.append(f"{result.lost} repl(y/ies) lost")
    if result.repeats_unexplained:
        result.problems.append(
            f"{result.repeats_unexplained} repl(y/ies) sent twice that Telegram had not "
            "carried out before the SIGKILL"
        )
    if result.duplicated != len(result.unnoted_at_kill):
        result.problems.append(
            f"{len(result.unnoted_at_kill)} message(s) unnoted at the SIGKILL, but "
            f"{result.duplicated} repeat(s)"
        )
    if result.unfinished:
        result.problems.append(f"{result.unfinished} person(s) did not finish")
    if result.sessions_final_ok != result.users:
        result.problems.append(
            f"only {result.sessions_final_ok} of {result.users} sessions ended at their step"
        )
    if result.integrity != "ok":
        result.problems.append(f"integrity_check: {result.integrity}")
    if result.answered_before_exit != result.in_flight_at_term:
        result.problems.append(
            f"SIGTERM: {result.in_flight_at_term - result.answered_before_exit} update(s) "
            "taken but not answered before the exit"
        )
    if result.term_exit_code != 0:
        result.problems.append(f"SIGTERM: exit status {result.term_exit_code}")
    if result.sessions_at_their_step_after_kill != result.sessions_readable_after_kill:
        result.problems.append("after the kill, some sessions were not at the person's step")


def print_table(result: Result) -> None:
    faults = ", ".join(f"{kind} {count}" for kind, count in sorted(result.faults.items()))
    rows = [
        ("people", result.users),
        ("updates sent by the people", result.updates),
        ("seconds", f"{result.seconds:.1f}"),
        ("faults injected", f"{sum(result.faults.values())} ({faults})"),
        ("replies lost", result.lost),
        ("replies sent twice", result.duplicated),
        (
            "  of which Telegram had accepted just before the SIGKILL",
            result.duplicated - result.repeats_unexplained,
        ),
        ("replies with other text (opening hours)", result.differed),
        ("people who did not finish", result.unfinished),
        ("updates in flight at the SIGKILL", result.in_flight_at_kill),
        ("sessions in the database after the SIGKILL", result.sessions_at_kill),
        ("  readable", result.sessions_readable_after_kill),
        ("  at the person's step", result.sessions_at_their_step_after_kill),
        ("restart to first poll (s)", f"{result.restart_seconds:.1f}"),
        ("updates in flight at the SIGTERM", result.in_flight_at_term),
        ("  answered before the exit", result.answered_before_exit),
        ("  exit status, seconds to exit", f"{result.term_exit_code}, {result.term_seconds:.1f}"),
        ("sessions at the dry run's final step", f"{result.sessions_final_ok} of {result.users}"),
        ("PRAGMA integrity_check", result.integrity),
        ("telegram_error lines logged", result.errors_logged),
        ("tracebacks logged", result.tracebacks),
    ]
    print("| measure | value |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if result.problems:
        print("\nPROBLEMS: " + "; ".join(result.problems))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--faults", type=float, default=0.05, help="fraction of API calls")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--stall", type=float, default=30.0, help="give up after this long without progress"
    )
    parser.add_argument("--keep", type=Path, help="keep the database and the bot's log here")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(args.users, args.faults, args.seed, args.keep, args.stall))
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = asyncio.run(run(args.users, args.faults, args.seed, Path(folder), args.stall))
    print_table(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
