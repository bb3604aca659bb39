"""Helpers shared by the tests: credentials the simulator accepts, a client around one, whole runs
in-process, contact lists, and checks of dossiers against the simulator's ground truth.

Running the ``sar-bulk`` command as a process lives beside this, in ``cli_support``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from azure.core.credentials import AccessToken

from sar_bulk.config import RUN_OPTIONS, RunConfig, resolve
from sar_bulk.dataverse.auth import TokenProvider
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.dataverse.throttle import Throttle
from sar_bulk.dossier.format import PARTIAL_PREFIX
from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.run.runner import RunOutcome, execute_run
from sar_bulk.simulator import Dataset, Simulator, SimulatorConfig
from sar_bulk.sources.base import SourceDeps
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

FAR_FUTURE = 4_102_444_800  # 2100-01-01: these fake tokens never expire on the client's side


class RotatingCredential:
    """An async credential handing out a new simulator token on every call: sim-<user>.<n>."""

    def __init__(self, user: str = "sim-test", *, fail: Exception | None = None) -> None:
        self.user = user
        self.calls = 0
        self.fail = fail
        self._numbers = itertools.count(1)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"{self.user}.{next(self._numbers)}", FAR_FUTURE)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> RotatingCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class ClientRig:
    simulator: Simulator
    client: DataverseClient
    tokens: TokenProvider
    credential: RotatingCredential
    session: aiohttp.ClientSession


@asynccontextmanager
async def client_rig(
    config: SimulatorConfig | None = None,
    *,
    credential: RotatingCredential | None = None,
    timeouts: Timeouts | None = None,
    max_pages: int = 10_000,
) -> AsyncIterator[ClientRig]:
    """A simulator on loopback and a real client (real session, real HTTP) pointed at it."""
    credential = credential or RotatingCredential()
    timeouts = timeouts or Timeouts(request=10.0, connect=5.0)
    async with Simulator(config or SimulatorConfig(seed=1)) as simulator:
        org = OrgUrl.parse(simulator.base_url)
        async with (
            TokenProvider(credential, org.scope) as tokens,
            create_session(timeouts) as session,
        ):
            client = DataverseClient(
                OrgHttp(session, org, tokens, timeouts=timeouts), max_pages=max_pages
            )
            yield ClientRig(simulator, client, tokens, credential, session)


@asynccontextmanager
async def engine_deps(config: RunConfig) -> AsyncIterator[SourceDeps]:
    """What a source needs for an ``Engine`` of ``config``: a real session to the simulator, the
    identity's token provider, throttle and fetcher, the real clocks (one identity, no pool)."""
    loop = asyncio.get_running_loop()
    async with (
        TokenProvider(RotatingCredential(), config.org.scope) as tokens,
        create_session(Timeouts()) as session,
    ):
        http = OrgHttp(session, config.org, tokens)
        fetcher = Fetcher(
            DataverseClient(http), Throttle(config.throttle, clock=loop.time), config.retry
        )
        yield SourceDeps(
            http, fetcher, config.source_settings, datetime.now, loop.time, asyncio.sleep
        )


def contact_ids(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct canonical contact ids, the same for the same seed."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def write_csv(path: Path, lines: list[str], *, bom: bool = False, newline: str = "\n") -> Path:
    """Write a contacts file exactly as given (a BOM and the line ending on request)."""
    text = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def run_config(simulator: Simulator, contacts: Path, out: Path, **flags: Any) -> RunConfig:
    """A RunConfig for the simulator, as the CLI would build it from these flags.

    The action's source only unless ``sources`` says otherwise: most tests are about it, and
    ``auto`` would also wait for the simulated org's real-time exports.
    """
    given: dict[str, Any] = {
        "org": simulator.base_url,
        "sources": "interactions",
        "contacts": str(contacts),
        "out": str(out),
        "rate": "5000",
        "retry_base": "0.02",
        "retry_cap": "0.2",
        "timeout": "5",
    }
    given.update({k: v if isinstance(v, bool) else str(v) for k, v in flags.items()})
    settings = resolve(RUN_OPTIONS, flags=given, environ={}, config_file=None)
    return RunConfig.from_settings(settings, {})


async def run_engine(config: RunConfig, credential: RotatingCredential | None = None) -> RunOutcome:
    """Run the whole job in-process, as ``sar-bulk run`` does, without signal handlers."""
    credential = credential or RotatingCredential()
    return await execute_run(
        config,
        credential,
        credential_name="RotatingCredential",
        progress_out=None,
        out=io.StringIO(),
    )


def dossier_names(out: Path) -> set[str]:
    """Names of the finished dossiers in ``out`` (leftovers of unfinished writes excluded)."""
    return {
        p.name for p in out.glob("*.zip") if not p.name.startswith(PARTIAL_PREFIX) and p.is_file()
    }


def leftovers(out: Path) -> set[str]:
    """Names of what unfinished writes left in ``out``."""
    return {p.name for p in out.iterdir() if p.name.startswith(PARTIAL_PREFIX)}


def read_report(out: Path, name: str = "run-report.json") -> dict[str, Any]:
    """The run report in ``out`` (a shard's report has its own ``name``)."""
    report: dict[str, Any] = orjson.loads((out / name).read_bytes())
    return report


def assert_exact_dossier(
    dataset: Dataset,
    path: Path,
    contact_id: str,
    types: Sequence[InteractionType] = ALL_TYPES,
    date_from: date | None = None,
    date_to: date | None = None,
) -> int:
    """The dossier holds exactly what the org holds for the contact; returns the total."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        manifest = orjson.loads(archive.read("manifest.json"))
        assert manifest["contact_id"] == contact_id
        for itype in types:
            expected = list(dataset.interactions(contact_id, itype, date_from, date_to))
            member = f"interactions/{itype.value}.json"
            if not expected:
                assert member not in names, f"{member} should be absent"
                continue
            got = orjson.loads(archive.read(member))
            assert got == expected, (
                f"{contact_id} {itype.value}: dossier holds {len(got)} interactions, "
                f"the org {len(expected)} (or they differ in content or order)"
            )
            total += len(expected)
        assert manifest["total_interactions"] == total
    return total


def assert_exact_dossiers(
    dataset: Dataset,
    out: Path,
    contacts: Iterable[str],
    types: Sequence[InteractionType] = ALL_TYPES,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
) -> int:
    """Every contact has exactly one dossier in ``out``, no other dossier is there, and each one
    passes ``verify_dossier``, lists exactly ``types`` and holds exactly what the org holds.

    Returns the number of interactions compared, so a caller can tell the check was not empty.
    """
    wanted = sorted(set(contacts))
    assert dossier_names(out) == {f"{c}.zip" for c in wanted}, "dossier set differs"
    compared = 0
    for contact in wanted:
        path = out / f"{contact}.zip"
        result = verify_dossier(path)
        assert result.ok, f"{path.name}: {result.problems}"
        with zipfile.ZipFile(path) as archive:
            manifest = orjson.loads(archive.read("manifest.json"))
        listed = set(manifest["question"]["interaction_types"])
        assert listed == {t.value for t in types}, f"{contact}: types differ"
        compared += assert_exact_dossier(dataset, path, contact, types, date_from, date_to)
    return compared


def unlimited(**settings: Any) -> SimulatorConfig:
    """A simulator whose request window never fills within a test (Dataverse's default 6,000
    per 5 minutes would make a big test wait minutes for Retry-After, as a real org would)."""
    return SimulatorConfig(**({"request_limit": 10**9} | settings))
