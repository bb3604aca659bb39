"""Prometheus metrics of one run: served during it, and written to a textfile at its end.

Usage::

    settings = MetricsSettings.from_settings(settings)     # --metrics-port/-host/-textfile
    code = await run_with_metrics(settings, shard=config.shard,
                                  run=lambda metrics: execute_run(..., metrics=metrics))
    # inside the run, once the parts exist:
    metrics.watch(totals=engine.totals, fetcher=fetcher)

Nothing is incremented on the hot path: ``RunCollector`` reads the counters the run already keeps
(``FetchStats`` and the ``Throttle`` of each identity, the engine's ``RunTotals``) when it is
collected, by a scrape or by the final textfile. One private ``CollectorRegistry`` per run, so
runs (and tests) share no global state.

The endpoint is an ``aiohttp.web`` server on the run's own event loop (prometheus_client's
``make_aiohttp_handler``), not ``start_http_server``'s thread: a scrape then reads the counters
on the thread that changes them, between two awaits, so it sees one consistent moment of the
run; it stops with the run (``AppRunner.cleanup``) instead of leaving a daemon thread; and aiohttp
is already what the run speaks HTTP with. A scrape renders a few dozen samples: microseconds
of the loop's time, a few times a minute.

The textfile (``--metrics-textfile x.prom``, for node_exporter's textfile collector) is written
atomically by ``prometheus_client.write_to_textfile`` (a temporary name in the same folder, then
a rename), in a thread. ``sar_bulk_last_success_timestamp_seconds`` is set only by a run that ends
with exit code 0; a run that ends otherwise carries the previous file's value over, so an alert on
"no success for 2 days" keeps counting from the last good night instead of losing the series.

Labels: request-level metrics carry ``identity`` (the credential they were sent with: one today,
``"default"``) and every metric carries ``shard`` (``"2/8"``, or ``"all"``), so the files and
pods of an Indexed Job never collide. Contact-level counts are the run's, not an identity's.
"""

from __future__ import annotations

import asyncio
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.errors import ConfigError
from sar_bulk.run.report import RunTotals
from sar_bulk.run.sharding import Shard

__all__ = [
    "DEFAULT_IDENTITY",
    "LAST_SUCCESS",
    "MetricsSettings",
    "RunCollector",
    "RunMetrics",
    "run_with_metrics",
]

DEFAULT_IDENTITY = "default"
LAST_SUCCESS = "sar_bulk_last_success_timestamp_seconds"
# Always present (at 0) so that rate() and alerts see the series before the first 429.
_KNOWN_LIMITS = ("requests", "execution-time", "concurrency")
# The previous textfile is a few KiB (a few dozen samples per identity); more is not ours.
_MAX_PREVIOUS = 1 << 20
_log = structlog.get_logger("sar_bulk.run.metrics")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where to serve and where to write; both ``None``: no metrics at all."""

    port: int | None = None
    host: str = "127.0.0.1"
    textfile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> MetricsSettings:
        textfile: Path | None = settings.get("metrics_textfile")
        if textfile is not None and not textfile.parent.is_dir():
            raise ConfigError(
                f"--metrics-textfile {textfile}: folder {textfile.parent} does not exist "
                "(node_exporter's textfile collector directory, or a mounted volume)"
            )
        return cls(
            port=settings.get("metrics_port"),
            host=settings.get("metrics_host") or "127.0.0.1",
            textfile=textfile,
        )

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.textfile is not None


class RunCollector:
    """Reads the run's own counters at collection time (a prometheus_client custom collector)."""

    def __init__(self, *, shard: str, clock: Callable[[], float] = time.time) -> None:
        self.shard = shard
        self._clock = clock
        self.started_at = clock()
        self.ended_at: float | None = None
        self.exit_code: int | None = None
        self.last_success: float | None = None
        self.totals: RunTotals | None = None
        self.fetchers: dict[str, Fetcher] = {}

    def finished(self, code: int) -> None:
        self.ended_at = self._clock()
        self.exit_code = code
        if code == 0:
            self.last_success = self.ended_at

    def collect(self) -> Iterable[Metric]:
        yield from self._requests()
        if self.totals is not None:
            yield from self._contacts(self.totals)
        now = self.ended_at if self.ended_at is not None else self._clock()
        yield self._gauge(
            "run_start_timestamp_seconds", "When the run started (unix)", self.started_at
        )
        yield self._gauge(
            "run_duration_seconds", "Seconds the run has taken", now - self.started_at
        )
        if self.exit_code is not None:
            yield self._gauge(
                "run_exit_code", "Exit code of the run, set at its end", self.exit_code
            )
        if self.last_success is not None:
            yield self._gauge(
                "last_success_timestamp_seconds",
                "End of the last run that exited 0 (unix)",
                self.last_success,
            )

    def _requests(self) -> Iterable[Metric]:
        labels = ["identity", "shard"]
        sent = CounterMetricFamily(
            "sar_bulk_requests_sent", "Requests sent to the org (every attempt)", labels=labels
        )
        ended = CounterMetricFamily(
            "sar_bulk_requests",
            "Requests by outcome (sent minus these: final errors and requests in flight)",
            labels=[*labels, "outcome"],
        )
        throttled = CounterMetricFamily(
            "sar_bulk_throttled",
            "429 answers by service-protection limit",
            labels=[*labels, "limit"],
        )
        retries = CounterMetricFamily(
            "sar_bulk_retries", "Transient faults tried again after a backoff", labels=labels
        )
        pace = GaugeMetricFamily(
            "sar_bulk_pace_requests_per_second", "The throttle's current pace", labels=labels
        )
        cap = GaugeMetricFamily(
            "sar_bulk_concurrency_limit", "Requests allowed in flight at once", labels=labels
        )
        pause = GaugeMetricFamily(
            "sar_bulk_throttle_pause_seconds", "Seconds until the 429 gate opens", labels=labels
        )
        for identity, fetcher in self.fetchers.items():
            key = [identity, self.shard]
            stats, throttle = fetcher.stats, fetcher.throttle
            sent.add_metric(key, stats.requests)
            ended.add_metric([*key, "ok"], stats.ok)
            ended.add_metric([*key, "throttled"], stats.throttled)
            ended.add_metric([*key, "fault"], stats.faults)
            limits = dict.fromkeys(_KNOWN_LIMITS, 0) | throttle.limits_hit
            for limit, count in sorted(limits.items()):
                throttled.add_metric([*key, limit], count)
            retries.add_metric(key, stats.retries)
            pace.add_metric(key, throttle.rate)
            cap.add_metric(key, throttle.concurrency)
            pause.add_metric(key, throttle.gate_closed_for)
        yield from (sent, ended, throttled, retries, pace, cap, pause)

    def _contacts(self, totals: RunTotals) -> Iterable[Metric]:
        contacts = CounterMetricFamily(
            "sar_bulk_contacts", "Contacts by how they ended", labels=["shard", "state"]
        )
        for state, count in (
            ("done", totals.succeeded),
            ("failed", totals.failed),
            ("skipped", totals.skipped_done),
            ("rejected", totals.rejected),
            ("duplicate", totals.duplicates),
        ):
            contacts.add_metric([self.shard, state], count)
        yield contacts
        yield self._counter(
            "interactions", "Interactions written into dossiers", totals.interactions
        )
        yield self._counter("written_bytes", "Bytes of dossiers written", totals.bytes_written)

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(f"sar_bulk_{name}", documentation, labels=["shard"])
        family.add_metric([self.shard], value)
        return family

    def _counter(self, name: str, documentation: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(f"sar_bulk_{name}", documentation, labels=["shard"])
        family.add_metric([self.shard], value)
        return family


class _Outcome(Protocol):
    @property
    def code(self) -> int: ...


_R = TypeVar("_R", bound=_Outcome)


class RunMetrics:
    """One run's registry, its endpoint and its textfile."""

    def __init__(self, settings: MetricsSettings, *, shard: Shard | None) -> None:
        self.settings = settings
        self.collector = RunCollector(shard=str(shard) if shard is not None else "all")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def watch(
        self, *, totals: RunTotals, fetcher: Fetcher, identity: str = DEFAULT_IDENTITY
    ) -> None:
        """Read these from now on (one ``fetcher`` per identity; the run's ``totals``)."""
        self.collector.totals = totals
        self.collector.fetchers[identity] = fetcher

    async def start(self) -> None:
        """Serve ``/metrics`` on the run's loop, if a port was asked for."""
        port = self.settings.port
        if port is None:
            return
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self.registry))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"--metrics-port {port}: cannot listen on {self.settings.host}:{port} "
                f"({exc.strerror or exc}); choose another port"
            ) from None
        self._runner = runner
        self.port = _bound_port(runner) or port
        _log.info("metrics.serving", host=self.settings.host, port=self.port, path="/metrics")

    async def stop(self, code: int | None) -> None:
        """End the run: stop serving, write the textfile (``code`` ``None``: it crashed)."""
        if code is not None:
            self.collector.finished(code)
        try:
            if self.settings.textfile is not None:
                await asyncio.to_thread(self._write_textfile, self.settings.textfile)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None

    def _write_textfile(self, path: Path) -> None:
        if self.collector.last_success is None:
            self.collector.last_success = _previous_success(path, self.collector)
        try:
            write_to_textfile(str(path), self.registry)
        except OSError as exc:
            # The run's own result stands; the missing file is what monitoring will notice.
            _log.error("metrics.textfile_failed", path=str(path), error=exc.strerror or str(exc))


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def _previous_success(path: Path, collector: RunCollector) -> float | None:
    """The last-success time the previous run of this shard left in ``path``, if any.

    Only a regular file is read, never through a link, and only its first ``_MAX_PREVIOUS``
    bytes: a FIFO planted at the name would block the end of the run until the pod's deadline,
    and a link would be followed anywhere. The new file replaces either (a rename).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # no earlier file (the first run), or a link: nothing to carry over
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, _MAX_PREVIOUS).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # not one we can read
    finally:
        os.close(fd)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("shard") == collector.shard:
                    value = float(sample.value)
                    return value if math.isfinite(value) else None
    except ValueError:
        return None  # not a file we wrote (or a torn one): nothing to carry over
    return None


async def run_with_metrics(
    settings: MetricsSettings,
    *,
    shard: Shard | None,
    run: Callable[[RunMetrics | None], Awaitable[_R]],
    error_code: Callable[[BaseException], int | None] = lambda error: None,
) -> _R:
    """Run ``run`` with its metrics served and written around it (``None`` when not asked).

    ``error_code`` gives the exit code of a run that ends in an error (the command's own
    mapping, ``runner.exit_code_for``): a night that ends with exit 2 (an empty contacts file,
    say) must show it in the textfile too, not leave ``run_exit_code`` out.
    """
    if not settings.enabled:
        return await run(None)
    metrics = RunMetrics(settings, shard=shard)
    await metrics.start()
    code: int | None = None
    try:
        outcome = await run(metrics)
        code = outcome.code
        return outcome
    except BaseException as error:
        code = error_code(error)
        raise
    finally:
        await metrics.stop(code)
