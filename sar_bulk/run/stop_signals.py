"""SIGINT and SIGTERM for one run: the first stops it gracefully, a second one exits at once.

    async def night() -> int:
        with StopSignals(asyncio.get_running_loop()) as signals:
            outcome = await execute_run(config, credential, ..., signals=signals)
            await write_metrics(outcome)   # still covered: a signal here does not kill it

The runner points the signals at its engine once the engine exists (``watch``) and lets go
when the report and summary are out (``release``). The handlers stay installed until the
``with`` ends, so a signal while the caller finishes (the metrics textfile, closing a blob
client) is taken as "finish and exit" rather than killing the process with the default
action and losing what was left to write; a second one still exits at once.

A second signal within ``SAME_SIGNAL_SECONDS`` of the first is the same request delivered
twice, not a second one: a wrapper that forwards signals (``timeout``, a shell script, an init
without process-group forwarding) to a process that also gets them from its group, or a Ctrl-C
that reaches both. Taking it as "asked twice" lost the report and the summary.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

import structlog

__all__ = ["SAME_SIGNAL_SECONDS", "StopSignals", "Stoppable"]

_log = structlog.get_logger(__name__)

SAME_SIGNAL_SECONDS = 0.5

# The exit code of a run that a signal ended: 128 + the signal's number, as a shell reports it.
_CODES = {signal.SIGINT: 128 + signal.SIGINT, signal.SIGTERM: 128 + signal.SIGTERM}


class Stoppable(Protocol):
    """What a signal stops: the engine (``Engine.request_stop``)."""

    def request_stop(self, reason: str) -> None: ...


class StopSignals:
    """The run's SIGINT/SIGTERM handlers (see the module docstring); a context manager."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        clock: Callable[[], float] = time.monotonic,
        exit_now: Callable[[int], object] = os._exit,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._exit_now = exit_now
        self._target: Stoppable | None = None
        self._first: float | None = None
        self._installed = False

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.remove()

    def watch(self, target: Stoppable) -> None:
        """From now on the first signal asks ``target`` to stop (handlers installed here)."""
        self._target = target
        if not self._installed:
            for sig in _CODES:
                self._loop.add_signal_handler(sig, self._handle, sig)
            self._installed = True

    def release(self) -> None:
        """The run has ended: a first signal from now on only notes the request."""
        self._target = None

    def remove(self) -> None:
        """Back to the default handlers (the ``with`` does this)."""
        if self._installed:
            for sig in _CODES:
                self._loop.remove_signal_handler(sig)
            self._installed = False

    def _handle(self, sig: signal.Signals) -> None:
        now = self._clock()
        if self._first is not None:
            if now - self._first < SAME_SIGNAL_SECONDS:
                _log.info("run.signal_repeated", signal=sig.name, ignored=True)
                return
            self._exit_now(_CODES[sig])  # the user asked twice: no more clean-up
            return
        self._first = now
        if self._target is not None:
            self._target.request_stop(sig.name)
        else:
            _log.warning("run.signal_while_finishing", signal=sig.name)
