"""Each Telegram update answered, once, even when the bot is killed mid-turn.

Two halves (issue 7, found by bench/reliability.py: a SIGKILL lost every update in
flight and left those people waiting for an answer that never came):

- Telegram forgets an update once getUpdates is called with a higher `offset`. PTB asks
  for the next batch while the last one is still being handled, so a crash lost them.
  `AckAfterTurnBot` asks with the offset of the oldest update not yet finished instead
  (and gives PTB only updates it has not seen), so a restarted bot gets them again.
- A redelivered update may have been half done. The channel journals each turn in the
  store (`SessionStore.begin_turn` ... `finish_turn`): cut off before its replies were
  written down, the state is put back and the turn runs again; cut off while sending,
  the rest of the journaled replies is sent; already done, it is skipped.

The one window left is between Telegram carrying out a sendMessage and the bot having
read its answer and committed that (milliseconds, more when the CPU is busy): a crash
then sends that message again. No bot can close it, as the Bot API has no idempotency
key and a bot cannot read its chats: a message may arrive twice, never not at all. Each
message is committed on its own (its id with how far the turn got), so at most one
message per person is in that window. bench/reliability.py counts these exactly.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from telegram import Update
from telegram.ext import Application, ExtBot

# An update still unfinished after this long no longer holds back the others' confirmation
# (its handler is stuck; better to lose it than to have every update delivered again).
GIVE_UP_AFTER = 300.0
# While updates are being answered getUpdates returns them again at once: wait until the
# oldest of them is answered (at most this long) before asking again instead of spinning.
BUSY_PAUSE = 0.05

_TASKS: contextvars.ContextVar[list[asyncio.Task[Any]] | None] = contextvars.ContextVar(
    "hulpwijzer_update_tasks", default=None
)


class UpdateTracker:
    """Update ids handed to PTB and not yet finished, and the next id to confirm."""

    def __init__(self, give_up_after: float = GIVE_UP_AFTER) -> None:
        self.give_up_after = give_up_after
        self.unfinished: dict[int, float] = {}
        self.next_offset = 0
        self._answered: dict[int, asyncio.Future[None]] = {}
        self._finished: asyncio.Event | None = None

    def offset_for(self, requested: int) -> int:
        now = time.monotonic()
        for update_id, since in list(self.unfinished.items()):
            if now - since > self.give_up_after:
                del self.unfinished[update_id]
        if self.unfinished:
            return min(requested, min(self.unfinished))
        return requested

    def take(self, updates: Sequence[Update], requested: int) -> tuple[Update, ...]:
        fresh = tuple(
            u for u in updates if u.update_id >= requested and u.update_id not in self.unfinished
        )
        now = time.monotonic()
        for update in fresh:
            self.unfinished[update.update_id] = now
            self.next_offset = max(self.next_offset, update.update_id + 1)
        return fresh

    def finish(self, update_id: int) -> None:
        self.unfinished.pop(update_id, None)
        waiter = self._answered.pop(update_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._finished is not None:
            self._finished.set()

    def expect(self, update_id: int) -> asyncio.Future[None]:
        """Done once the update has been answered (webhook mode: only then does Telegram
        hear 200, so an update cut off by a crash is delivered again). Shared by two
        deliveries of the same update."""
        waiter = self._answered.get(update_id)
        if waiter is None or waiter.done():
            waiter = self._answered[update_id] = asyncio.get_running_loop().create_future()
        return waiter

    def forget(self, update_id: int) -> None:
        """The update never reached the queue (it could not be read)."""
        waiter = self._answered.pop(update_id, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()

    async def wait_for_room(self, offset: int, pause: float) -> None:
        """Until the oldest unfinished update, at or below `offset`, is answered (at most
        `pause` seconds). getUpdates gives at most 100 updates from the offset on, so
        until then it could only return what is already being answered; the moment the
        oldest goes, Telegram has new ones to give (under load the window of 100 updates
        is what limits the updates in flight, so waiting a fixed time cost throughput)."""
        self._finished = finished = asyncio.Event()
        try:
            async with asyncio.timeout(pause):
                while self.unfinished and min(self.unfinished) <= offset:
                    finished.clear()
                    await finished.wait()
        except TimeoutError:
            pass
        finally:
            self._finished = None


class AckAfterTurnBot(ExtBot[Any]):
    """ExtBot whose getUpdates confirms only updates that have been answered."""

    __slots__ = ("_requested", "_returned", "_tracker")

    def __init__(self, tracker: UpdateTracker, **kwargs: Any) -> None:
        self._tracker = tracker  # PTB freezes public attributes of a bot
        self._requested: int | None = None
        self._returned = 0
        super().__init__(**kwargs)

    @property
    def tracker(self) -> UpdateTracker:
        return self._tracker

    async def get_updates(
        self, offset: int | None = None, *args: Any, **kwargs: Any
    ) -> tuple[Update, ...]:
        requested = offset or 0
        asked = self.tracker.offset_for(requested) if requested else 0
        self._requested, self._returned = requested, 0
        try:
            updates = await super().get_updates(asked or None, *args, **kwargs)
        finally:
            self._requested = None
        fresh = self.tracker.take(updates, requested)
        if self._returned > len(fresh):
            # Telegram answered at once because updates are still being answered: wait for
            # the oldest of them instead of asking again right away.
            await self.tracker.wait_for_room(asked, BUSY_PAUSE)
        return fresh

    async def _post(self, endpoint: str, data: Any = None, **kwargs: Any) -> Any:
        """Drop redelivered updates still being answered before PTB parses them (parsing
        them again and again cost more CPU than answering)."""
        result = await super()._post(endpoint, data, **kwargs)
        requested = self._requested
        if endpoint == "getUpdates" and requested is not None and isinstance(result, list):
            self._returned = len(result)
            unfinished = self.tracker.unfinished
            result = [
                raw
                for raw in result
                if not isinstance(raw, dict)
                or not isinstance(raw.get("update_id"), int)
                or (raw["update_id"] >= requested and raw["update_id"] not in unfinished)
            ]
        return result

    def finish_update(self, update_id: int) -> None:
        self.tracker.finish(update_id)

    async def confirm_finished(self) -> None:
        """On a graceful stop, after the last turn: tell Telegram what has been answered,
        so nothing is delivered again at the next start."""
        offset = self.tracker.offset_for(self.tracker.next_offset)
        if offset:
            await super().get_updates(offset, limit=1, timeout=0)


class TurnTrackingApplication(Application[Any, Any, Any, Any, Any, Any]):
    """An update is finished when process_update and every task it started are done
    (handlers run with block=False, so process_update returns before they finish)."""

    async def process_update(self, update: object) -> None:
        tasks: list[asyncio.Task[Any]] = []
        token = _TASKS.set(tasks)
        try:
            await super().process_update(update)
        finally:
            _TASKS.reset(token)
            if isinstance(update, Update) and isinstance(self.bot, AckAfterTurnBot):
                if tasks:
                    super().create_task(self._finish_after(tasks, update.update_id))
                else:
                    self.bot.finish_update(update.update_id)

    def create_task(  # type: ignore[override]
        self,
        coroutine: Coroutine[Any, Any, Any],
        update: object | None = None,
        *,
        name: str | None = None,
    ) -> asyncio.Task[Any]:
        task = super().create_task(coroutine, update, name=name)
        collecting = _TASKS.get()
        if collecting is not None:
            collecting.append(task)
        return task

    async def _finish_after(self, tasks: list[asyncio.Task[Any]], update_id: int) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(self.bot, AckAfterTurnBot):
            self.bot.finish_update(update_id)


# ---------------------------------------------------------------------- the journaled replies
@dataclass(frozen=True)
class Outgoing:
    """One Telegram message exactly as it will be sent: text or a document, and buttons."""

    text: str = ""
    buttons: tuple[tuple[str, str], ...] = ()  # (callback data, label)
    filename: str | None = None
    content: str | None = None


def pack(messages: Sequence[Outgoing], erase: bool) -> bytes:
    rows = [[m.text, [list(b) for b in m.buttons], m.filename, m.content] for m in messages]
    return json.dumps({"erase": erase, "messages": rows}, ensure_ascii=False).encode()


def unpack(blob: bytes) -> tuple[list[Outgoing], bool]:
    raw = json.loads(blob.decode())
    messages = [
        Outgoing(text, tuple((str(d), str(label)) for d, label in buttons), filename, content)
        for text, buttons, filename, content in raw["messages"]
    ]
    return messages, bool(raw["erase"])
