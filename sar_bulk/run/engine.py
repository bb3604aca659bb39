"""The bulk run: contacts in, one task per (contact, type), one dossier per contact out.

Usage::

    engine = Engine(config, fetcher, clock=loop.time)
    result = await engine.run()          # engine.request_stop("SIGTERM") from a signal handler

Data flows one way::

    CSV rows --(reader thread, batches)--> shard filter --> state claims (dedupe, resume)
        --> bounded queue --> ``window`` contact workers --> 40 type tasks each
        --> pages through the fetcher (throttle + retry) --> dossier writer --> state "done"

Memory stays flat however long the CSV is: rows are read in batches by a thread, the queue and
the number of contact workers are bounded, de-duplication lives in the SQLite state, and the
report keeps at most a fixed number of listed rows.

A contact is done when every requested type completed; its dossier is then assembled (in a
thread) and renamed into place before the state says "done", so a kill at any instant loses no
finished dossier. If a type fails for good, the contact is failed with a reason per type and no
dossier appears. A ``RunStopper`` (token refused, action missing, TLS failure) stops everything.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import BinaryIO, TypeVar

import structlog

from sar_bulk.config import RunConfig
from sar_bulk.dataverse.client import Query
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dossier.verify import VerifyResult, verify_dossier
from sar_bulk.dossier.writer import (
    DossierRequest,
    DossierWriter,
    dossier_path,
    remove_leftovers,
)
from sar_bulk.errors import DataverseError, DossierError, RunStopper, SarBulkError
from sar_bulk.run.contacts import ContactReader, ContactRow, RejectedRow, open_contacts
from sar_bulk.run.report import RunTotals
from sar_bulk.run.run_lock import RunLock
from sar_bulk.run.state import Claim, RunState
from sar_bulk.sources.interaction_types import InteractionType

__all__ = ["Engine", "RunResult", "run_id_for"]

_BATCH = 500
_E = TypeVar("_E", bound=BaseException)
_log = structlog.get_logger("sar_bulk.run.engine")


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: ``stopped_by`` the RunStopper that ended it early, ``crashed`` an
    unexpected error (the runner reports it, then raises it)."""

    totals: RunTotals
    column: str
    interrupted_by: str | None = None
    stopped_by: RunStopper | None = None
    crashed: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Work:
    number: int
    contact_id: str


class Engine:
    """Runs one configuration with one fetcher (one identity)."""

    def __init__(
        self,
        config: RunConfig,
        fetcher: Fetcher,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        open_stream: Callable[[str], BinaryIO] = open_contacts,
        run_id: str | None = None,
    ) -> None:
        self.config = config
        self.fetcher = fetcher
        self.totals = RunTotals()
        self.column = "not read yet"
        self._now = now
        self._open_stream = open_stream
        self.run_id = run_id or run_id_for(now())
        self._main: asyncio.Task[None] | None = None
        self._interrupted_by: str | None = None

    def request_stop(self, reason: str) -> None:
        """Stop admitting contacts and cancel in-flight work; ``run`` then returns."""
        if self._interrupted_by is None:
            self._interrupted_by = reason
            _log.warning("run.stopping", reason=reason)
        if self._main is not None:
            self._main.cancel()

    async def run(self) -> RunResult:
        """Process every contact; returns when done, stopped or interrupted."""
        config = self.config
        await asyncio.to_thread(_create_output, config.out)
        lock = await asyncio.to_thread(RunLock.acquire, config.state.with_suffix(".lock"))
        try:
            return await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> RunResult:
        config = self.config
        removed = await asyncio.to_thread(
            remove_leftovers, config.out, config.shard.owns if config.shard else None
        )
        if removed:
            _log.info("leftovers.removed", count=removed)
        state = await asyncio.to_thread(
            RunState.open,
            config.state,
            fingerprint=config.fingerprint,
            run_id=self.run_id,
            restart=config.restart,
        )
        stopped_by: RunStopper | None = None
        try:
            stream = await asyncio.to_thread(self._open_stream, config.contacts)
            try:
                reader = ContactReader(
                    stream, id_column=config.id_column, source_name=config.contacts
                )
                self.column = await asyncio.to_thread(reader.detect)
                _log.info("contacts.column", column=self.column)
                self._main = asyncio.create_task(self._process(reader, state))
                try:
                    await self._main
                except asyncio.CancelledError:
                    if self._interrupted_by is None:
                        raise  # cancelled from outside, not by request_stop
                except BaseExceptionGroup as group:
                    stopped_by = _find(group, RunStopper)
                    if stopped_by is None:
                        # Our own errors (a contacts file without one id, say) carry their
                        # message: raise them bare instead of as a task-group traceback.
                        raise _find(group, SarBulkError) or group from None
                    _log.error("run.stopped", error=str(stopped_by))
            finally:
                if config.contacts != "-":
                    stream.close()
        finally:
            await asyncio.to_thread(state.close)
        return RunResult(self.totals, self.column, self._interrupted_by, stopped_by)

    async def _process(self, reader: ContactReader, state: RunState) -> None:
        queue: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=self.config.window)
        async with asyncio.TaskGroup() as group:
            for _ in range(self.config.window):
                group.create_task(self._contact_worker(queue, state))
            await self._admit(reader, state, queue)
            for _ in range(self.config.window):
                await queue.put(None)

    async def _admit(
        self, reader: ContactReader, state: RunState, queue: asyncio.Queue[_Work | None]
    ) -> None:
        """Read the CSV in batches, claim the ids in the state, queue what needs doing."""
        rows: Iterator[ContactRow | RejectedRow] = iter(reader)
        number = 0
        while batch := await asyncio.to_thread(_next_batch, rows):
            self.totals.rows_read = reader.rows_read
            ids = self._accept(batch)
            if not ids:
                continue
            for contact_id in await asyncio.to_thread(self._claim, state, ids):
                number += 1
                await queue.put(_Work(number, contact_id))
        self.totals.rows_read = reader.rows_read

    def _accept(self, batch: list[ContactRow | RejectedRow]) -> list[str]:
        ids: list[str] = []
        shard = self.config.shard
        for row in batch:
            if isinstance(row, RejectedRow):
                self.totals.reject(row)
                _log.warning("contacts.rejected", line=row.line, reason=row.reason)
            elif shard is None or shard.owns(row.contact_id):
                ids.append(row.contact_id)
            else:
                self.totals.other_shards += 1
        return ids

    def _claim(self, state: RunState, ids: list[str]) -> list[str]:
        """Sort a batch into duplicates, already done and to do (runs in a thread)."""
        todo: list[str] = []
        for contact_id, (claim, done) in zip(ids, state.claim_many(ids), strict=True):
            if claim is Claim.DUPLICATE:
                self.totals.duplicates += 1
                continue
            self.totals.contacts += 1
            path = dossier_path(self.config.out, contact_id)
            if claim is Claim.DONE and done is not None and self._valid_answer(path):
                self.totals.skipped_done += 1
                continue
            if claim is Claim.DONE:
                state.reopen(contact_id)
            elif not self.config.restart and (found := self._valid_answer(path)):
                # Written by a run killed before it could record it: adopt, do not fetch again.
                state.mark_done(
                    contact_id,
                    dossier=path.name,
                    interactions=found.total_interactions or 0,
                    zip_bytes=path.stat().st_size,
                )
                self.totals.skipped_done += 1
                continue
            todo.append(contact_id)
        return todo

    def _valid_answer(self, path: Path) -> VerifyResult | None:
        """The verification of a valid dossier at ``path`` answering this run's question."""
        if not path.exists():
            return None
        result = verify_dossier(path)
        if not result.ok:
            _log.warning("dossier.invalid", dossier=path.name, problems=len(result.problems))
            return None
        return result if _matches(result, self.config) else None

    async def _contact_worker(self, queue: asyncio.Queue[_Work | None], state: RunState) -> None:
        while (work := await queue.get()) is not None:
            await self._contact(work, state)

    async def _contact(self, work: _Work, state: RunState) -> None:
        config = self.config
        # Interactions only until the engine fans out over parts (writer.sink(part)).
        request = DossierRequest.for_interactions(
            work.contact_id,
            config.types,
            config.org.base,
            date_from=config.dates.wire_from,
            date_to=config.dates.wire_to,
        )
        async with DossierWriter(config.out, request, now=self._now) as writer:
            async with asyncio.TaskGroup() as group:
                tasks = {
                    itype: group.create_task(self._fetch_type(work, itype, writer))
                    for itype in config.types
                }
            reasons = {itype.value: reason for itype, t in tasks.items() if (reason := t.result())}
            if reasons:
                await writer.abort()
                await self._record_failure(work, state, reasons)
                return
            # Once assembly starts, a thread renames the zip into place whatever happens to
            # this task: let it finish and record it even when the run is being stopped.
            finishing = asyncio.ensure_future(self._finish(writer, work, state))
            try:
                await asyncio.shield(finishing)
            except asyncio.CancelledError:
                await finishing
                raise

    async def _finish(self, writer: DossierWriter, work: _Work, state: RunState) -> None:
        try:
            summary = await writer.complete()
        except (SarBulkError, OSError) as exc:
            await self._record_failure(work, state, {"*": f"writing the dossier failed: {exc}"})
            return
        await asyncio.to_thread(
            state.mark_done,
            work.contact_id,
            dossier=summary.path.name,
            interactions=summary.total_interactions,
            zip_bytes=summary.zip_bytes,
        )
        self.totals.succeeded += 1
        self.totals.interactions += summary.total_interactions
        self.totals.bytes_written += summary.zip_bytes
        _log.info("contact.done", contact=work.contact_id, interactions=summary.total_interactions)

    async def _record_failure(self, work: _Work, state: RunState, reasons: dict[str, str]) -> None:
        await asyncio.to_thread(state.mark_failed, work.contact_id, reasons)
        self.totals.fail(work.contact_id, reasons)
        _log.warning("contact.failed", contact=work.contact_id, types=sorted(reasons))

    async def _fetch_type(
        self, work: _Work, itype: InteractionType, writer: DossierWriter
    ) -> str | None:
        """Fetch every page of one type into the writer; the reason it failed, or None."""
        config = self.config
        query = Query(
            work.contact_id,
            itype,
            date_from=config.dates.wire_from,
            date_to=config.dates.wire_to,
            top=config.page_size,
        )
        pair = self.fetcher.for_pair(work.number)
        try:
            async for page in self.fetcher.client.pages(query, fetch=pair.fetch):
                interactions = page.interactions
                del page  # the loop variable would keep a big page alive past its writing
                await writer.add_page(itype, interactions)
                del interactions
        except RunStopper:
            raise
        except DataverseError as exc:
            _log.warning(
                "type.failed",
                contact=work.contact_id,
                type=itype.value,
                status=exc.status,
                code=exc.code,
                error=type(exc).__name__,
            )
            return str(exc)
        except DossierError as exc:
            _log.warning("type.failed", contact=work.contact_id, type=itype.value, error=str(exc))
            return str(exc)
        return None


def _next_batch(rows: Iterator[ContactRow | RejectedRow]) -> list[ContactRow | RejectedRow]:
    return list(islice(rows, _BATCH))


def _create_output(out: Path) -> None:
    """Create the output folder readable by the owner only (mkdir's mode obeys the umask)."""
    if not out.exists():
        out.mkdir(parents=True)
        out.chmod(0o700)


def _matches(result: VerifyResult, config: RunConfig) -> bool:
    """Does the dossier answer the same question as this run (org, types, dates)?"""
    source = result.source or {}
    return (
        source.get("org_url") == config.org.base
        and source.get("date_from") == config.dates.wire_from
        and source.get("date_to") == config.dates.wire_to
        and sorted(result.interaction_types) == sorted(t.value for t in config.types)
    )


def run_id_for(now: datetime) -> str:
    """A run's id in logs, state and report: its start time and process."""
    return f"{now:%Y%m%dT%H%M%SZ}-{os.getpid()}"


def _find(group: BaseExceptionGroup[BaseException], kind: type[_E]) -> _E | None:
    """The first error of ``kind`` in a (nested) task-group error."""
    for error in group.exceptions:
        if isinstance(error, kind):
            return error
        if isinstance(error, BaseExceptionGroup) and (found := _find(error, kind)):
            return found
    return None
