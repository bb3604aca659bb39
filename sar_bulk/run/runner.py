"""Wire one run together: session, tokens, pre-flight, throttle, engine, progress, report.

Usage::

    code = await execute_run(config, credential, progress_out=sys.stderr)

This is the one place that owns the run's resources: the single ``aiohttp.ClientSession``, the
credential (closed once at the end), the progress task; the caller's ``StopSignals`` are
pointed at its engine while it runs. Everything it builds
is passed in to the parts below it, so tests can build the same parts around a simulator.

Before the first request it checks ``--out`` and ``--state`` (``paths.py``), creates the output
folder (0700) and locks it (``run_lock.py``): a run that cannot write its results, or that
would collide with another run, costs the org nothing. Every token the credential issues is
registered with the process's redactor (``logs.REDACTOR``) the moment it is handed out, so a
server that echoes it back cannot make it reach a log, the report, the state or the terminal.

Identities: without ``[[identities]]`` the run has one, from ``--auth``; with them each gets its
own credential, token cache, throttle, fetcher and source instances, is probed on its own, and
the engine sees one ``PooledSource`` per source that routes each contact to one identity
(``run/identities.py``). The report has a section per identity either way.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog
from aiohttp import ClientSession
from azure.core.credentials_async import AsyncTokenCredential

from sar_bulk.config import RunConfig
from sar_bulk.dataverse.auth import AuthKind, TokenProvider, build_credential
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.preflight import Outcome, probe_sources
from sar_bulk.dataverse.throttle import MAX_CONCURRENCY, Throttle, ThrottleSettings
from sar_bulk.errors import ConfigError, CredentialError, InputError, OutputError
from sar_bulk.logs import REDACTOR, scrub
from sar_bulk.output.target import OutputTarget
from sar_bulk.run.engine import Engine, RunResult, run_id_for
from sar_bulk.run.identities import Identity, IdentityPool, PooledSource, identity_environ
from sar_bulk.run.metrics import DEFAULT_IDENTITY, RunMetrics
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
from sar_bulk.run.stop_signals import StopSignals
from sar_bulk.sources.base import SourceDeps
from sar_bulk.sources.interactions import InteractionsSource
from sar_bulk.sources.registry import build_many

__all__ = ["ExitCode", "RunOutcome", "execute_run", "exit_code_for"]

_log = structlog.get_logger("sar_bulk.run")


class ExitCode:
    OK = 0
    INCOMPLETE = 1
    USAGE = 2
    REFUSED = 3
    SIGINT = 130
    SIGTERM = 143


_SIGNAL_EXIT = {"SIGINT": ExitCode.SIGINT, "SIGTERM": ExitCode.SIGTERM}
# Longest wait for the store to take the report once a signal stopped the run.
_REPORT_AFTER_SIGNAL = 5.0


def exit_code_for(error: BaseException) -> int | None:
    """The exit code of a command that ``error`` ends (None: it does not end in an exit code).

    A usage error is 2, a refused credential 3, Ctrl-C 130; any other error 1, which is also
    what Python exits with when an unexpected one ends the process.
    """
    if isinstance(error, (ConfigError, InputError)):
        return ExitCode.USAGE
    if isinstance(error, CredentialError):
        return ExitCode.REFUSED
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.SIGINT
    if isinstance(error, Exception):
        return ExitCode.INCOMPLETE
    return None


class RedactingTokenProvider(TokenProvider):
    """A ``TokenProvider`` that tells the process's redactor every token it hands out."""

    __slots__ = ("_told",)

    async def token(self) -> str:
        value = await super().token()
        # Asked for every request: tell the redactor only what it has not heard from us yet.
        if value is not getattr(self, "_told", None):
            REDACTOR.add(value)
            self._told = value
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
    credential: AsyncTokenCredential | None,
    *,
    credential_name: str,
    progress_out: TextIO | None,
    out: TextIO = sys.stdout,
    signals: StopSignals | None = None,
    metrics: RunMetrics | None = None,
    environ: Mapping[str, str] | None = None,
    make_credential: CredentialFactory = build_credential,
    output: OutputTarget | None = None,
) -> RunOutcome:
    """Run ``config`` to the end and return its exit code; credential and output closed here.

    With ``[[identities]]`` in the config each identity's credential is built here, by
    ``make_credential`` from ``environ`` (default: the process's), and ``credential`` may be None.

    ``output`` is the blob container of ``config.blob``, or the folder ``--out`` when a
    ``--work`` folder stages the dossiers (None for a folder ``--out`` alone). It is checked
    before the org is: a container that does not answer or refuses the credential ends
    the run with exit 3 before any request to the org, like an org that cannot be reached. Once
    the run is under way, a store that stops answering fails the contacts it could not take
    (exit 1, each with the reason), and the next run resumes them.

    ``signals``: SIGINT/SIGTERM stop the run gracefully while it runs (the command line's
    ``StopSignals``); without it a signal has its default action.
    """
    try:
        return await _execute(
            config,
            credential,
            credential_name=credential_name,
            progress_out=progress_out,
            out=out,
            signals=signals,
            metrics=metrics,
            environ=os.environ if environ is None else environ,
            make_credential=make_credential,
            output=output,
        )
    finally:
        if output is not None:
            await output.close()


async def _execute(
    config: RunConfig,
    credential: AsyncTokenCredential | None,
    *,
    credential_name: str,
    progress_out: TextIO | None,
    out: TextIO,
    signals: StopSignals | None,
    metrics: RunMetrics | None,
    environ: Mapping[str, str],
    make_credential: CredentialFactory,
    output: OutputTarget | None,
) -> RunOutcome:
    started_at = datetime.now(UTC)
    started = time.monotonic()
    run_id = run_id_for(started_at)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    shard = str(config.shard) if config.shard else None
    try:
        # Before any request and before any folder: a run that cannot write stops here.
        published = config.publish_folder
        await asyncio.to_thread(check_run_paths, config.out, config.state, published)
        await asyncio.to_thread(
            create_private_folder, config.out, "--out" if published is None else "--work"
        )
        locks = [await asyncio.to_thread(RunLock.for_folder, config.out, shard=shard)]
        if published is not None:
            # The folder --out too: another run staging in another --work folder would
            # publish the same contacts there and remove this run's copies as leftovers.
            try:
                await asyncio.to_thread(create_private_folder, published)
                locks.append(await asyncio.to_thread(RunLock.for_folder, published, shard=shard))
            except BaseException:
                locks[0].release()
                raise
    except BaseException:
        if credential is not None:
            await credential.close()
        raise
    try:
        return await _locked_run(
            config,
            credential,
            credential_name=credential_name,
            progress_out=progress_out,
            out=out,
            signals=signals,
            run_id=run_id,
            started_at=started_at,
            started=started,
            metrics=metrics,
            environ=environ,
            make_credential=make_credential,
            output=output,
        )
    finally:
        for lock in reversed(locks):
            lock.release()


async def _locked_run(
    config: RunConfig,
    credential: AsyncTokenCredential | None,
    *,
    credential_name: str,
    progress_out: TextIO | None,
    out: TextIO,
    signals: StopSignals | None,
    run_id: str,
    started_at: datetime,
    started: float,
    metrics: RunMetrics | None,
    environ: Mapping[str, str],
    make_credential: CredentialFactory,
    output: OutputTarget | None,
) -> RunOutcome:
    loop = asyncio.get_running_loop()
    # The dates in words: an MM-DD range misread as DD-MM shows in the first line.
    _log.info("run.started", dates=config.dates.in_words(), out=str(config.out))
    plans = await _identity_plans(config, credential, credential_name, environ, make_credential)
    every_tokens = [
        RedactingTokenProvider(plan.credential, config.org.scope, describe=plan.describe)
        for plan in plans
    ]
    timeouts = Timeouts(request=config.timeout)
    # Pointed at the engine once it exists, released only when the report and the summary are
    # out; the caller removes the handlers after its own finishing (StopSignals).
    try:
        try:
            if output is not None:
                try:
                    await output.prepare()
                except OutputError as exc:
                    print(f"sar-bulk: {exc}", file=sys.stderr)
                    return RunOutcome(ExitCode.REFUSED, str(exc), None)
            async with create_session(timeouts, pool_size=_pool_size(plans)) as session:
                identities = [
                    _identity(config, plan, tokens, session, timeouts, loop)
                    for plan, tokens in zip(plans, every_tokens, strict=True)
                ]
                chosen, message = await _choose_sources(config, identities)
                if chosen is None:
                    message = scrub(message)
                    print(f"sar-bulk: {message}", file=sys.stderr)
                    return RunOutcome(ExitCode.REFUSED, message, None)
                pool = IdentityPool(tuple(identities))
                engine = Engine(config, pool.sources(chosen), run_id=run_id, target=output)
                if metrics is not None:  # served and written around the run: run_with_metrics
                    for identity in identities:
                        metrics.watch(
                            totals=engine.totals, fetcher=identity.fetcher, identity=identity.name
                        )
                if signals is not None:
                    signals.watch(engine)
                progress_task = _start_progress(engine, pool, progress_out, config.contacts)
                try:
                    result = await engine.run()
                except (ConfigError, InputError):
                    raise  # a usage error (another run holds the folder): nothing ran to report
                except Exception as exc:
                    # Whatever broke, leave a report that says so and what was done before it.
                    crashed = RunResult(engine.totals, engine.column, crashed=exc)
                    document = _report(config, run_id, crashed, pool, started_at, 0.0)
                    document |= _sources_report(engine, pool)
                    written = await asyncio.to_thread(_write_reports, config, run_id, document)
                    await _upload_report(output, written)
                    raise
                finally:
                    if progress_task is not None:
                        progress_task.cancel()
                        await asyncio.gather(progress_task, return_exceptions=True)
        finally:
            for tokens in every_tokens:
                await tokens.close()
        seconds = time.monotonic() - started
        document = _report(config, run_id, result, pool, started_at, seconds)
        document |= _sources_report(engine, pool)
        report = await asyncio.to_thread(_write_reports, config, run_id, document)
        stats = pool.stats
        summary = scrub(
            summary_line(
                result.totals,
                requests=stats.requests,
                throttled=stats.throttled,
                seconds=seconds,
                interrupted=result.interrupted_by,
            )
        )
        code = _exit_code(result)
        print(summary, file=out)
        print(f"report: {report}", file=out)
        if output is not None:
            # Stopped by a signal, the pod is killed soon after (60 s grace): a store that
            # stalls must not keep the process past it only to hold on to a copy of the report.
            limit = _REPORT_AFTER_SIGNAL if result.interrupted_by is not None else None
            if await _upload_report(output, report, limit):
                print(f"report: {output.description}/{report.name}", file=out)
            elif code == ExitCode.OK:
                code = ExitCode.INCOMPLETE
        if result.stopped_by is not None:
            print(f"sar-bulk: run stopped: {scrub(str(result.stopped_by))}", file=sys.stderr)
        _log.info("run.finished", exit_code=code, seconds=round(seconds, 1))
        return RunOutcome(code, summary, report)
    finally:
        if signals is not None:
            signals.release()


# --- identity pool (issue 11): one set of tokens, throttle, fetcher and sources per identity.


# Builds one identity's credential from its kind and its own environment (a seam for tests).
CredentialFactory = Callable[[AuthKind, Mapping[str, str]], AsyncTokenCredential]


@dataclass(frozen=True, slots=True)
class _Plan:
    """One identity before the session: its name, credential and throttle settings."""

    name: str
    credential: AsyncTokenCredential
    describe: str  # how messages name its credential
    throttle: ThrottleSettings


async def _identity_plans(
    config: RunConfig,
    credential: AsyncTokenCredential | None,
    credential_name: str,
    environ: Mapping[str, str],
    make_credential: CredentialFactory,
) -> list[_Plan]:
    """Without ``[[identities]]`` the one credential given; else one per table (the one given,
    if any, is closed unused). A missing variable is a ``ConfigError`` naming the identity."""
    if not config.identities:
        if credential is None:
            raise ConfigError("no credential: give --auth, or [[identities]] in --config")
        return [_Plan(DEFAULT_IDENTITY, credential, credential_name, config.throttle)]
    if credential is not None:
        await credential.close()
    plans: list[_Plan] = []
    try:
        for spec in config.identities:
            try:
                own = identity_environ(spec, environ)
                made = await asyncio.to_thread(make_credential, spec.auth, own)
            except ConfigError as exc:
                raise ConfigError(
                    f"identity {spec.name!r}: {exc} (map them under env in its [[identities]] "
                    "table)"
                ) from None
            settings = replace(
                config.throttle,
                rate=spec.rate if spec.rate is not None else config.throttle.rate,
                concurrency=(
                    spec.concurrency
                    if spec.concurrency is not None
                    else config.throttle.concurrency
                ),
            )
            describe = f"identity {spec.name} ({type(made).__name__})"
            plans.append(_Plan(spec.name, made, describe, settings))
    except BaseException:
        for plan in plans:
            await plan.credential.close()
        raise
    return plans


def _identity(
    config: RunConfig,
    plan: _Plan,
    tokens: TokenProvider,
    session: ClientSession,
    timeouts: Timeouts,
    loop: asyncio.AbstractEventLoop,
) -> Identity:
    """One identity's own HTTP, throttle, fetcher and source instances."""
    http = OrgHttp(
        session, config.org, tokens, timeouts=timeouts, max_answer_bytes=config.max_answer_bytes
    )
    client = DataverseClient(http, max_pages=config.max_pages)
    throttle = Throttle(plan.throttle, clock=loop.time)
    fetcher = Fetcher(client, throttle, config.retry, org_hint=lambda: http.dop_hint)
    deps = SourceDeps(
        http=http,
        fetcher=fetcher,
        settings=config.source_settings,
        now=lambda: datetime.now(UTC),
        clock=loop.time,
        sleep=asyncio.sleep,
    )
    sources = {source.name: source for source in build_many(config.sources, deps)}
    return Identity(plan.name, tokens, http, throttle, fetcher, sources)


async def _choose_sources(
    config: RunConfig, identities: list[Identity]
) -> tuple[list[str] | None, str]:
    """Probe every identity's sources; the names the run uses, or None and why nothing runs.

    ``auto`` keeps every available source, a list given by name must be available in full.
    With several identities, one whose token is refused, or that lacks a source the run uses,
    is dropped (one log line) and the others go on; an org-wide stop (unreachable, say) stops
    the run as it does with one identity.
    """
    checks = await asyncio.gather(
        *(
            probe_sources(list(i.sources.values()), credential_name=i.tokens.credential_name)
            for i in identities
        )
    )
    for identity, check in zip(identities, checks, strict=True):
        identity.check = check
        for _ in check.probes:  # each probe call is in the org's window too
            identity.throttle.count_request()
        identity.throttle.on_success(check.dop_hint or identity.http.dop_hint)
        if check.throttled is not None:
            # A probe met a 429: nothing of this identity may go before its Retry-After.
            identity.throttle.on_throttled(check.throttled)
    if len(identities) == 1:
        check = checks[0]
        if not check.can_run:
            return None, check.message
        available = set(check.available)
        if config.sources is not None and not available.issuperset(config.sources):
            return None, f"not every source asked for can run: {check.message}"
        chosen = [name for name in identities[0].sources if name in available]
        _log.info("sources.chosen", sources=chosen, said=check.message)
        return chosen, check.message
    for check in checks:
        if check.stop is not None and check.outcome is not Outcome.TOKEN_REFUSED:
            return None, check.message  # about the org, not one identity
    for identity, check in zip(identities, checks, strict=True):
        if not check.can_run:
            _drop_at_start(identity, check.message)
    live = [i for i in identities if i.live]
    offered = {name for i in live if i.check for name in i.check.available}
    wanted = set(config.sources) if config.sources is not None else offered
    for identity in live:
        lacking = sorted(wanted - set(identity.check.available if identity.check else ()))
        if lacking:
            said = identity.check.message if identity.check else ""
            _drop_at_start(identity, f"cannot use source(s) {', '.join(lacking)}: {said}")
    if not any(i.live for i in identities):
        why = "; ".join(f"{i.name}: {i.dropped}" for i in identities)
        return None, f"no identity can run: {why}"
    chosen = [name for name in identities[0].sources if name in wanted]
    _log.info("sources.chosen", sources=chosen, identities=[i.name for i in identities if i.live])
    return chosen, ""


def _pool_size(plans: Sequence[_Plan]) -> int:
    """Connections for the run's one session: every identity's largest concurrency cap.

    Dataverse counts each identity's concurrent requests on its own, so N identities may have
    N times 52 in flight; a smaller pool would make one identity's requests wait for another's
    connections (and that wait counts against their time limit)."""
    return sum(plan.throttle.concurrency or MAX_CONCURRENCY for plan in plans)


def _drop_at_start(identity: Identity, why: str) -> None:
    identity.dropped = why
    _log.warning("identity.dropped", identity=identity.name, why=why, at="pre-flight")


def _sources_report(engine: Engine, pool: IdentityPool) -> dict[str, Any]:
    """The report's word on sources: what each probe said, what ran, what was replaced."""
    repeats = sum(
        s.repeats
        for pooled in engine.sources
        if isinstance(pooled, PooledSource)
        for s in pooled.instances()
        if isinstance(s, InteractionsSource)
    )
    first = next((i for i in pool.identities if i.live), pool.identities[0])
    probes = first.check.probes if first.check is not None else ()
    return {
        "sources": [
            {"source": p.source, "availability": p.availability.value, "detail": p.detail}
            for p in probes
        ],
        "sources_used": [s.name for s in engine.sources],
        "parts": [p.key for p in engine.parts],
        "state_fingerprint": engine.fingerprint,
        "replaced_dossiers": engine.replaced,
        "replaced_count": engine.replaced_count,
        "kept_other_question": engine.refused_count,
        "repeated_rows": repeats,
        "identities": pool.report(),
    }


async def _upload_report(
    output: OutputTarget | None, report: Path, limit: float | None = None
) -> bool:
    """Put the report written in the work folder next to the dossiers too; False if it failed
    or took longer than ``limit`` seconds."""
    if output is None:
        return True
    deadline = asyncio.timeout(limit)
    try:
        body = await asyncio.to_thread(report.read_bytes)
        async with deadline:
            await output.put_report(report.name, body)
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        # Ours only when our limit expired; else the store's own timeout, said as it is.
        why = (
            f"{output.description} did not take it within {limit:g} s of the stop"
            if limit is not None and deadline.expired()
            else scrub(str(exc))
        )
        print(f"sar-bulk: the report stays only at {report}: {why}", file=sys.stderr)
        return False
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
    pool: IdentityPool,
    started_at: datetime,
    seconds: float,
) -> dict[str, Any]:
    totals = result.totals
    stats = pool.stats
    throttles = [i.throttle for i in pool.identities]
    limits: dict[str, int] = {}
    for throttle in throttles:
        for limit, count in throttle.limits_hit.items():
            limits[limit] = limits.get(limit, 0) + count
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
        # The run's: with several identities the sums (each identity's are under "identities").
        "throttle": {
            "dop_hint": next((t.dop_hint for t in throttles if t.dop_hint), None),
            "final_rate": round(sum(t.rate for t in throttles), 3),
            "configured_rate": sum(t.settings.rate for t in throttles),
            "final_concurrency": sum(t.concurrency for t in throttles),
            "limits_hit": limits,
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


def _start_progress(
    engine: Engine, pool: IdentityPool, out: TextIO | None, contacts: str
) -> asyncio.Task[None] | None:
    if out is None:
        return None
    progress = Progress(
        engine.totals,
        pool.stats,
        out=out,
        clock=time.monotonic,
        paused=pool.paused_for,
        note=pool.describe,
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
