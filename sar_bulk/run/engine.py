"""The bulk run: contacts in, one task per (contact, part), one dossier per contact out.

Usage::

    engine = Engine(config, sources)     # sources: registry.build(name, deps) for each name
    result = await engine.run()          # engine.request_stop("SIGTERM") from a signal handler

Data flows one way::

    CSV rows --(reader thread, batches)--> shard filter --> state claims (dedupe, resume)
        --> admission (window slot + alive slot) --> one task per contact
        --> one task per part: source.fetch(scope, part, writer.sink(part))
        --> dossier writer --> state "done" with the dossier's SHA-256

The engine knows parts, not what they hold: each ``Source`` names its parts and fetches them.
``window`` contacts fetch at once; a part that waits long (``scope.parked()``) lets its contact
give up its slot, and at most ``window + max_parked`` contacts are alive at all, so memory stays
flat however long the CSV is: rows are read in batches by a thread, admission blocks while the
bounds are full, de-duplication lives in the SQLite state, and the report keeps at most a fixed
number of listed rows.

A contact is done when every part completed; its dossier is then assembled (in a thread) and
renamed into place before the state says "done", so a kill at any instant loses no finished
dossier. If a part fails for good, the contact is failed with a reason per part key and no
dossier appears. A ``RunStopper`` (token refused, action missing, TLS failure) stops everything.

With a blob container as output (``target``, see ``sar_bulk/output``) the dossier is assembled
in the local work folder (``config.out``), then published: uploaded so that the blob appears
only complete, and recorded "done" with its SHA-256 and etag. A resume asks the container for
the blob's properties (no download, no request to the org) and skips the contact while etag and
SHA-256 are the recorded ones; a blob the state does not know is downloaded and verified once,
then adopted like a file on disk. A folder ``--out`` with ``--work`` is a target too (the
dossier is staged in the work folder and moved in whole, so no plaintext ever lands in the
output folder); a folder ``--out`` alone keeps the writer's own rename into place.

A complete dossier is never silently replaced: a valid one at the final name that answers
another question (sources, types, dates, org, tables) fails its contact unless ``--replace``,
and the report lists every dossier replaced. A done dossier is adopted on resume only while its
SHA-256 is the one the state recorded when it was written.

Nearest deadline first: when the CSV has a received-date column, contacts are admitted in order
of due date within a bounded look-ahead (``_lookahead``: ``window * 64`` claimed contacts, at
least one batch, at most 100,000), and contacts without a received date after those with one.
The whole CSV is not sorted: ten million rows cannot be held, and sorting in the state would
mean writing every pending contact to disk before the first one is fetched. So a contact due
tomorrow on the CSV's last line still waits for the rows before it to be read; its deadline is
in the state, and ``sar-bulk status`` shows it at risk while the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson
import structlog

from sar_bulk.config import RunConfig
from sar_bulk.dossier.encryption import ENCRYPTED_SUFFIX
from sar_bulk.dossier.format import INTERACTIONS, Subject, part_order, question_matches
from sar_bulk.dossier.verify import VerifyResult, file_sha256, verify_dossier
from sar_bulk.dossier.writer import (
    DossierRequest,
    DossierSummary,
    DossierWriter,
    HeldMemory,
    Question,
    dossier_path,
    remove_leftovers,
)
from sar_bulk.errors import (
    ConfigError,
    DataverseError,
    InputError,
    OutputError,
    RunStopper,
    SarBulkError,
)
from sar_bulk.guids import is_canonical_guid
from sar_bulk.output.target import OutputTarget
from sar_bulk.run.contacts import ContactReader, ContactRow, RejectedRow, open_contacts
from sar_bulk.run.deadlines import Deadline, latest_date
from sar_bulk.run.other_states import OtherStates
from sar_bulk.run.paths import create_private_folder
from sar_bulk.run.report import MAX_LISTED, DeadlineSummary, RunTotals
from sar_bulk.run.scope import Scope, Slots
from sar_bulk.run.state import Claim, DoneRecord, RunState
from sar_bulk.sources.base import Part, Source

__all__ = ["Engine", "RunResult", "run_id_for"]

_BATCH = 500
_LOOKUPS = 16  # blob property reads at once while claiming (container output)
# Look-ahead for nearest-deadline-first admission: claimed contacts held per window slot.
_LOOKAHEAD_PER_SLOT = 64
_LOOKAHEAD_MAX = 100_000
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
    contact_id: str
    replaces: bool = False  # a valid dossier answering another question is at the final name
    overwrites: bool = False  # something else is at the final blob name: publish replaces it
    deadline: Deadline | None = None
    name: str | None = None

    @property
    def subject(self) -> Subject:
        """Who asked and when, for the dossier (what the CSV told)."""
        deadline = self.deadline
        if deadline is None:
            return Subject(name=self.name)
        return Subject(self.name, deadline.received, deadline.due, deadline.extension_reason)

    def admission_key(self) -> tuple[int, int]:
        """Due date first; contacts without one after all that have one."""
        return (0, self.deadline.due.toordinal()) if self.deadline else (1, 0)


class Engine:
    """Runs one configuration over the given sources (sharing one identity's fetcher)."""

    def __init__(
        self,
        config: RunConfig,
        sources: Sequence[Source],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        open_stream: Callable[[str], BinaryIO] = open_contacts,
        run_id: str | None = None,
        target: OutputTarget | None = None,
    ) -> None:
        self.config = config
        # Where dossiers are published when it is not the work folder itself (a container, or
        # a folder --out given with --work).
        self.target = target if config.published_elsewhere else None
        # Did the container hold any dossier when the run started? If not, a contact the state
        # does not know cannot have one either: no need to ask the container about it.
        self._published_before = True
        # The other state files beside this run's (shards of another count), while it runs.
        self._others: OtherStates | None = None
        self.sources = tuple(sources)
        self._parts: tuple[tuple[Source, Part], ...] = tuple(
            (source, part) for source in self.sources for part in source.parts()
        )
        if not self._parts:
            raise ConfigError("no source has anything to fetch: check --sources and --types")
        keys = [part.key for _, part in self._parts]
        if len(set(keys)) != len(keys):
            raise ConfigError("two sources name the same part: " + ", ".join(sorted(keys)))
        self.question = _question(config, [part for _, part in self._parts])
        self.fingerprint = hashlib.sha256(
            orjson.dumps({"config": config.fingerprint, "parts": sorted(keys)})
        ).hexdigest()
        self.totals = RunTotals()
        self.column = "not read yet"
        self.replaced: list[str] = []  # contacts whose dossier was replaced (--replace)
        self.replaced_count = 0
        self.refused_count = 0  # contacts refused: a dossier answering another question is there
        self._now = now
        self._open_stream = open_stream
        self.run_id = run_id or run_id_for(now())
        self._main: asyncio.Task[None] | None = None
        self._interrupted_by: str | None = None
        self._held = HeldMemory()  # what all contacts hold in memory before assembly, bounded

    @property
    def parts(self) -> tuple[Part, ...]:
        """Every part each contact gets, in source order."""
        return tuple(part for _, part in self._parts)

    def request_stop(self, reason: str) -> None:
        """Stop admitting contacts and cancel in-flight work; ``run`` then returns."""
        if self._interrupted_by is None:
            self._interrupted_by = reason
            _log.warning("run.stopping", reason=reason)
        if self._main is not None:
            self._main.cancel()

    async def run(self) -> RunResult:
        """Process every contact; returns when done, stopped or interrupted.

        The caller holds the output folder's lock (``RunLock.for_folder``, as the runner does).
        """
        config = self.config
        if config.statement is None:
            # Once per run, not per contact: every dossier's answer says it is missing.
            _log.warning(
                "controller.statement_missing",
                hint="add a [controller] table to the --config file (sar-bulk init writes one); "
                "until then every answer says the controller's statement is missing",
            )
        await asyncio.to_thread(create_private_folder, config.out)
        owns = config.shard.owns if config.shard else None
        removed = await asyncio.to_thread(remove_leftovers, config.out, owns)
        if config.publish_folder is not None:
            # A copy into the folder --out that a kill cut short (LocalTarget's hidden name).
            removed += await asyncio.to_thread(remove_leftovers, config.publish_folder, owns)
        if removed:
            _log.info("leftovers.removed", count=removed)
        if self.target is not None:
            self._published_before = await _holds_dossiers(self.target)
            staged = await asyncio.to_thread(_remove_staged, config.out, owns)
            if staged:
                _log.info("staged.removed", count=staged)
        state = await asyncio.to_thread(
            RunState.open,
            config.state,
            fingerprint=self.fingerprint,
            run_id=self.run_id,
            restart=config.restart,
        )
        stopped_by: RunStopper | None = None
        if not config.restart:
            self._others = await asyncio.to_thread(
                OtherStates.beside, config.state, self.fingerprint
            )
        try:
            stream = await asyncio.to_thread(self._open_stream, config.contacts)
            try:
                reader = ContactReader(
                    stream,
                    id_column=config.id_column,
                    source_name=config.contacts,
                    received_column=config.received_column,
                    extension_column=config.extension_column,
                    name_column=config.name_column,
                    received_format=config.received_format,
                    today=latest_date(self._now()),  # the latest date anywhere (UTC+14)
                )
                self.column = await asyncio.to_thread(reader.detect)
                optional = reader.optional_columns
                _log.info("contacts.column", column=self.column, **optional)
                self._main = asyncio.create_task(self._process(reader, state))
                if self._interrupted_by is not None:
                    # The stop came while the run was starting (waiting for a state file
                    # another process writes, say): there was no task to cancel then.
                    self._main.cancel()
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
            if "received" in optional:
                self.totals.deadlines = await asyncio.to_thread(self._deadlines, state)
        finally:
            try:
                await asyncio.to_thread(state.close)
            finally:
                if self._others is not None:
                    await asyncio.to_thread(self._others.close)
            if config.encryptor is not None:
                await asyncio.to_thread(config.encryptor.close)  # its passphrase child process
        return RunResult(self.totals, self.column, self._interrupted_by, stopped_by)

    def _deadlines(self, state: RunState) -> DeadlineSummary:
        """This run's unanswered requests at the end (runs in a thread)."""
        counts, found = state.at_risk(self._now().date(), limit=MAX_LISTED)
        return DeadlineSummary.build(counts, found)

    async def _process(self, reader: ContactReader, state: RunState) -> None:
        """Admit contacts while the bounds allow, one task each (the group forgets ended ones).

        Claimed contacts wait in a heap of at most ``_lookahead`` entries (plus one batch),
        nearest due date first; the heap is refilled before each admission.
        """
        config = self.config
        slots = Slots(config.window, config.max_parked)
        sources = frozenset(source.name for source, _ in self._parts)
        lookahead = _lookahead(config.window)
        waiting: list[tuple[tuple[int, int], int, _Work]] = []
        async with asyncio.TaskGroup() as group:
            rows: Iterator[ContactRow | RejectedRow] = iter(reader)
            number = 0
            read = 0  # CSV order breaks ties, so without deadlines the order is the file's
            more = True
            while True:
                while more and len(waiting) < lookahead:
                    batch, unusable = await asyncio.to_thread(_next_batch, rows)
                    self.totals.rows_read = reader.rows_read
                    if unusable is not None:
                        self._accept(batch)  # the rows it is about: counted and logged first
                        raise unusable
                    if not batch:
                        more = False
                        break
                    accepted = self._accept(batch)
                    if not accepted:
                        continue
                    for work in await self._claims(state, accepted):
                        read += 1
                        heapq.heappush(waiting, (work.admission_key(), read, work))
                if not waiting:
                    break
                work = heapq.heappop(waiting)[2]
                number += 1
                await slots.admit()
                scope = Scope(work.contact_id, number, state, slots, sources)
                group.create_task(self._contact(work, scope, state))
            self.totals.rows_read = reader.rows_read

    def _accept(self, batch: list[ContactRow | RejectedRow]) -> list[ContactRow]:
        ids: list[ContactRow] = []
        shard = self.config.shard
        for row in batch:
            if isinstance(row, RejectedRow):
                self.totals.reject(row)
                _log.warning("contacts.rejected", line=row.line, reason=row.reason)
            elif shard is None or shard.owns(row.contact_id):
                ids.append(row)
            else:
                self.totals.other_shards += 1
        return ids

    async def _claims(self, state: RunState, rows: list[ContactRow]) -> list[_Work]:
        """What to fetch of a batch: from the state and the folder, or the container."""
        if self.target is None:
            return await asyncio.to_thread(self._claim, state, rows)
        claimed = await asyncio.to_thread(self._claim_state, state, rows)
        todo: list[_Work] = []
        # HEAD requests a few at a time: a resume of many contacts should not take one round
        # trip each in a row, nor open hundreds of connections at once.
        for start in range(0, len(claimed), _LOOKUPS):
            found = await asyncio.gather(
                *(self._check_blob(state, w, d) for w, d in claimed[start : start + _LOOKUPS])
            )
            todo.extend(work for work in found if work is not None)
        return todo

    def _claim_state(
        self, state: RunState, rows: list[ContactRow]
    ) -> list[tuple[_Work, DoneRecord | None]]:
        """Container output: duplicates out, each other row with its done record (a thread)."""
        claimed: list[tuple[_Work, DoneRecord | None]] = []
        deadlines = [row.deadline for row in rows]
        claims = state.claim_many(
            [row.contact_id for row in rows], deadlines if any(deadlines) else ()
        )
        for row, (claim, done) in zip(rows, claims, strict=True):
            if claim is Claim.DUPLICATE:
                self.totals.duplicates += 1
                continue
            self.totals.contacts += 1
            work = _Work(row.contact_id, deadline=row.deadline, name=row.name)
            claimed.append((work, done if claim is Claim.DONE else None))
        return claimed

    async def _check_blob(
        self, state: RunState, work: _Work, done: DoneRecord | None
    ) -> _Work | None:
        """Skip, adopt, refuse or fetch one contact, by what its blob's properties say."""
        assert self.target is not None
        contact_id = work.contact_id
        name = self._paths(contact_id)[0].name  # <id>.zip, or <id>.zip.age when encrypting
        if done is None and not self._published_before:
            return work  # publish refuses to overwrite if one appeared since
        try:
            found = await self.target.lookup(name)
            if (
                done is not None
                and found is not None
                and found.sha256 == done.sha256
                and (done.etag is None or found.etag == done.etag)
            ):
                self.totals.skipped_done += 1
                return None
            # Fetched or adopted from here. As with a folder, plain where this run encrypts
            # (or the reverse) is the user's call, never made silently. (Not asked for a done
            # contact: a resume of many would pay a second round trip each.)
            other = self._paths(contact_id)[1].name
            if await self.target.lookup(other) is not None:
                if self.config.replace:
                    if done is not None:
                        await asyncio.to_thread(state.reopen, contact_id)
                    return dataclasses.replace(work, replaces=True, overwrites=True)
                await asyncio.to_thread(
                    self._refuse_other_form,
                    state,
                    contact_id,
                    Path(other),
                    recorded=done is not None,
                )
                return None
            if done is not None:
                _log.warning(
                    "dossier.changed",
                    dossier=name,
                    why="the published dossier is missing or not the one recorded when it was "
                    "published; fetching again",
                )
                await asyncio.to_thread(state.reopen, contact_id)
                return dataclasses.replace(work, overwrites=found is not None)
            if found is None:
                return work
            if self._others is not None:
                record = await asyncio.to_thread(
                    self._recorded_elsewhere, contact_id, name, found.sha256, found.etag
                )
                if record is not None:
                    await asyncio.to_thread(
                        state.mark_done,
                        contact_id,
                        dossier=name,
                        interactions=record.interactions,
                        zip_bytes=found.size,
                        sha256=found.sha256,
                        etag=found.etag,
                    )
                    self.totals.skipped_done += 1
                    return None
            if self.config.encryptor:
                # Encrypted for others: it cannot be checked here, so it is written again (as
                # with a folder, only a dossier whose SHA-256 the state recorded is adopted).
                return dataclasses.replace(work, overwrites=True)
            # Published by a run killed before it could record it: verify the blob once.
            try:
                async with self.target.open_for_verify(name) as path:
                    result: VerifyResult | None = await asyncio.to_thread(verify_dossier, path)
            except OutputError as exc:
                _log.warning("dossier.invalid", dossier=name, error=str(exc))
                result = None
        except OutputError as exc:
            await self._record_failure(work, state, {"*": str(exc)})
            return None
        if result is None or not result.ok:
            return dataclasses.replace(work, overwrites=True)
        if question_matches(result.question, self.question):
            if self.config.restart:
                return dataclasses.replace(work, overwrites=True)
            await asyncio.to_thread(
                state.mark_done,
                contact_id,
                dossier=name,
                interactions=result.total_interactions or 0,
                zip_bytes=found.size,
                sha256=found.sha256,
                etag=found.etag,
            )
            self.totals.skipped_done += 1
            return None
        if self.config.replace:
            return dataclasses.replace(work, replaces=True, overwrites=True)
        reason = (
            f"{name} in {self.target.description} is a complete dossier answering another "
            f"question ({_difference(result.question or {}, self.question.as_json())}); it was "
            "left as it is. Give --replace to replace it, or choose another container or prefix"
        )
        await self._record_failure(work, state, {"*": reason})
        self.refused_count += 1
        return None

    def _claim(self, state: RunState, rows: list[ContactRow]) -> list[_Work]:
        """Sort a batch into duplicates, already done, refused and to do (runs in a thread)."""
        todo: list[_Work] = []
        ids = [row.contact_id for row in rows]
        deadlines = [row.deadline for row in rows]
        claims = state.claim_many(ids, deadlines if any(deadlines) else ())
        for row, (claim, done) in zip(rows, claims, strict=True):
            contact_id = row.contact_id
            work = _Work(contact_id, deadline=row.deadline, name=row.name)
            if claim is Claim.DUPLICATE:
                self.totals.duplicates += 1
                continue
            self.totals.contacts += 1
            path, other = self._paths(contact_id)
            if other.exists():
                # Plain where this run encrypts, or encrypted where it does not: which one the
                # recipient should get is the user's call, never made silently.
                if self.config.replace:
                    if claim is Claim.DONE:
                        state.reopen(contact_id)
                    todo.append(dataclasses.replace(work, replaces=True))
                else:
                    self._refuse_other_form(state, contact_id, other, recorded=done is not None)
                continue
            if claim is Claim.DONE and done is not None:
                if self._still_done(path, done):
                    self.totals.skipped_done += 1
                    continue
                # Missing, damaged or not the file this state wrote: never adopted, fetched again.
                state.reopen(contact_id)
                todo.append(work)
                continue
            if self._others is not None and self._adopt_recorded_elsewhere(state, contact_id, path):
                self.totals.skipped_done += 1
                continue
            found = self._valid(path)
            if found is None:
                todo.append(work)
                continue
            if question_matches(found.question, self.question):
                if self.config.restart:
                    todo.append(work)
                    continue
                # Written by a run killed before it could record it: adopt, do not fetch again.
                state.mark_done(
                    contact_id,
                    dossier=path.name,
                    interactions=found.total_interactions or 0,
                    zip_bytes=path.stat().st_size,
                    sha256=file_sha256(path),
                )
                self.totals.skipped_done += 1
            elif self.config.replace:
                todo.append(dataclasses.replace(work, replaces=True))
            else:
                reason = (
                    f"{path.name} is a complete dossier answering another question "
                    f"({_difference(found.question or {}, self.question.as_json())}); it was left "
                    "as it is. "
                    "Give --replace to replace it, or choose another output folder"
                )
                state.mark_failed(contact_id, {"*": reason})
                self.totals.fail(contact_id, {"*": reason})
                self.refused_count += 1
                _log.warning("dossier.kept", contact=contact_id, dossier=path.name)
        return todo

    def _recorded_elsewhere(
        self, contact_id: str, name: str, sha256: str, etag: str | None
    ) -> DoneRecord | None:
        """Another shard's record of exactly this dossier, under this run's question (a shard
        count changed between runs), or None (runs in a thread)."""
        assert self._others is not None
        return _matching(self._others.done(contact_id), name, sha256, etag)

    def _adopt_recorded_elsewhere(self, state: RunState, contact_id: str, path: Path) -> bool:
        """Adopt the dossier at ``path`` if another shard's state recorded exactly it: an
        encrypted one cannot be verified here and was fetched again (runs in a thread)."""
        assert self._others is not None
        records = self._others.done(contact_id)
        if not records or not _plain_file(path):
            return False  # (hashed only when another shard recorded the contact)
        try:
            digest = file_sha256(path)
            size = path.stat().st_size
        except OSError:
            return False
        record = _matching(records, path.name, digest, None)
        if record is None:
            return False
        state.mark_done(
            contact_id,
            dossier=path.name,
            interactions=record.interactions,
            zip_bytes=size,
            sha256=digest,
        )
        return True

    def _paths(self, contact_id: str) -> tuple[Path, Path]:
        """Where this run writes the contact's dossier, and where the other form would be."""
        plain = dossier_path(self.config.out, contact_id)
        encrypted = plain.with_name(plain.name + ENCRYPTED_SUFFIX)
        return (encrypted, plain) if self.config.encryptor else (plain, encrypted)

    def _refuse_other_form(
        self, state: RunState, contact_id: str, other: Path, *, recorded: bool
    ) -> None:
        if self.config.encryptor:
            reason = (
                f"{other.name} is an unencrypted dossier, but this run encrypts; it was left as "
                "it is. Give --replace to replace it by an encrypted one (the plain file is "
                "then removed), or choose another output folder"
            )
        else:
            reason = (
                f"{other.name} is an encrypted dossier, but this run does not encrypt; it was "
                "left as it is. Give --encrypt-to or --encrypt-passphrase-env as before, or "
                "--replace to replace it by a plain one"
            )
        if not recorded:
            state.mark_failed(contact_id, {"*": reason})
        # A recorded dossier keeps its row: a run asked the earlier way still adopts it.
        self.totals.fail(contact_id, {"*": reason})
        self.refused_count += 1
        _log.warning("dossier.kept", contact=contact_id, dossier=other.name)

    def _valid(self, path: Path) -> VerifyResult | None:
        """The verification of a valid dossier at ``path`` (any question), or None."""
        if not _plain_file(path):
            return None  # nothing there, or a link or FIFO planted: never adopted
        if self.config.encryptor:
            # Encrypted for others: this run cannot open it to check it. Only a dossier whose
            # SHA-256 the state recorded is adopted; one a killed run renamed into place just
            # before recording it is written again (the new file replaces it).
            _log.warning("dossier.unrecorded", dossier=path.name, why="fetched again")
            return None
        result = verify_dossier(path)
        if not result.ok:
            _log.warning("dossier.invalid", dossier=path.name, problems=len(result.problems))
            return None
        return result

    def _still_done(self, path: Path, done: DoneRecord) -> bool:
        """Is the dossier this state recorded still there, unchanged?

        With a recorded SHA-256 the hash decides (the file written was verified then); rows of
        a sar-bulk that kept no hash fall back to verifying the file.
        """
        if not _plain_file(path):
            if os.path.lexists(path):
                _log.warning(
                    "dossier.changed",
                    dossier=path.name,
                    why="a link or something else than a file is under its name; fetching again",
                )
            return False
        if done.sha256 is None:
            return self._valid(path) is not None
        try:
            same = file_sha256(path) == done.sha256
        except OSError as exc:  # swapped for a FIFO or a link since the look, or unreadable
            _log.warning("dossier.changed", dossier=path.name, why=f"cannot be read ({exc})")
            return False
        if same:
            return True
        _log.warning(
            "dossier.changed",
            dossier=path.name,
            why="its SHA-256 differs from the one recorded when it was written; fetching again",
        )
        return False

    async def _contact(self, work: _Work, scope: Scope, state: RunState) -> None:
        try:
            await self._answer(work, scope, state)
        finally:
            scope.close()

    async def _answer(self, work: _Work, scope: Scope, state: RunState) -> None:
        request = DossierRequest(work.contact_id, self.parts, self.question, work.subject)
        try:
            writer = DossierWriter(
                self.config.out,
                request,
                now=self._now,
                encryptor=self.config.encryptor,
                statement=self.config.statement,
                memory=self._held,
            )
        except SarBulkError as exc:
            await self._record_failure(work, state, {"*": str(exc)})
            return
        async with writer:
            scope.start_parts(len(self._parts))
            async with asyncio.TaskGroup() as group:
                tasks = {
                    part: group.create_task(self._part(scope, source, part, writer))
                    for source, part in self._parts
                }
            reasons = {part.key: reason for part, t in tasks.items() if (reason := t.result())}
            if reasons:
                await writer.abort()
                await self._record_failure(work, state, reasons)
                return
            await scope.resume()  # assembling takes a window slot like fetching does
            # Once assembly starts, a thread renames the zip into place whatever happens to
            # this task: let it finish and record it even when the run is being stopped.
            finishing = asyncio.ensure_future(self._finish(writer, work, state, scope))
            try:
                staged = await asyncio.shield(finishing)
            except asyncio.CancelledError:
                await finishing
                raise
            if staged is not None:
                # Not shielded: a stop cancels an upload (a stalled store would hold the
                # process for minutes of timeouts). Nothing is recorded for the contact, as
                # after SIGKILL: its staged file is removed and the next run publishes it.
                await self._deliver(staged, work, state, scope)

    async def _part(
        self, scope: Scope, source: Source, part: Part, writer: DossierWriter
    ) -> str | None:
        """Fetch one part into the writer; the reason it failed, or None."""
        try:
            await source.fetch(scope, part, writer.sink(part))
        except RunStopper:
            raise
        except DataverseError as exc:
            _log.warning(
                "part.failed",
                contact=scope.contact_id,
                part=part.key,
                status=exc.status,
                code=exc.code,
                error=type(exc).__name__,
            )
            return str(exc)
        except SarBulkError as exc:  # DossierError, SourceError, ...
            _log.warning("part.failed", contact=scope.contact_id, part=part.key, error=str(exc))
            return str(exc)
        except Exception as exc:
            # A value no check foresaw (a ValueError from data the org sent, say) fails this
            # part, not every contact in flight. The message is not kept: it may quote data.
            _log.error(
                "part.crashed", contact=scope.contact_id, part=part.key, error=type(exc).__name__
            )
            return (
                f"{part.key} for contact {scope.contact_id} failed on an answer sar-bulk did not "
                f"expect ({type(exc).__name__}); please report it"
            )
        finally:
            scope.part_done()
        return None

    async def _finish(
        self, writer: DossierWriter, work: _Work, state: RunState, scope: Scope
    ) -> DossierSummary | None:
        """Assemble the dossier (a thread renames it into place) and, when it stays in the work
        folder, record it; the dossier still to publish elsewhere, else None."""
        try:
            summary = await writer.complete()
        except (SarBulkError, OSError) as exc:
            await self._record_failure(work, state, {"*": f"writing the dossier failed: {exc}"})
            return None
        if self.target is not None:
            return summary
        await self._deliver(summary, work, state, scope)
        return None

    async def _deliver(
        self, summary: DossierSummary, work: _Work, state: RunState, scope: Scope
    ) -> None:
        """Publish the assembled dossier (when it goes elsewhere) and record the contact done."""
        etag: str | None = None
        if self.target is not None:
            # Uploading asks nothing of the org: give the window slot to the next contact (the
            # target bounds uploads at once; the alive slot still bounds contacts in memory).
            scope.part_done()
            try:
                published = await self.target.publish(
                    summary.path,
                    summary.path.name,
                    sha256=summary.sha256,
                    replace=work.replaces or work.overwrites,
                )
            except OutputError as exc:
                reason = f"publishing the dossier failed: {exc}"
                await self._record_failure(work, state, {"*": reason})
                return
            finally:
                # Staged only: published, or fetched again by the next run.
                await asyncio.to_thread(summary.path.unlink, missing_ok=True)
            etag = published.etag
        await asyncio.to_thread(
            state.mark_done,
            work.contact_id,
            dossier=summary.path.name,
            interactions=summary.total_interactions,
            zip_bytes=summary.zip_bytes,
            sha256=summary.sha256,
            etag=etag,
        )
        self.totals.succeeded += 1
        self.totals.interactions += summary.total_interactions
        self.totals.rows += summary.total_rows
        self.totals.bytes_written += summary.zip_bytes
        if work.replaces:
            # The other form (plain vs encrypted) is what was replaced: it must not stay beside.
            _, other = self._paths(work.contact_id)
            if self.target is None:
                await asyncio.to_thread(_remove_replaced, other)
            else:
                try:
                    await self.target.remove(other.name)
                except OutputError as exc:
                    _log.warning("dossier.other_form_kept", dossier=other.name, error=str(exc))
            self.replaced_count += 1
            if len(self.replaced) < MAX_LISTED:
                self.replaced.append(work.contact_id)
            _log.warning("dossier.replaced", contact=work.contact_id)
        _log.info("contact.done", contact=work.contact_id, interactions=summary.total_interactions)

    async def _record_failure(self, work: _Work, state: RunState, reasons: dict[str, str]) -> None:
        await asyncio.to_thread(state.mark_failed, work.contact_id, reasons)
        self.totals.fail(work.contact_id, reasons)
        _log.warning("contact.failed", contact=work.contact_id, parts=sorted(reasons))


def _remove_replaced(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _lookahead(window: int) -> int:
    """How many claimed contacts wait for admission, sorted by due date."""
    return min(max(window * _LOOKAHEAD_PER_SLOT, _BATCH), _LOOKAHEAD_MAX)


def _next_batch(
    rows: Iterator[ContactRow | RejectedRow],
) -> tuple[list[ContactRow | RejectedRow], InputError | None]:
    """The next rows, and the ``InputError`` the reader ended with after them (no usable id).

    The error comes after the file's last row: the rows read before it in this batch are
    returned with it, or the rejections it speaks of would never be logged.
    """
    batch: list[ContactRow | RejectedRow] = []
    try:
        batch.extend(islice(rows, _BATCH))
    except InputError as error:
        return batch, error
    return batch, None


async def _holds_dossiers(target: OutputTarget) -> bool:
    """Is there at least one dossier in the target (reads one listing page, mostly)?"""
    names = target.list_dossiers()
    try:
        async for _ in names:
            return True
        return False
    finally:
        close = getattr(names, "aclose", None)  # an async generator: stop its listing now
        if close is not None:
            await close()


def _remove_staged(folder: Path, owns: Callable[[str], bool] | None) -> int:
    """Container output: dossiers a killed run staged but never published (fetched again)."""
    removed = 0
    for entry in os.scandir(folder):
        contact = entry.name.removesuffix(ENCRYPTED_SUFFIX).removesuffix(".zip")
        staged = entry.name.endswith((".zip", ".zip" + ENCRYPTED_SUFFIX))
        mine = owns is None or (is_canonical_guid(contact) and owns(contact))
        if staged and mine and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            removed += 1
    return removed


def _question(config: RunConfig, parts: Sequence[Part]) -> Question:
    """What a dossier of this run answers: org, dates, sources, types, tables."""
    ordered = sorted(parts, key=part_order)
    return Question(
        org_url=config.org.base,
        sources=tuple(dict.fromkeys(p.source for p in ordered)),
        interaction_types=tuple(p.name for p in ordered if p.source == INTERACTIONS),
        date_from=config.dates.wire_from,
        date_to=config.dates.wire_to,
        # The whole definition, so a changed filter is another question too.
        custom_tables=tuple(
            f"{t.name}: {t.entity_set}?$filter={t.filter}" for t in config.custom_tables
        ),
        excluded_tables=tuple(sorted(config.excluded_tables)),
    )


def _difference(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """Which parts of the question differ, in words (no values: they may be long)."""
    names = {
        "org_url": "org",
        "date_from": "dates",
        "date_to": "dates",
        "sources": "sources or types",
        "interaction_types": "sources or types",
    }

    def same(key: str) -> bool:
        got, want = found.get(key), wanted.get(key)
        if isinstance(got, list) and isinstance(want, list):
            return sorted(map(str, got)) == sorted(map(str, want))
        return bool(got == want)

    differ = {names.get(k, k.replace("_", " ")) for k in wanted if not same(k)}
    return "its " + ", ".join(sorted(differ)) + " differ" if differ else "it differs"


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


def _matching(
    records: list[DoneRecord], name: str, sha256: str, etag: str | None
) -> DoneRecord | None:
    """The record of exactly this dossier (name, SHA-256, and etag where one was recorded)."""
    for record in records:
        if (
            record.dossier == name
            and record.sha256 == sha256
            and (record.etag is None or record.etag == etag)
        ):
            _log.info("dossier.recorded_by_another_shard", dossier=name)
            return record
    return None


def _plain_file(path: Path) -> bool:
    """A regular file is under ``path`` itself (a symbolic link there is not followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
