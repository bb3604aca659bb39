"""One progress query per interval for every export request of the run that is being waited for.

Usage::

    poller = ProgressPoller(read=read_rows, is_done=done, poll=30.0, clock=..., sleep=...)
    row = await poller.wait(request_id, limit=6 * 3600.0)   # the request's row once it is done

Why: an export request of real-time journeys can take hours, and a run may have thousands in
flight. Asking for each one's progress on its own would spend the identity's request budget on
waiting; instead every waiting contact registers its request id here and awaits a future, and
one task reads the progress of all of them every ``poll`` seconds, ``batch`` ids per query
(``read`` turns a batch of ids into ``{id: row}``). The task runs only while someone waits.

Outcomes of ``wait``: the row once ``is_done(row)``; ``WaitExpired`` when ``limit`` seconds (of
``clock``) pass first; ``RequestGone`` when a query no longer returns the id; the query's own
error when reading a batch fails (after the fetcher's retries), for the ids of that batch, unless
``passing(error)`` says it may pass (a 503, a timeout, a spent retry budget): the requests go on
processing meanwhile, so their waiters keep waiting and the batch is read again at the next poll
(the deadline still holds; ``last_failure`` keeps the error for the message then). Without this
one bad minute of the org failed every contact of the batch, up to 50, after hours of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ProgressPoller", "RequestGone", "WaitExpired"]

Row = Mapping[str, Any]
DEFAULT_BATCH: Final = 50


class WaitExpired(Exception):
    """The request was not done within the wait limit."""


class RequestGone(Exception):
    """The request's row is no longer there (deleted while waiting)."""


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[Row]
    deadline: float


class ProgressPoller:
    """Shared by every contact of one source instance (so of one run)."""

    __slots__ = (
        "_batch",
        "_clock",
        "_is_done",
        "_passing",
        "_poll",
        "_read",
        "_sleep",
        "_task",
        "_waiting",
        "last_failure",
    )

    def __init__(
        self,
        *,
        read: Callable[[Sequence[str]], Awaitable[Mapping[str, Row]]],
        is_done: Callable[[Row], bool],
        poll: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        batch: int = DEFAULT_BATCH,
        passing: Callable[[Exception], bool] | None = None,
    ) -> None:
        if poll <= 0 or batch < 1:
            raise ValueError("poll must be > 0 and batch >= 1")
        self._read = read
        self._is_done = is_done
        self._poll = poll
        self._clock = clock
        self._sleep = sleep
        self._batch = batch
        self._passing = passing or (lambda error: False)
        # The latest read that failed with a passing error (None once a read succeeds).
        self.last_failure: Exception | None = None
        self._waiting: dict[str, list[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many request ids are being waited for."""
        return len(self._waiting)

    async def wait(self, request_id: str, limit: float) -> Row:
        """The request's row once it is done; raises ``WaitExpired`` after ``limit`` seconds."""
        future: asyncio.Future[Row] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, self._clock() + limit)
        self._waiting.setdefault(request_id, []).append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="sar-bulk realtime poller")
        try:
            return await future
        finally:
            self._forget(request_id, waiter)

    def _forget(self, request_id: str, waiter: _Waiter) -> None:
        waiters = self._waiting.get(request_id, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiting.pop(request_id, None)
        if (
            not self._waiting
            and self._task is not None
            and self._task is not asyncio.current_task()
        ):
            # Nobody waits any more: stop now rather than leave a sleeping task behind.
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        try:
            while self._pending():
                await self._sleep(self._poll)
                await self._poll_once()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug here must reach the waiters, not vanish
            self._settle_all(error)

    def _pending(self) -> bool:
        """Someone still waits (settled waiters leave a moment later, in their own task)."""
        return any(not w.future.done() for waiters in self._waiting.values() for w in waiters)

    async def _poll_once(self) -> None:
        ids = list(self._waiting)
        for start in range(0, len(ids), self._batch):
            batch = ids[start : start + self._batch]
            try:
                rows = await self._read(batch)
            except Exception as error:  # handed to the waiters of this batch, unless passing
                if self._passing(error):
                    self.last_failure = error
                    continue
                for request_id in batch:
                    self._settle(request_id, error=error)
                continue
            self.last_failure = None
            for request_id in batch:
                row = rows.get(request_id)
                if row is None:
                    self._settle(request_id, error=RequestGone(request_id))
                elif self._is_done(row):
                    self._settle(request_id, row=row)
        now = self._clock()
        for request_id, waiters in list(self._waiting.items()):
            for waiter in waiters:
                if now >= waiter.deadline and not waiter.future.done():
                    waiter.future.set_exception(WaitExpired(request_id))

    def _settle(
        self, request_id: str, *, row: Row | None = None, error: BaseException | None = None
    ) -> None:
        for waiter in self._waiting.get(request_id, []):
            if waiter.future.done():
                continue
            if error is not None:
                waiter.future.set_exception(error)
            elif row is not None:
                waiter.future.set_result(row)

    def _settle_all(self, error: BaseException) -> None:
        for request_id in list(self._waiting):
            self._settle(request_id, error=error)
