"""The engine's ``ContactScope``: what the parts of one contact share while it is answered.

Usage (the engine, per contact)::

    slots = Slots(window=32, max_parked=10_000)   # one per run
    await slots.admit()                           # blocks while the window or the bound is full
    scope = Scope(contact_id, number, state, slots)
    scope.start_parts(len(parts))                 # then each part ends with scope.part_done()
    ...
    scope.close()                                 # gives back whatever the contact still holds

Window and parking: a contact admitted into the run holds one *window* slot (``window`` contacts
fetch at once) and one *alive* slot (at most ``window + max_parked`` contacts exist at all, so
memory stays flat). A part that waits a long time (an export request that takes hours) wraps
the wait in ``parked()``; once every running part of the contact is parked, the contact gives
its window slot back so another contact can fetch, and a part leaving ``parked()`` takes one
again (waiting for it, like a new contact) before it goes on.

``once(key, load)`` runs ``load`` at most once per contact and key, in a task of its own, so a
caller that is cancelled does not cancel the others; ``recall``/``remember`` are notes in the
run state that outlive the process (a resumed run finds the export request it already made).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sar_bulk.run.state import RunState

__all__ = ["Scope", "Slots"]

_T = TypeVar("_T")


class Slots:
    """The run's two bounds: contacts fetching (``window``) and contacts alive at all."""

    __slots__ = ("_alive", "window")

    def __init__(self, window: int, max_parked: int) -> None:
        if window < 1 or max_parked < 0:
            raise ValueError("window must be at least 1 and max_parked not negative")
        self.window = asyncio.Semaphore(window)
        self._alive = asyncio.Semaphore(window + max_parked)

    async def admit(self) -> None:
        """Wait until a new contact may start: an alive slot first, then a window slot."""
        await self._alive.acquire()
        try:
            await self.window.acquire()
        except BaseException:
            self._alive.release()
            raise

    def leave(self) -> None:
        """A contact is finished: its alive slot goes back (its window slot went already)."""
        self._alive.release()


class Scope:
    """One contact's ``ContactScope`` (see ``sar_bulk.sources.base``)."""

    __slots__ = (
        "_closed",
        "_holding",
        "_lock",
        "_number",
        "_once",
        "_running",
        "_slots",
        "_state",
        "contact_id",
    )

    def __init__(self, contact_id: str, number: int, state: RunState, slots: Slots) -> None:
        """Take over the slots ``slots.admit()`` gave this contact."""
        self.contact_id = contact_id
        self._number = number
        self._state = state
        self._slots = slots
        self._holding = True  # the window slot admit() took
        self._running = 0  # parts running and not parked
        self._lock = asyncio.Lock()
        self._once: dict[str, asyncio.Future[Any]] = {}
        self._closed = False

    @property
    def number(self) -> int:
        return self._number

    @property
    def holds_window_slot(self) -> bool:
        return self._holding

    # --- ContactScope ---------------------------------------------------------------------------

    async def once(self, key: str, load: Callable[[], Awaitable[_T]]) -> _T:
        task = self._once.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            task.add_done_callback(_retrieve)
            self._once[key] = task
        return cast(_T, await asyncio.shield(task))

    async def recall(self, key: str) -> str | None:
        return await asyncio.to_thread(self._state.recall, self.contact_id, key)

    async def remember(self, key: str, value: str) -> None:
        await asyncio.to_thread(self._state.remember, self.contact_id, key, value)

    @asynccontextmanager
    async def parked(self) -> AsyncIterator[None]:
        self._stop_running()
        try:
            yield
        except BaseException:
            self._running += 1  # the part is ending: count it back without waiting for a slot
            raise
        await self.resume()

    # --- the engine's side ----------------------------------------------------------------------

    def start_parts(self, count: int) -> None:
        """``count`` parts start running under the window slot the contact holds."""
        self._running += count

    def part_done(self) -> None:
        """A part ended (however): the last one to end gives the window slot back."""
        self._stop_running()

    async def resume(self) -> None:
        """One more running part: take a window slot first if the contact has none."""
        self._running += 1
        try:
            async with self._lock:
                if not self._holding:
                    await self._slots.window.acquire()
                    self._holding = True
        except BaseException:
            self._stop_running()
            raise

    def close(self) -> None:
        """Give back every slot and stop every ``once`` load still running. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in self._once.values():
            task.cancel()
        self._once.clear()
        if self._holding:
            self._holding = False
            self._slots.window.release()
        self._slots.leave()

    def _stop_running(self) -> None:
        self._running -= 1
        if self._running <= 0 and self._holding:
            self._running = 0
            self._holding = False
            self._slots.window.release()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A load whose every caller was cancelled must not log "exception never retrieved"."""
    if not task.cancelled():
        task.exception()
