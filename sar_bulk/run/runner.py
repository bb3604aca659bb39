"""Wire one run together: session, tokens, pre-flight, throttle, engine, progress, report.

Usage::

    code = await execute_run(config, credential, progress_out=sys.stderr)

This is the one place that owns the run's resources: the single ``aiohttp.ClientSession``, the
credential (closed once at the end), the signal handlers, the progress task. Everything it builds
is passed in to the parts below it, so tests can build the same parts around a simulator.

Before the first request it checks ``--out`` and ``--state`` (``paths.py``), creates the output
folder (0700) and locks it (``run_lock.py``): a run that cannot write its results, or that
would collide with another run, costs the org nothing. Every token the credential issues is
registered with the process's redactor (``logs.REDACTOR``) the moment it is handed out, so a
server that echoes it back cannot make it reach a log, the report, the state or the terminal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog
from azure.core.credentials_async import AsyncTokenCredential

from sar_bulk.config import RunConfig
from sar_bulk.dataverse.auth import TokenProvider
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.preflight import SourcesCheck, probe_sources
from sar_bulk.dataverse.throttle import Throttle
from sar_bulk.errors import ConfigError, InputError, OutputError
from sar_bulk.logs import REDACTOR, scrub
from sar_bulk.output.target import OutputTarget
from sar_bulk.run.engine import Engine, RunResult, run_id_for
from sar_bulk.run.metrics import RunMetrics
from sar_bulk.run.paths import check_run_paths, create_private_folder
from sar_bulk.run.progress import Progress
from sar_bulk.run.report import (
    deadline_section,
    outcome_text,
    report_name,
    summary_line,
    write_reports,
)
from sar_bulk.run.run_lock import RunLock
from sar_bulk.sources.base import Source, SourceDeps
from sar_bulk.sources.interactions import InteractionsSource
from sar_bulk.sources.registry import build_many

__all__ = ["ExitCode", "RunOutcome", "execute_run"]

_log = structlog.get_logger("sar_bulk.run")


class ExitCode:
    OK = 0
    INCOMPLETE = 1
    USAGE = 2
    REFUSED = 3
    SIGINT = 130
    SIGTERM = 143


_SIGNAL_EXIT = {"SIGINT": ExitCode.SIGINT, "SIGTERM": ExitCode.SIGTERM}


class RedactingTokenProvider(TokenProvider):
    """A ``TokenProvider`` that tells the process's redactor every token it hands out."""

    __slots__ = ()

    async def token(self) -> str:
        value = await super().token()
        REDACTOR.add(value)
        return value

    async def refresh_after_rejection(self, rejected: str) -> str:
        value = await super().refresh_after_rejection(rejected)
        REDACTOR.add(value)
        return value


@dataclass(frozen=True, slots=True)
class RunOutcome:
    code: int
    summary: str
    report: Path | None


async def execute_run(
    config: RunConfig,
    credential: AsyncTokenCredential,
    *,
    credential_name: str,
    progress_out: TextIO | None,
    out: TextIO = sys.stdout,
    install_signal_handlers: bool = True,
    metrics: RunMetrics | None = None,
    output: OutputTarget | None = None,
) -> RunOutcome:
    """Run ``config`` to the end and return its exit code; credential and output closed here.

    ``output`` is the blob container of ``config.blob`` (None for a folder ``--out``). It is
    checked before the org is: a container that does not answer or refuses the credential ends
    the run with exit 3 before any request to the org, like an org that cannot be reached. Once
    the run is under way, a store that stops answering fails the contacts it could not take
    (exit 1, each with the reason), and the next run resumes them.
    """
    try:
        return await _execute(
            config,
            credential,
            credential_name=credential_name,
            progress_out=progress_out,
            out=out,
            install_signal_handlers=install_signal_handlers,
            metrics=metrics,
            output=output,
        )
    finally:
        if output is not None:
            await output.close()


async def _execute(
    config: RunConfig,
    credential: AsyncTokenCredential,
    *,
    credential_name: str,
    progress_out: TextIO | None,
    out: TextIO,
    install_signal_handlers: bool,
    metrics: RunMetrics | None,
    output: OutputTarget | None,
) -> RunOutcome:
    started_at = datetime.now(UTC)
    started = time.monotonic()
    run_id = run_id_for(started_at)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    shard = str(config.shard) if config.shard else None
    try:
        # Before any request and before any folder: a run that cannot write stops here.
        await asyncio.to_thread(check_run_paths, config.out, config.state)
        await asyncio.to_thread(create_private_folder, config.out)
        folder_lock = await asyncio.to_thread(RunLock.for_folder, config.out, shard=shard)
    except BaseException:
        await credential.close()
        raise
    try:
        return await _locked_run(
            config,
            credential,
            credential_name=credential_name,
            progress_out=progress_out,
            out=out,
            install_signal_handlers=install_signal_handlers,
            run_id=run_id,
            started_at=started_at,
            started=started,
            metrics=metrics,
            output=output,
        )
    finally:
        folder_lock.release()


async def _locked_run(
    config: RunConfig,
    credential: AsyncTokenCredential,
    *,
    credential_name: str,
    progress_out: TextIO | None,
    out: TextIO,
    install_signal_handlers: bool,
    run_id: str,
    started_at: datetime,
    started: float,
    metrics: RunMetrics | None,
    output: OutputTarget | None,
) -> RunOutcome:
    loop = asyncio.get_running_loop()
    # The dates in words: an MM-DD range misread as DD-MM shows in the first line.
    _log.info("run.started", dates=config.dates.in_words(), out=str(config.out))
    tokens = RedactingTokenProvider(credential, config.org.scope, describe=credential_name)
    timeouts = Timeouts(request=config.timeout)
    try:
        if output is not None:
            try:
                await output.prepare()
            except OutputError as exc:
                print(f"sar-bulk: {exc}", file=sys.stderr)
                return RunOutcome(ExitCode.REFUSED, str(exc), None)
        async with create_session(timeouts) as session:
            http = OrgHttp(
                session,
                config.org,
                tokens,
                timeouts=timeouts,
                max_answer_bytes=config.max_answer_bytes,
            )
            client = DataverseClient(http, max_pages=config.max_pages)
            throttle = Throttle(config.throttle, clock=loop.time)
            fetcher = Fetcher(client, throttle, config.retry, org_hint=lambda: http.dop_hint)
            sources, check = await _choose_sources(config, http, fetcher, credential_name)
            if not sources:
                message = scrub(check.message)
                print(f"sar-bulk: {message}", file=sys.stderr)
                return RunOutcome(ExitCode.REFUSED, message, None)
            for _ in check.probes:  # each probe call is in the org's window too
                throttle.count_request()
            throttle.on_success(check.dop_hint or http.dop_hint)
            engine = Engine(config, sources, run_id=run_id, target=output)
            if metrics is not None:  # served and written around the run: run_with_metrics
                metrics.watch(totals=engine.totals, fetcher=fetcher)
            restore = _install_signals(loop, engine) if install_signal_handlers else _noop
            progress_task = _start_progress(engine, fetcher, progress_out, config.contacts)
            try:
                result = await engine.run()
            except (ConfigError, InputError):
                raise  # a usage error (another run holds the folder, say): nothing ran to report
            except Exception as exc:
                # Whatever broke, leave a report that says so and what was done before it.
                crashed = RunResult(engine.totals, engine.column, crashed=exc)
                document = _report(config, run_id, crashed, fetcher, throttle, started_at, 0.0)
                document |= _sources_report(engine, check)
                written = await asyncio.to_thread(_write_reports, config, run_id, document)
                await _upload_report(output, written)
                raise
            finally:
                restore()
                if progress_task is not None:
                    progress_task.cancel()
                    await asyncio.gather(progress_task, return_exceptions=True)
    finally:
        await tokens.close()
    seconds = time.monotonic() - started
    document = _report(config, run_id, result, fetcher, throttle, started_at, seconds)
    document |= _sources_report(engine, check)
    report = await asyncio.to_thread(_write_reports, config, run_id, document)
    summary = scrub(
        summary_line(
            result.totals,
            requests=fetcher.stats.requests,
            throttled=fetcher.stats.throttled,
            seconds=seconds,
            interrupted=result.interrupted_by,
        )
    )
    code = _exit_code(result)
    print(summary, file=out)
    print(f"report: {report}", file=out)
    if output is not None:
        if await _upload_report(output, report):
            print(f"report: {output.description}/{report.name}", file=out)
        elif code == ExitCode.OK:
            code = ExitCode.INCOMPLETE
    if result.stopped_by is not None:
        print(f"sar-bulk: run stopped: {scrub(str(result.stopped_by))}", file=sys.stderr)
    _log.info("run.finished", exit_code=code, seconds=round(seconds, 1))
    return RunOutcome(code, summary, report)


async def _choose_sources(
    config: RunConfig, http: OrgHttp, fetcher: Fetcher, credential_name: str
) -> tuple[list[Source], SourcesCheck]:
    """Build the sources asked for and probe them: ``auto`` keeps every available one, a list
    given by name must be available in full (else nothing runs)."""
    loop = asyncio.get_running_loop()
    deps = SourceDeps(
        http=http,
        fetcher=fetcher,
        settings=config.source_settings,
        now=lambda: datetime.now(UTC),
        clock=loop.time,
        sleep=asyncio.sleep,
    )
    built = build_many(config.sources, deps)
    check = await probe_sources(built, credential_name=credential_name)
    if not check.can_run:
        return [], check
    available = set(check.available)
    if config.sources is not None and not available.issuperset(config.sources):
        return [], SourcesCheck(
            check.probes, f"not every source asked for can run: {check.message}"
        )
    chosen = [source for source in built if source.name in available]
    _log.info("sources.chosen", sources=[s.name for s in chosen], said=check.message)
    return chosen, check


def _sources_report(engine: Engine, check: SourcesCheck) -> dict[str, Any]:
    """The report's word on sources: what each probe said, what ran, what was replaced."""
    repeats = sum(s.repeats for s in engine.sources if isinstance(s, InteractionsSource))
    return {
        "sources": [
            {"source": p.source, "availability": p.availability.value, "detail": p.detail}
            for p in check.probes
        ],
        "sources_used": [s.name for s in engine.sources],
        "parts": [p.key for p in engine.parts],
        "state_fingerprint": engine.fingerprint,
        "replaced_dossiers": engine.replaced,
        "replaced_count": engine.replaced_count,
        "kept_other_question": engine.refused_count,
        "repeated_rows": repeats,
    }


async def _upload_report(output: OutputTarget | None, report: Path) -> bool:
    """Put the report written in the work folder next to the dossiers too; False if it failed."""
    if output is None:
        return True
    try:
        body = await asyncio.to_thread(report.read_bytes)
        await output.put_report(report.name, body)
    except (OutputError, OSError) as exc:
        print(f"sar-bulk: the report stays only at {report}: {scrub(str(exc))}", file=sys.stderr)
        return False
    return True


def _write_reports(config: RunConfig, run_id: str, document: dict[str, Any]) -> Path:
    name = report_name(str(config.shard) if config.shard else None)
    return write_reports(config.out, name, run_id, document)


def _exit_code(result: RunResult) -> int:
    if result.stopped_by is not None:
        return ExitCode.REFUSED
    if result.interrupted_by is not None:
        return _SIGNAL_EXIT.get(result.interrupted_by, ExitCode.SIGINT)
    if result.totals.rejected or result.totals.failed:
        return ExitCode.INCOMPLETE
    return ExitCode.OK


def _report(
    config: RunConfig,
    run_id: str,
    result: RunResult,
    fetcher: Fetcher,
    throttle: Throttle,
    started_at: datetime,
    seconds: float,
) -> dict[str, Any]:
    totals = result.totals
    stats = fetcher.stats
    return {
        "run_id": run_id,
        "parameters": config.public_parameters(),
        "started_at": started_at.isoformat().replace("+00:00", "Z"),
        "finished_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "seconds": round(seconds, 3),
        "outcome": _outcome(result),
        "deadlines": deadline_section(totals),  # before the other lists: what is urgent
        "dates": config.dates.in_words(),
        "id_column": result.column,
        "totals": {
            "rows_read": totals.rows_read,
            "contacts": totals.contacts,
            "other_shards": totals.other_shards,
            "duplicates": totals.duplicates,
            "rejected": totals.rejected,
            "succeeded": totals.succeeded,
            "failed": totals.failed,
            "skipped_already_done": totals.skipped_done,
            "requests": stats.requests,
            "ok_requests": stats.ok,
            "throttled": stats.throttled,
            "retries": stats.retries,
            "faults": stats.faults,
            "interactions": totals.interactions,
            "rows": totals.rows,
            "bytes_written": totals.bytes_written,
        },
        "rejected_rows": totals.rejected_rows,
        "failed_contacts": totals.failed_contacts,
        "throttle": {
            "dop_hint": throttle.dop_hint,
            "final_rate": round(throttle.rate, 3),
            "configured_rate": config.throttle.rate,
            "final_concurrency": throttle.concurrency,
            "limits_hit": throttle.limits_hit,
        },
        "stopped_by": str(result.stopped_by) if result.stopped_by else None,
    }


def _outcome(result: RunResult) -> str:
    if result.crashed is not None:
        return f"crashed ({type(result.crashed).__name__}: {result.crashed})"
    if result.stopped_by is not None:
        return "stopped"
    if result.interrupted_by is not None:
        return f"interrupted ({result.interrupted_by})"
    return outcome_text(result.totals)


def _noop() -> None:
    return None


def _install_signals(loop: asyncio.AbstractEventLoop, engine: Engine) -> Callable[[], None]:
    """First SIGINT/SIGTERM: stop gracefully; a second one: exit at once."""
    signalled: list[str] = []

    def handler(name: str, code: int) -> None:
        if signalled:
            os._exit(code)  # the user asked twice: no more clean-up
        signalled.append(name)
        engine.request_stop(name)

    for sig, code in ((signal.SIGINT, ExitCode.SIGINT), (signal.SIGTERM, ExitCode.SIGTERM)):
        loop.add_signal_handler(sig, handler, sig.name, code)

    def restore() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return restore


def _start_progress(
    engine: Engine, fetcher: Fetcher, out: TextIO | None, contacts: str
) -> asyncio.Task[None] | None:
    if out is None:
        return None
    progress = Progress(
        engine.totals,
        fetcher.stats,
        out=out,
        clock=time.monotonic,
        paused=lambda: fetcher.paused_for,
    )

    async def show() -> None:
        counting = None
        if contacts != "-":
            # For the ETA: count the file's lines in a thread while the run starts.
            counting = asyncio.create_task(asyncio.to_thread(_count_lines, Path(contacts)))
            counting.add_done_callback(lambda t: _set_expected(progress, t))
        try:
            await progress.run()
        finally:
            if counting is not None:
                counting.cancel()

    return asyncio.create_task(show())


def _set_expected(progress: Progress, counting: asyncio.Task[int]) -> None:
    if not counting.cancelled() and counting.exception() is None:
        progress.expected = max(0, counting.result() - 1)  # less the header


def _count_lines(path: Path) -> int:
    # Only a regular file can be read twice: counting a pipe (``<(zcat ids.gz)``, a FIFO) would
    # take rows away from the reader, and even opening one can lose what its writer sent.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file: no line count for the ETA")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a regular file: no line count for the ETA")
    lines = 0
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines
