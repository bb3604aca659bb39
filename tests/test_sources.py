"""The source seam: the registry, the interactions source over the simulator, the pre-flight
over sources, and the engine's ContactScope (single flight, durable notes, parking)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import client_rig, contact_ids, unlimited

from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.preflight import Outcome, probe_sources
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import Throttle, ThrottleSettings
from sar_bulk.errors import ConfigError, Unreachable
from sar_bulk.run.scope import Scope, Slots, Waiter, Window
from sar_bulk.run.state import RunState
from sar_bulk.simulator import SimulatorConfig
from sar_bulk.sources.base import (
    Availability,
    ContactScope,
    Part,
    Probe,
    SourceDeps,
    SourceSettings,
)
from sar_bulk.sources.interaction_types import InteractionType
from sar_bulk.sources.interactions import InteractionsSource
from sar_bulk.sources.registry import build, build_many, parse_sources

# --- registry -----------------------------------------------------------------------------------


def test_sources_parse_to_canonical_order_or_auto() -> None:
    assert parse_sources("auto") is None
    assert parse_sources(" realtime , Interactions,realtime") == ("interactions", "realtime")
    for bad in ("", "auto,records", "emails"):
        with pytest.raises(ValueError, match=r"must be|unknown"):
            parse_sources(bad)


async def test_auto_builds_every_source_and_a_name_builds_one() -> None:
    async with client_rig(unlimited(seed=1)) as rig:
        deps = _deps(rig.client)
        assert [s.name for s in build_many(None, deps)] == ["interactions", "records", "realtime"]
        assert [s.name for s in build_many(("records",), deps)] == ["records"]
        with pytest.raises(ConfigError, match="unknown source"):
            build("emails", deps)


# --- the interactions source ---------------------------------------------------------------------


class _ListSink:
    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.notes: dict[str, object] = {}

    async def add_rows(self, entry: str, rows: Sequence[Any]) -> None:
        self.rows.setdefault(entry, []).extend(rows)

    async def add_file(self, entry: str, chunk: bytes) -> None:
        raise AssertionError("the interactions source writes no verbatim files")

    def note(self, key: str, value: object) -> None:
        self.notes[key] = value


class _BareScope:
    """The least ContactScope a source can be given: an id and a number, nothing parked."""

    def __init__(self, contact_id: str) -> None:
        self.contact_id = contact_id
        self.number = 1
        self.sources = frozenset({"interactions", "records", "realtime"})

    async def once(self, key: str, load: Any) -> Any:
        return await load()

    async def recall(self, key: str) -> str | None:
        return None

    async def remember(self, key: str, value: str) -> None:
        return None

    @asynccontextmanager
    async def parked(self) -> AsyncIterator[None]:
        yield


async def test_interactions_fetch_every_page_of_a_type_into_its_entry() -> None:
    cid = contact_ids(1)[0]
    config = unlimited(seed=4, heavy_contacts={cid: 900}, page_size=100)
    async with client_rig(config) as rig:
        types = (InteractionType.EmailSent, InteractionType.EmailOpened)
        source = InteractionsSource(_deps(rig.client, interaction_types=types))
        assert [p.key for p in source.parts()] == [
            "interactions/EmailSent",
            "interactions/EmailOpened",
        ]
        scope: ContactScope = _BareScope(cid)
        for part in source.parts():
            sink = _ListSink()
            await source.fetch(scope, part, sink)
            entry = f"interactions/{part.name}.json"
            expected = list(rig.simulator.dataset.interactions(cid, InteractionType(part.name)))
            assert sink.rows[entry] == expected
            assert sink.notes["pages"] == max(1, -(-len(expected) // 100))
    assert source.pages >= 2


@pytest.mark.parametrize(
    ("sim", "availability", "words"),
    [
        (SimulatorConfig(seed=1), Availability.AVAILABLE, "answered"),
        (SimulatorConfig(seed=1, action_missing=True), Availability.MISSING, "retired"),
    ],
)
async def test_interactions_probe(
    sim: SimulatorConfig, availability: Availability, words: str
) -> None:
    async with client_rig(sim) as rig:
        probe = await InteractionsSource(_deps(rig.client)).probe()
    assert probe.availability is availability
    assert words in probe.detail


async def test_interactions_probe_names_the_missing_privilege() -> None:
    config = SimulatorConfig(seed=1, forbidden_identities=frozenset({"sim-test"}))
    async with client_rig(config) as rig:
        probe = await InteractionsSource(_deps(rig.client)).probe()
    assert probe.availability is Availability.FORBIDDEN
    assert "security role" in probe.detail


# --- pre-flight over sources -------------------------------------------------------------------


class _Fixed:
    """A source whose probe answers as told (or raises): for the pre-flight's sums."""

    def __init__(self, name: str, answer: Availability | BaseException) -> None:
        self.name = name
        self._answer = answer

    def parts(self) -> Sequence[Part]:
        return (Part(self.name, self.name),)

    async def probe(self) -> Probe:
        if isinstance(self._answer, BaseException):
            raise self._answer
        return Probe(self.name, self._answer, f"{self.name} said so")

    async def fetch(self, scope: ContactScope, part: Part, sink: Any) -> None:
        raise AssertionError("not fetched in these tests")


async def test_probe_sources_uses_every_available_one_and_says_what_each_said() -> None:
    check = await probe_sources(
        [
            _Fixed("realtime", Availability.AVAILABLE),
            _Fixed("records", Availability.FORBIDDEN),
            _Fixed("interactions", Availability.MISSING),
        ],
        credential_name="X",
    )
    assert check.can_run
    assert check.available == ("realtime",)
    assert [p.source for p in check.probes] == ["interactions", "records", "realtime"]
    assert "interactions: missing (interactions said so)" in check.message


async def test_probe_sources_with_none_available_cannot_run() -> None:
    check = await probe_sources(
        [_Fixed("interactions", Availability.MISSING), _Fixed("records", Availability.FORBIDDEN)],
        credential_name="X",
    )
    assert not check.can_run
    assert check.outcome is Outcome.ACTION_MISSING
    assert "records: forbidden" in check.message


async def test_a_stopping_probe_stops_the_check() -> None:
    from sar_bulk.errors import RequestContext

    error = Unreachable(RequestContext(contact_ids(1)[0], "records", 1), "no route")
    check = await probe_sources(
        [_Fixed("interactions", Availability.AVAILABLE), _Fixed("records", error)],
        credential_name="X",
    )
    assert not check.can_run
    assert check.stop is not None
    assert check.outcome is Outcome.UNREACHABLE
    assert "unreachable: no route" in check.stop


# --- ContactScope ------------------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Any:
    with RunState.open(tmp_path / "state.sqlite", fingerprint="fp", run_id="r1") as opened:
        yield opened


async def _admitted(slots: Slots, state: RunState, cid: str, number: int = 1) -> Scope:
    await slots.admit()
    return Scope(cid, number, state, slots)


async def test_once_loads_once_and_shares_result_and_error(state: RunState) -> None:
    scope = await _admitted(Slots(1, 0), state, contact_ids(1)[0])
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return "row"

    async def broken() -> str:
        raise ConfigError("boom")

    assert await asyncio.gather(*(scope.once("row", load) for _ in range(5))) == ["row"] * 5
    assert calls == 1
    results = await asyncio.gather(
        scope.once("bad", broken), scope.once("bad", broken), return_exceptions=True
    )
    assert all(isinstance(r, ConfigError) for r in results)
    scope.close()


async def test_a_cancelled_caller_does_not_cancel_the_load_for_others(state: RunState) -> None:
    scope = await _admitted(Slots(1, 0), state, contact_ids(1)[0])
    gate = asyncio.Event()

    async def load() -> int:
        await gate.wait()
        return 7

    first = asyncio.create_task(scope.once("k", load))
    second = asyncio.create_task(scope.once("k", load))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == 7
    with pytest.raises(asyncio.CancelledError):
        await first
    scope.close()


async def test_notes_survive_the_run_and_go_when_the_contact_is_done(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    a, b = contact_ids(2)
    with RunState.open(path, fingerprint="fp", run_id="r1") as first:
        first.claim_many([a, b])
        scope = await _admitted(Slots(2, 0), first, a)
        await scope.remember("realtime/request", "req-1")
        await scope.remember("realtime/request", "req-2")  # replaced, not added
        other = await _admitted(Slots(2, 0), first, b)
        await other.remember("realtime/request", "req-b")
    with RunState.open(path, fingerprint="fp", run_id="r2") as second:
        second.claim_many([a, b])
        assert second.recall(a, "realtime/request") == "req-2"
        assert second.recall(a, "other") is None
        second.mark_done(b, dossier=f"{b}.zip", interactions=0, zip_bytes=1)
        assert second.recall(b, "realtime/request") is None


async def test_a_parked_contact_gives_its_slot_to_another(state: RunState) -> None:
    slots = Slots(window=1, max_parked=1)
    a, b, c = contact_ids(3)
    first = await _admitted(slots, state, a)
    first.start_parts(2)
    first.part_done()  # one part finished; the other parks
    async with first.parked():
        assert not first.holds_window_slot
        second = await asyncio.wait_for(_admitted(slots, state, b, 2), 1)  # got the slot
        # The alive bound (window 1 + 1 parked) is full: a third contact waits.
        third = asyncio.create_task(_admitted(slots, state, c, 3))
        await asyncio.sleep(0.01)
        assert not third.done()
        leaving = asyncio.create_task(first.resume())  # an unpark waits for the slot too...
        await asyncio.sleep(0.01)
        assert not leaving.done()
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        second.close()
    assert first.holds_window_slot  # ...and takes it once it is free
    first.part_done()
    assert not first.holds_window_slot
    first.close()
    (await asyncio.wait_for(third, 1)).close()


async def _served(window: Window, kinds: Sequence[Waiter]) -> list[int]:
    """The order in which waiters of ``kinds`` (queued in that order) get a slot, one at a time."""
    served: list[int] = []

    async def wait(n: int, kind: Waiter) -> None:
        await window.acquire(kind)
        served.append(n)

    tasks = [asyncio.create_task(wait(n, kind)) for n, kind in enumerate(kinds)]
    await asyncio.sleep(0)
    for _ in kinds:
        window.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return served


async def test_the_window_serves_assembly_then_new_then_returning_contacts() -> None:
    window = Window(1, ready_backlog=10)
    await window.acquire(Waiter.NEW)  # the only slot is taken: everyone below queues
    kinds = [Waiter.RETURN, Waiter.NEW, Waiter.RETURN, Waiter.ASSEMBLE, Waiter.NEW]
    assert await _served(window, kinds) == [3, 1, 4, 0, 2]


async def test_past_the_backlog_returning_and_new_contacts_take_turns() -> None:
    window = Window(1, ready_backlog=2)
    await window.acquire(Waiter.NEW)
    kinds = [Waiter.RETURN, Waiter.RETURN, Waiter.NEW, Waiter.RETURN, Waiter.NEW, Waiter.NEW]
    # Three wait to return (>= 2): one returns, then a new one (turns), then with two still
    # waiting another returns; one left, under the bound: the new contacts go before it.
    assert await _served(window, kinds) == [0, 2, 1, 4, 5, 3]


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    window = Window(1)
    await window.acquire(Waiter.NEW)
    first = asyncio.create_task(window.acquire(Waiter.NEW))
    second = asyncio.create_task(window.acquire(Waiter.RETURN))
    await asyncio.sleep(0)
    first.cancel()
    window.release()
    await asyncio.wait_for(second, 1)
    with pytest.raises(asyncio.CancelledError):
        await first
    third = asyncio.create_task(window.acquire(Waiter.NEW))
    await asyncio.sleep(0.01)
    assert not third.done()  # the slot went to the second waiter, not to two
    window.release()
    await asyncio.wait_for(third, 1)


def _deps(client: Any, **settings: Any) -> SourceDeps:
    loop = asyncio.get_running_loop()
    fetcher = Fetcher(
        client,
        Throttle(ThrottleSettings(rate=5000), clock=loop.time),
        RetryPolicy(base=0.01, cap=0.05),
    )
    return SourceDeps(
        http=client.http,
        fetcher=fetcher,
        settings=SourceSettings(**settings),
        now=lambda: datetime.now(UTC),
        clock=loop.time,
        sleep=asyncio.sleep,
    )


# --- sar-bulk check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sim", "code", "headline", "said"),
    [
        (
            SimulatorConfig(seed=1, org_kind="both"),
            0,
            ": ready: ",
            ("interactions: available", "records: available", "realtime: available"),
        ),
        (
            SimulatorConfig(seed=1, org_kind="realtime"),  # today's cloud org
            0,
            ": ready: ",
            (
                "interactions: missing (this org has no msdyncrm_LoadInteractionsPublic",
                "records: available",
                "realtime: available",
            ),
        ),
        (
            SimulatorConfig(seed=1, org_kind="dataverse"),  # Sales/Service, no marketing
            0,
            ": ready: ",
            ("interactions: missing", "records: available", "realtime: missing (this org has no"),
        ),
        (
            SimulatorConfig(seed=1, forbidden_identities=frozenset({"sim-check"})),
            3,
            ": forbidden: ",
            (
                "interactions: forbidden (the identity may not run",
                "records: forbidden (reading contacts: ",
                "realtime: forbidden (reading metadata: ",
            ),
        ),
    ],
)
async def test_check_reports_each_source(
    sim: SimulatorConfig, code: int, headline: str, said: tuple[str, str, str]
) -> None:
    import io

    from sar_bulk.dataverse.auth import AuthKind
    from sar_bulk.dataverse.checking import run_check
    from sar_bulk.simulator import Simulator

    out = io.StringIO()
    async with Simulator(sim) as simulator:
        settings = {"org": simulator.base_url, "auth": AuthKind.STATIC_TOKEN, "timeout": 5.0}
        got = await run_check(settings, {"SAR_BULK_TOKEN": "sim-check.1"}, out=out)
    lines = out.getvalue().splitlines()
    assert got == code
    assert headline in lines[0]
    for line, expected in zip(lines[1:4], said, strict=True):
        assert line.strip().startswith(expected), line
