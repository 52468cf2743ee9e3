"""The Telegram channel over real HTTP: the real bot (PTB, our handlers, the Assistant,
a real SQLite file) against tests/fake_telegram.py on 127.0.0.1. Never the real Telegram.

Each test checks what a person in the chat would notice: which messages appear, which
disappear, whether a button still works, what is left in the database afterwards."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from fake_telegram import BOT_USERNAME, MEDIA_KINDS, TOKEN, FakeTelegram
from telegram_harness import bot_env, free_port, run_with_fake, telegram_bot

from bot.channels.telegram import (
    TEXT_LIMIT,
    protect_logs,
    split_text,
    webhook_settings,
)
from bot.cli import main
from bot.errors import ConfigError
from bot.texts import Texts

ROOT = Path(__file__).resolve().parent.parent
SECRET = "telegram-test-secret-" + "s" * 40
HOOK_SECRET = "hook-secret-" + "h" * 40
TEXTS = Texts.load(ROOT / "responses")
# A 15-year-old being blackmailed on Instagram, who already paid: a whole path to the plan.
PERSON = 7730461829  # a user id that cannot turn up in a log by accident
SEXTORTION = ["nl", "yes", "me", "a13_15", "sextortion", "money", "yes", "instagram"]


def nl(key: str, **values: object) -> str:
    return TEXTS.get("nl", key, **values)


async def act(tg: FakeTelegram, chat: int, do: Callable[[], object], until: str = "") -> list[str]:
    """Do one thing as the user and wait for the bot's answer: a new question (a message
    with buttons), or a message containing `until`. Returns the texts that arrived."""
    before = len(tg.sent(chat))

    def answered() -> bool:
        new = tg.sent(chat)[before:]
        if until:
            return any(until in str(c.params.get("text", "")) for c in new)
        return any(c.params.get("reply_markup") for c in new)

    do()
    await tg.wait_for(answered, timeout=15, what=f"an answer in chat {chat}")
    return tg.sent_texts(chat)[before:]


def asked(tg: FakeTelegram, chat: int, before: int) -> bool:
    """Has a new question (a message with buttons) arrived since message number `before`?"""
    return any(c.params.get("reply_markup") for c in tg.sent(chat)[before:])


async def walk(tg: FakeTelegram, user: int, options: list[str], start: str = "/start") -> list[str]:
    seen = await act(tg, user, lambda: tg.send_text(user, start))
    for option in options:
        seen += await act(tg, user, lambda o=option: tg.press_option(user, o))  # type: ignore[misc]
    return seen


# ---------------------------------------------------------------------- start-up
def test_startup_registers_menu_and_descriptions_in_dutch_and_english(tmp_path: Path) -> None:
    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            pass
        assert set(tg.commands) == {"", "nl", "en"}
        dutch = {c["command"]: c["description"] for c in tg.commands["nl"]}
        english = {c["command"]: c["description"] for c in tg.commands["en"]}
        assert tg.commands[""] == tg.commands["nl"]  # Dutch is what a new user sees by default
        assert {"start", "help", "terug", "opnieuw", "taal", "privacy", "wis", "stop"} == set(dutch)
        assert {"start", "help", "back", "restart", "language", "privacy", "wipe", "stop"} == set(
            english
        )
        assert dutch["stop"] == nl("telegram.command.stop")
        assert english["stop"] == TEXTS.get("en", "telegram.command.stop")
        assert "geen mens" in tg.descriptions["nl"] and "112" in tg.descriptions["nl"]
        assert "not a person" in tg.descriptions["en"]
        assert all(len(text) <= 120 for text in tg.short_descriptions.values())
        assert set(tg.short_descriptions) == {"", "nl", "en"}

    run_with_fake(scenario)


# ---------------------------------------------------------------------- the conversation
def test_whole_conversation_from_start_to_the_plan_by_buttons(tmp_path: Path) -> None:
    user = 987654321

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET) as assistant:
            seen = await walk(tg, user, SEXTORTION)
            await tg.wait_idle(quiet=0.1)
            plan = "\n".join(seen[-3:])
            for expected in ("Stop het contact", "Betaal niet", "Helpwanted", "0900-8844"):
                assert expected in plan
            assert plan.index("Stop het contact") < plan.index("Helpwanted")
            # Every press was answered, so no button kept spinning.
            assert len(tg.calls_to("answerCallbackQuery")) == len(SEXTORTION)
            assert all(len(text) <= TEXT_LIMIT for text in seen)
            key = assistant.key_for("telegram", user)
            assert assistant.store.count_rows(key) > 1  # the session and the message ids
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("hw.sqlite3*"))
        assert str(user).encode() not in raw  # no Telegram user id in the clear

    run_with_fake(scenario)


def test_a_drafted_letter_arrives_as_text_and_as_a_file_that_wis_removes(tmp_path: Path) -> None:
    user = 5353
    path = ["nl", "yes", "me", "a13_15", "image_abuse", "public", "other", "stranger", "letter"]

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            await walk(tg, user, [*path, "other", "skip"])
            documents = tg.calls_to("sendDocument")
            assert len(documents) == 1
            file = documents[0].params["document"]
            assert file["filename"].endswith(".txt")
            letter = file["content"].decode("utf-8")
            assert "art. 252 Sr" in letter
            assert letter.strip() in "\n".join(tg.sent_texts(user))  # also readable as text
            await tg.wait_idle(quiet=0.05)
            await act(tg, user, lambda: tg.send_text(user, "/wis"), until=nl("wipe.done"))
            await tg.wait_idle(quiet=0.1)
            assert [m.get("text") for m in tg.chat(user).messages.values()] == [nl("wipe.done")]

    run_with_fake(scenario)


def test_deep_links_choose_language_and_volunteer_mode(tmp_path: Path) -> None:
    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            english = await act(tg, 1, lambda: tg.send_text(1, "/start en"))
            assert TEXTS.get("en", "welcome.text", hours=24).splitlines()[0] in english[-1]
            volunteer = await act(tg, 2, lambda: tg.send_text(2, "/start vrijwilliger"))
            assert "[Vrijwilliger" in volunteer[-1]
            unknown = await act(tg, 3, lambda: tg.send_text(3, "/start onbekend-ding"))
            assert nl("welcome.text", hours=24).splitlines()[0] in unknown[-1]

    run_with_fake(scenario)


def test_a_forged_or_stale_button_gets_the_current_question_again(tmp_path: Path) -> None:
    user = 4242
    forged = [
        "999:welcome:nl",  # a button from a turn that never happened
        "1:safety:yes' OR 1=1 --",
        "x" * 65,  # longer than Telegram would ever deliver
        "1:welcome:nl\u202e",  # invisible right-to-left override
        "",
    ]

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            await act(tg, user, lambda: tg.send_text(user, "/start"))
            question = tg.sent_texts(user)[-1]
            for data in forged:
                seen = await act(tg, user, lambda d=data: tg.press(user, d))  # type: ignore[misc]
                assert seen[0] == nl("error.stale_button")
                assert seen[-1] == question
            # Nothing moved: the real button still works and leads on.
            seen = await act(tg, user, lambda: tg.press_option(user, "nl"))
            assert nl("ask.safety") in seen[-1]
            assert not any(nl("telegram.failed") in text for text in tg.sent_texts(user))

    run_with_fake(scenario)


def test_media_is_deleted_never_downloaded_and_explained(tmp_path: Path) -> None:
    user = 5151

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET) as assistant:
            await walk(tg, user, ["nl", "yes"])
            await tg.wait_idle(quiet=0.05)
            question = tg.sent_texts(user)[-1]
            key = assistant.key_for("telegram", user)
            rows = assistant.store.count_rows(key)
            for kind in MEDIA_KINDS:
                seen = await act(tg, user, lambda k=kind: tg.send_media(user, k))  # type: ignore[misc]
                message_id = tg.updates[-1]["message"]["message_id"]
                assert message_id in tg.chat(user).deleted, kind
                assert message_id not in tg.chat(user).messages
                assert seen[0] == nl("media.removed") and seen[-1] == question
            assert all("text" in m for m in tg.chat(user).user_messages())
            assert tg.file_requests == 0 and not tg.calls_to("getFile", outcome=None)
            # The deleted media's ids are not kept (the replies' ids are).
            await tg.wait_idle(quiet=0.05)
            assert assistant.store.count_rows(key) == rows + 2 * len(MEDIA_KINDS)

    run_with_fake(scenario)


def test_wis_deletes_both_sides_of_the_chat_and_everything_stored(tmp_path: Path) -> None:
    user = 6161

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET) as assistant:
            await walk(tg, user, ["nl", "yes", "me"])
            await act(tg, user, lambda: tg.send_text(user, "/help"))
            chat = tg.chat(user)
            before = set(chat.messages)
            assert len(chat.user_messages()) == 2 and len(chat.bot_messages()) >= 5
            await act(tg, user, lambda: tg.send_text(user, "/wis"), until=nl("wipe.done"))
            await tg.wait_idle(quiet=0.1)
            remaining = list(chat.messages.values())
            assert [m["text"] for m in remaining] == [nl("wipe.done")]
            assert before <= set(chat.deleted)  # the bot's and the user's, /wis included
            assert tg.calls_to("deleteMessages")
            assert assistant.store.count_rows(assistant.key_for("telegram", user)) == 0
            assert assistant.store.count_rows() == 0
            # Afterwards the person can simply start again.
            seen = await act(tg, user, lambda: tg.send_text(user, "/start"))
            assert nl("welcome.text", hours=24).splitlines()[0] in seen[-1]

    run_with_fake(scenario)


def test_stop_deletes_everything_stored_but_leaves_the_chat(tmp_path: Path) -> None:
    user = 7171

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET) as assistant:
            await walk(tg, user, ["nl", "yes"])
            key = assistant.key_for("telegram", user)
            assert assistant.store.count_rows(key) > 0
            await act(tg, user, lambda: tg.send_text(user, "/stop"), until=nl("stop.done"))
            await tg.wait_idle(quiet=0.1)
            assert assistant.store.count_rows(key) == 0
            assert not tg.chat(user).deleted  # /stop forgets; only /wis cleans the chat

    run_with_fake(scenario)


def test_a_conversation_idle_longer_than_the_ttl_is_deleted_while_the_bot_runs(
    tmp_path: Path,
) -> None:
    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET, purge_every=0.1) as assistant:
            await walk(tg, 1, ["nl"])
            key = assistant.key_for("telegram", 1)
            session = assistant.store.load(key)
            assert session is not None
            long_ago = datetime.now(UTC) - timedelta(hours=25)
            assistant.store.save(key, session, long_ago)  # as if untouched for 25 hours
            await tg.wait_for(lambda: assistant.store.count_rows(key) == 0, what="the purge")

    run_with_fake(scenario)


# ---------------------------------------------------------------------- faults
def test_429_500_slow_and_dropped_answers_are_retried_with_no_reply_lost_or_doubled(
    tmp_path: Path,
) -> None:
    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            calm = await walk(tg, 1, SEXTORTION)
            tg.fail("429", ["sendMessage"], times=2, retry_after=1)
            tg.fail("500", ["sendMessage"], times=2)
            tg.fail("drop", ["sendMessage"], times=1)
            tg.fail("slow", ["sendMessage"], times=1, delay=0.5)
            stormy = await walk(tg, 2, SEXTORTION)
            await tg.wait_idle(quiet=0.2)
            assert stormy == calm  # every reply arrived, once, in order
            assert tg.sent_texts(2) == tg.sent_texts(1)
            faults = sorted(c.fault for c in tg.calls if c.fault)
            assert faults == ["429", "429", "500", "500", "drop", "slow"]

    run_with_fake(scenario)


def test_a_failed_reply_is_reported_and_the_person_keeps_their_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user = 8181
    canary = "CANARY-Jan-Jansen-0612345678"
    caplog.set_level(logging.DEBUG)
    protect_logs()

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            await walk(tg, user, ["nl", "yes"])
            await act(tg, user, lambda: tg.send_text(user, canary))
            tg.fail("400", ["sendMessage"], times=1)  # refused: not something to retry
            seen = await act(tg, user, lambda: tg.press_option(user, "me"), until="Sorry")
            assert seen == [nl("telegram.failed")]
            seen = await act(tg, user, lambda: tg.send_text(user, "/help"))
            assert nl("ask.age").splitlines()[0] in seen[-1]  # the step after "me", kept

    run_with_fake(scenario)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "telegram_error kind=BadRequest" in logged
    for secret in (canary, str(user), TOKEN, TOKEN.split(":")[1], SECRET):
        assert secret not in logged


# ---------------------------------------------------------------------- webhook
def test_webhook_rejects_a_missing_or_wrong_secret_before_the_engine(tmp_path: Path) -> None:
    user = 9191
    port = free_port()

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(
            tg, tmp_path, SECRET, webhook_port=port, webhook_secret=HOOK_SECRET
        ) as assistant:
            assert tg.webhook["secret_token"] == HOOK_SECRET
            url = f"http://127.0.0.1:{port}/tg-hook"
            async with httpx.AsyncClient() as client:
                for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong-" + "w" * 40}):
                    update = tg.text_update(user, "/start")
                    answer = await client.post(url, json=update, headers=headers)
                    assert answer.status_code == 403
                await asyncio.sleep(0.3)
                assert tg.sent(user) == [] and assistant.store.count_rows() == 0
                update = tg.text_update(user, "/start")
                headers = {"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}

                async def post() -> None:
                    answer = await client.post(url, json=update, headers=headers)
                    assert answer.status_code == 200

                before = len(tg.sent(user))
                await post()
                await tg.wait_for(lambda: len(tg.sent(user)) > before, what="the welcome")
                assert assistant.store.count_rows() > 0

    run_with_fake(scenario)


def test_webhook_says_200_only_once_the_update_is_answered(tmp_path: Path) -> None:
    """Telegram delivers an update again until it hears 2xx: saying 200 only after the
    answer was sent means a crash in between costs a redelivery, not the update."""
    user = 9292
    port = free_port()

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(
            tg, tmp_path, SECRET, webhook_port=port, webhook_secret=HOOK_SECRET
        ):
            tg.fail("slow", ["sendMessage"], times=1, delay=1.0)
            headers = {"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}
            async with httpx.AsyncClient(timeout=30) as client:
                url = f"http://127.0.0.1:{port}/tg-hook"
                answer = await client.post(
                    url, json=tg.text_update(user, "/start"), headers=headers
                )
                assert answer.status_code == 200
                # The slow welcome had been carried out when Telegram heard 200.
                assert tg.sent(user), "200 came before the answer was sent"
                # A body that is not an update is refused and leaves nothing waiting.
                broken = await client.post(
                    url,
                    content=b'{"update_id": 5, "message": 7}',
                    headers={**headers, "Content-Type": "application/json"},
                )
                assert broken.status_code == 400

    run_with_fake(scenario)


# ---------------------------------------------------------------------- concurrency
def test_two_people_interleaved_hear_only_their_own_conversation(tmp_path: Path) -> None:
    anna, ben = 111, 222

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            await act(tg, anna, lambda: tg.send_text(anna, "/start"))
            await act(tg, ben, lambda: tg.send_text(ben, "/start en", language_code="en"))
            anna_path = ["nl", "yes", "me", "a16_17", "bullying"]
            ben_path = ["en", "yes", "me", "adult", "stalking"]
            for mine, theirs in zip(anna_path, ben_path, strict=True):
                before = {anna: len(tg.sent(anna)), ben: len(tg.sent(ben))}
                tg.press_option(anna, mine)
                tg.press_option(ben, theirs)
                await tg.wait_for(
                    lambda b=before: all(asked(tg, chat, n) for chat, n in b.items()),  # type: ignore[misc]
                    what="both next questions",
                )
                await tg.wait_idle(quiet=0.05)
            assert nl("ask.who") in "\n".join(tg.sent_texts(anna))
            assert nl("ask.who") not in "\n".join(tg.sent_texts(ben))
            assert TEXTS.get("en", "ask.who") in "\n".join(tg.sent_texts(ben))
            assert not any("stalk" in text.lower() for text in tg.sent_texts(anna)[-2:])
            assert not any(nl("error.stale_button") in t for t in tg.sent_texts(anna))
            assert not any(TEXTS.get("en", "error.stale_button") in t for t in tg.sent_texts(ben))

    run_with_fake(scenario)


def test_one_persons_quick_messages_are_answered_in_order(tmp_path: Path) -> None:
    user = 333

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET):
            await act(tg, user, lambda: tg.send_text(user, "/start"))
            tg.fail("slow", ["sendMessage"], times=1, delay=0.4)  # the first answer is slow
            for command in ("/help", "/privacy", "/help", "/privacy"):
                tg.send_text(user, command)
            await tg.wait_for(lambda: len(tg.sent(user)) >= 9, what="eight more messages")
            await tg.wait_idle(quiet=0.1)
            # Each answer is a lead text, then the current question again: read the leads.
            help_lead = nl("help.text").splitlines()[0]
            privacy_lead = nl("privacy.short", hours=24).splitlines()[0]
            leads = [
                "help" if help_lead in text else "privacy"
                for text in tg.sent_texts(user)[1:]
                if help_lead in text or privacy_lead in text
            ]
            assert leads == ["help", "privacy", "help", "privacy"]

    run_with_fake(scenario)


# ---------------------------------------------------------------------- groups
def test_in_a_group_the_bot_only_points_to_a_private_chat_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    group, pupil = -100500, 444

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET) as assistant:
            link = f"https://t.me/{BOT_USERNAME}"
            await act(tg, group, lambda: tg.add_to_group(group, pupil), until=link)
            await act(tg, group, lambda: tg.group_text(group, pupil, "/start"), until=link)
            tg.group_text(group, pupil, "hoi allemaal, wie heeft het huiswerk?")
            await tg.wait_idle(quiet=0.2)
            assert tg.sent_texts(group) == [nl("telegram.group_only", link=link)] * 2
            assert assistant.store.count_rows() == 0

    run_with_fake(scenario)


# ---------------------------------------------------------------------- long replies
def test_a_5000_character_reply_arrives_as_two_messages_split_between_paragraphs(
    tmp_path: Path,
) -> None:
    root = tmp_path / "project"
    for folder in ("data", "responses"):
        shutil.copytree(ROOT / folder, root / folder)
    catalogue = yaml.safe_load((root / "responses" / "nl.yml").read_text(encoding="utf-8"))
    paragraph = ("Dit is een rustige zin om de lengte te testen. " * 10).strip()
    long_welcome = "\n\n".join([paragraph] * 11) + "\n\n{hours}"
    assert 4900 < len(long_welcome) < 5200
    catalogue["welcome"]["text"] = long_welcome
    (root / "responses" / "nl.yml").write_text(
        yaml.safe_dump(catalogue, allow_unicode=True), encoding="utf-8"
    )

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET, root=root):
            seen = await act(tg, 1, lambda: tg.send_text(1, "/start"))
            assert len(seen) == 2 and all(len(part) <= TEXT_LIMIT for part in seen)
            assert "\n\n".join(seen) == long_welcome.replace("{hours}", "24")
            assert all(part.endswith((".", "24")) for part in seen)  # no sentence cut
            buttons = [c.params.get("reply_markup") for c in tg.sent(1)]
            assert buttons[0] is None and buttons[1]  # the buttons come under the last part

    run_with_fake(scenario)


def test_split_text_keeps_short_texts_and_cuts_even_a_text_without_spaces() -> None:
    assert split_text("Hoi") == ["Hoi"]
    assert split_text("") == []
    parts = split_text("a" * 9000)
    assert [len(p) for p in parts] == [4096, 4096, 808]
    lines = "\n".join(["regel " * 50] * 40)
    assert all(len(p) <= TEXT_LIMIT for p in split_text(lines))
    assert "".join(split_text(lines)).replace("\n", "") == lines.replace("\n", "")


# ---------------------------------------------------------------------- the command
def test_missing_or_malformed_token_or_secret_stops_start_up_with_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = bot_env(tmp_path, None, SECRET)
    cases = [
        ({"TELEGRAM_BOT_TOKEN": ""}, "TELEGRAM_BOT_TOKEN is not set"),
        ({"TELEGRAM_BOT_TOKEN": "12345:short"}, "does not look like a bot token"),
        ({"HULPWIJZER_SECRET": ""}, "HULPWIJZER_SECRET is not set"),
    ]
    for change, sentence in cases:
        for name, value in {**base, **change}.items():
            monkeypatch.setenv(name, value)
        assert main(["telegram"]) == 2
        err = capsys.readouterr().err.strip()
        assert sentence in err and len(err.splitlines()) == 1
        assert "short" not in err and TOKEN not in err  # the token is never echoed


def test_webhook_mode_refuses_to_start_without_a_strong_secret(tmp_path: Path) -> None:
    good = {"TELEGRAM_WEBHOOK_URL": "https://bot.example.nl/telegram"}
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        webhook_settings(good)
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        webhook_settings({**good, "TELEGRAM_WEBHOOK_SECRET": "kort"})
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_URL"):
        webhook_settings({"TELEGRAM_WEBHOOK_SECRET": HOOK_SECRET})
    hook = webhook_settings({**good, "TELEGRAM_WEBHOOK_SECRET": HOOK_SECRET})
    assert (hook.listen, hook.port, hook.path) == ("127.0.0.1", 8443, "telegram")
    assert HOOK_SECRET not in repr(hook)


def test_the_real_command_runs_against_a_bot_api_server_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    """`hulpwijzer telegram` as a process: a token Telegram refuses is one sentence and
    exit 2; a good one registers, answers /start, and SIGTERM ends it with status 0."""

    async def scenario(tg: FakeTelegram) -> None:
        env = {**os.environ, **bot_env(tmp_path, tg, SECRET), "HULPWIJZER_LOG_LEVEL": "DEBUG"}
        command = [sys.executable, "-m", "bot", "telegram", "--no-nlu"]
        refused = await asyncio.create_subprocess_exec(
            *command,
            env={**env, "TELEGRAM_BOT_TOKEN": "987654321:" + "R" * 35},
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        _, err = await asyncio.wait_for(refused.communicate(), 30)
        assert refused.returncode == 2
        assert (
            err.decode()
            .strip()
            .splitlines()[-1]
            .startswith("hulpwijzer: Telegram does not accept TELEGRAM_BOT_TOKEN")
        )
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stderr=asyncio.subprocess.PIPE, cwd=ROOT
        )
        try:
            await tg.wait_for(lambda: "en" in tg.short_descriptions, timeout=30, what="start-up")
            seen = await act(tg, PERSON, lambda: tg.send_text(PERSON, "/start"))
            assert nl("welcome.text", hours=24).splitlines()[0] in seen[-1]
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
        logged = err.decode()
        assert "/start" not in logged and TOKEN.split(":")[1] not in logged
        assert str(PERSON) not in logged

    run_with_fake(scenario)
