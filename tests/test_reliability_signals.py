"""Processes that die: SIGKILL at random moments, then resume; SIGTERM and SIGINT stop cleanly.

The simulator runs in the test's event loop, so it outlives every killed ``sar-bulk`` process and
its per-contact counters show what each run fetched: a contact whose dossier was on disk at a
kill must get no further answer from the org afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import run_args, run_cli, start_cli, token_env
from support import (
    assert_exact_dossiers,
    contact_ids,
    dossier_names,
    leftovers,
    read_report,
    write_csv,
)

from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.run.runner import ExitCode
from sar_bulk.run.stop_signals import StopSignals
from sar_bulk.simulator import Simulator, SimulatorConfig

GUARD = 60.0  # a hang guard only: nothing here is meant to take that long


@dataclass(frozen=True, slots=True)
class AfterKill:
    """What was on disk and what the org had answered right after one SIGKILL."""

    finished: frozenset[str]  # contact ids with a dossier at its final name
    partials: frozenset[str]
    ok_by_contact: dict[str, int]


def _finished(out: Path) -> set[str]:
    return dossier_names(out) if out.exists() else set()


async def _wait_for_own_dossier(process: asyncio.subprocess.Process, out: Path) -> bool:
    """Wait until this process has written a dossier of its own; False if it ended first."""
    before = _finished(out)
    async with asyncio.timeout(GUARD):
        while not _finished(out) - before:
            if process.returncode is not None:
                return False
            await asyncio.sleep(0.02)
    return True


async def _kill_at_random(process: asyncio.subprocess.Process, out: Path, delay: float) -> bool:
    """SIGKILL ``delay`` s after the start, but only once the run has finished a contact.

    Waiting for a finished contact makes every kill land in a run that got somewhere, however
    slow the machine. Returns False when the run ended by itself before the kill.
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.wait()), delay)
    if process.returncode is None:
        await _wait_for_own_dossier(process, out)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
    return process.returncode == -signal.SIGKILL


async def _under_way(args: list[str], out: Path, log: Path) -> asyncio.subprocess.Process:
    """``sar-bulk ARGS`` started, once it has written a dossier of its own."""
    process = await start_cli(args, env=token_env(), log=log)
    if not await _wait_for_own_dossier(process, out):
        raise AssertionError(await asyncio.to_thread(log.read_text))
    return process


async def _until_logged(log: Path, event: str) -> None:
    """Wait (polling every millisecond, 5 s at most) until the run's log holds ``event``."""
    async with asyncio.timeout(5.0):
        while event not in await asyncio.to_thread(log.read_text):  # noqa: ASYNC110 (polls the log)
            await asyncio.sleep(0.001)


def _slowish(seed: int) -> SimulatorConfig:
    """Small pages and a little latency: a run takes seconds and contacts finish one by one."""
    return SimulatorConfig(
        seed=seed, heavy_fraction=0.0, page_size=5, latency=0.005, latency_jitter=0.02
    )


def _contact(name: str) -> str:
    return name.removesuffix(".zip")


@pytest.mark.slow
async def test_sigkill_at_random_moments_then_resume_is_exact_and_fetches_nothing_twice(
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    config = _slowish(21)
    contacts = contact_ids(70, 21)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    kills: list[AfterKill] = []
    async with Simulator(config) as sim:
        args = run_args(sim.base_url, csv, out, "--window", "2")
        for attempt in range(3):
            log = tmp_path / f"attempt-{attempt}.log"
            process = await start_cli(args, env=token_env(), log=log)
            if not await _kill_at_random(process, out, rng.uniform(0.5, 3.0)):
                assert process.returncode == ExitCode.OK, log.read_text()
                break
            finished = dossier_names(out)
            for name in finished:
                result = await asyncio.to_thread(verify_dossier, out / name)
                assert result.ok, f"after kill {attempt + 1}, {name} is broken: {result.problems}"
            kills.append(
                AfterKill(
                    frozenset(_contact(n) for n in finished),
                    frozenset(leftovers(out)),
                    dict(sim.counters()["ok_requests_by_contact"]),
                )
            )
            if attempt and kills[-2].partials:
                # This run got as far as a dossier, so it started by removing old leftovers.
                assert not kills[-2].partials & kills[-1].partials
        final = await run_cli(args, env=token_env())
        ok_at_end = sim.counters()["ok_requests_by_contact"]
        assert final.code == ExitCode.OK, final.explain()
        assert_exact_dossiers(sim.dataset, out, contacts)
    why = f"(random seed {seed})"
    assert len(kills) >= 2, f"only {len(kills)} run(s) were still going when killed {why}"
    assert any(0 < len(k.finished) < len(contacts) for k in kills), why
    for number, kill in enumerate(kills, 1):
        for contact in kill.finished:
            assert ok_at_end.get(contact) == kill.ok_by_contact.get(contact), (
                f"{contact} had its dossier on disk at kill {number} but was fetched again {why}"
            )
    assert not leftovers(out), "leftovers of the killed runs are still there"
    report = read_report(out)
    assert report["totals"]["skipped_already_done"] == len(kills[-1].finished), why


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code", "outcome"),
    [
        (signal.SIGTERM, ExitCode.SIGTERM, "interrupted (SIGTERM)"),
        (signal.SIGINT, ExitCode.SIGINT, "interrupted (SIGINT)"),
    ],
)
async def test_a_signal_stops_the_run_with_a_report_and_the_rerun_completes(
    tmp_path: Path, signum: signal.Signals, code: int, outcome: str
) -> None:
    config = _slowish(22)
    contacts = contact_ids(24, 22)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    log = tmp_path / "interrupted.log"
    async with Simulator(config) as sim:
        args = run_args(sim.base_url, csv, out, "--window", "2")
        process = await _under_way(args, out, log)
        process.send_signal(signum)
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{signum.name} did not end the run within 10 s") from None
        assert process.returncode == code, log.read_text()
        report = read_report(out)
        assert report["outcome"] == outcome
        # The summary line says so too, not only the report.
        assert f"interrupted ({signum.name}): " in log.read_text()
        finished = dossier_names(out)
        assert 0 < len(finished) < len(contacts), "the signal came after the run had ended"
        # A dossier whose last write was already under way when the signal came is finished
        # (renamed into place) though the run no longer counts it; the rerun adopts it.
        assert report["totals"]["succeeded"] <= len(finished)
        for name in finished:
            result = await asyncio.to_thread(verify_dossier, out / name)
            assert result.ok, f"{name}: {result.problems}"
        rerun = await run_cli(args, env=token_env())
        assert rerun.code == ExitCode.OK, rerun.explain()
        assert_exact_dossiers(sim.dataset, out, contacts)
    assert not leftovers(out)
    assert read_report(out)["totals"]["skipped_already_done"] == len(finished)


@pytest.mark.slow
async def test_one_signal_delivered_twice_still_stops_the_run_cleanly(tmp_path: Path) -> None:
    """A wrapper that forwards SIGTERM to a process that also gets it from its group delivers it
    twice within milliseconds: that is one request, so the report and summary are written (it
    used to exit at once, as if the user had insisted)."""
    config = _slowish(23)
    contacts = contact_ids(24, 23)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    log = tmp_path / "twice.log"
    async with Simulator(config) as sim:
        args = run_args(sim.base_url, csv, out, "--window", "2")
        process = await _under_way(args, out, log)
        process.send_signal(signal.SIGTERM)
        # Two signals sent before the process runs again are merged into one by the kernel (CI
        # saw it with 5 ms between them), so the second goes once the first has been taken.
        await _until_logged(log, "run.stopping")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GUARD):
            await process.wait()
    text = log.read_text()
    assert process.returncode == ExitCode.SIGTERM, (process.returncode, text[-1500:])
    assert "interrupted (SIGTERM): " in text
    assert "run.signal_repeated" in text
    assert read_report(out)["outcome"] == "interrupted (SIGTERM)"


class _Run:
    """A stand-in for the engine on a fake clock: what it was asked, and the exits taken."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.exits: list[int] = []
        self.now = 100.0

    def request_stop(self, reason: str) -> None:
        self.reasons.append(reason)

    def signals(self) -> StopSignals:
        """Signals pointed at this run, on its clock, exiting into ``exits``."""
        loop = asyncio.get_running_loop()
        signals = StopSignals(loop, clock=lambda: self.now, exit_now=self.exits.append)
        signals.watch(self)
        return signals

    async def deliver(self, signum: signal.Signals, *, later: float = 0.0) -> None:
        self.now += later
        signal.raise_signal(signum)
        await asyncio.sleep(0.05)  # the loop runs the handler on its next turn


async def test_a_second_signal_later_exits_at_once_and_an_echo_does_not() -> None:
    """The handler's rule on a fake clock: the first signal asks the run to stop, one within
    half a second is an echo of it, one after that exits at once with the signal's code."""
    run = _Run()
    with run.signals():
        await run.deliver(signal.SIGTERM)
        assert (run.reasons, run.exits) == (["SIGTERM"], [])
        await run.deliver(signal.SIGTERM, later=0.2)
        assert (run.reasons, run.exits) == (["SIGTERM"], []), "an echo of the first"
        await run.deliver(signal.SIGINT, later=1.0)
        assert (run.reasons, run.exits) == (["SIGTERM"], [ExitCode.SIGINT])
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


async def test_a_signal_after_the_run_lets_the_caller_finish_and_a_second_still_exits() -> None:
    """Released (report and summary out) but still installed while the caller writes the
    metrics textfile: a signal then neither stops the finished run nor kills the process with
    the default action; a second one later exits at once, as during the run."""
    run = _Run()
    with run.signals() as signals:
        signals.release()
        await run.deliver(signal.SIGTERM)
        assert (run.reasons, run.exits) == ([], [])
        await run.deliver(signal.SIGTERM, later=1.0)
        assert (run.reasons, run.exits) == ([], [ExitCode.SIGTERM])
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
