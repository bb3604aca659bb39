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

Who gets a free window slot (``Window``): a contact about to assemble its dossier first (it
frees memory), then a new contact, then a contact back from parking; once ``ready_backlog``
contacts wait to come back from parking, they and new contacts take turns. Why new before
returning: a new contact's first requests create its export requests, and every one made early
completes while the run does other work; served first come first served, the last exports of a
run were made near its end and the run then idled for a whole export's processing time
(``scripts/bench.py --only 7``: 1.26 times the ideal wall time). Taking turns past the backlog
keeps the number of contacts holding finished exports (and their memory) near the bound without
stopping new contacts, whose exports would otherwise start late again.

``once(key, load)`` runs ``load`` at most once per contact and key, in a task of its own, so a
caller that is cancelled does not cancel the others; ``recall``/``remember`` are notes in the
run state that outlive the process (a resumed run finds the export request it already made).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, cast

from sar_bulk.run.state import RunState

__all__ = ["READY_BACKLOG", "Scope", "Slots", "Waiter", "Window"]

_T = TypeVar("_T")

READY_BACKLOG: Final = 512
"""Contacts back from parking that may wait behind new contacts; past it they take turns."""


class Waiter(enum.IntEnum):
    """Why a task wants a window slot, in the order ``Window`` serves them."""

    ASSEMBLE = 0  # every part is done: the dossier is written next
    NEW = 1  # a contact admitted into the run
    RETURN = 2  # a part back from parking (its export is ready)


class Window:
    """A semaphore of ``size`` slots whose waiters are served by ``Waiter`` class (see above)."""

    __slots__ = ("_free", "_queues", "_ready_backlog", "_returned_last")

    def __init__(self, size: int, ready_backlog: int = READY_BACKLOG) -> None:
        self._free = size
        self._ready_backlog = ready_backlog
        self._returned_last = False
        self._queues: dict[Waiter, deque[asyncio.Future[None]]] = {w: deque() for w in Waiter}

    async def acquire(self, kind: Waiter) -> None:
        if self._free > 0 and not any(self._queues.values()):
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[kind].append(future)
        self._wake()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed the slot just as we were cancelled: pass it on
            else:
                future.cancel()
            raise

    def release(self) -> None:
        self._free += 1
        self._wake()

    def _wake(self) -> None:
        while self._free > 0 and (future := self._next()) is not None:
            if not future.done():
                self._free -= 1
                future.set_result(None)

    def _next(self) -> asyncio.Future[None] | None:
        queues = self._queues
        turns = len(queues[Waiter.RETURN]) >= self._ready_backlog and not self._returned_last
        if turns:
            order = (Waiter.ASSEMBLE, Waiter.RETURN, Waiter.NEW)
        else:
            order = (Waiter.ASSEMBLE, Waiter.NEW, Waiter.RETURN)
        for kind in order:
            if queues[kind]:
                if kind is not Waiter.ASSEMBLE:
                    self._returned_last = kind is Waiter.RETURN
                return queues[kind].popleft()
        return None


class Slots:
    """The run's two bounds: contacts fetching (``window``) and contacts alive at all."""

    __slots__ = ("_alive", "window")

    def __init__(self, window: int, max_parked: int, ready_backlog: int = READY_BACKLOG) -> None:
        if window < 1 or max_parked < 0 or ready_backlog < 1:
            raise ValueError(
                "window and ready_backlog must be at least 1 and max_parked not negative"
            )
        self.window = Window(window, ready_backlog)
        self._alive = asyncio.Semaphore(window + max_parked)

    async def admit(self) -> None:
        """Wait until a new contact may start: an alive slot first, then a window slot."""
        await self._alive.acquire()
        try:
            await self.window.acquire(Waiter.NEW)
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
        "sources",
    )

    def __init__(
        self,
        contact_id: str,
        number: int,
        state: RunState,
        slots: Slots,
        sources: frozenset[str] = frozenset(),
    ) -> None:
        """Take over the slots ``slots.admit()`` gave this contact."""
        self.contact_id = contact_id
        self.sources = sources
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
        await self.resume(Waiter.RETURN)

    # --- the engine's side ----------------------------------------------------------------------

    def start_parts(self, count: int) -> None:
        """``count`` parts start running under the window slot the contact holds."""
        self._running += count

    def part_done(self) -> None:
        """A part ended (however): the last one to end gives the window slot back."""
        self._stop_running()

    async def resume(self, kind: Waiter = Waiter.ASSEMBLE) -> None:
        """One more running part: take a window slot first if the contact has none."""
        self._running += 1
        try:
            async with self._lock:
                if not self._holding:
                    await self._slots.window.acquire(kind)
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
