"""Prometheus metrics of a real ``sar-bulk run``: scraped during the run, and the textfile after it.

The simulator runs in the test's loop and is slowed (latency, small pages, a low concurrency
limit that answers 429s, a few 502s), so the run lasts long enough to be scraped more than once
while it works, and every kind of counter has something to count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from cli_support import run_args, run_cli, start_cli, token_env
from prometheus_client.parser import text_string_to_metric_families
from support import contact_ids, read_report, write_csv

from sar_bulk.config import RUN_OPTIONS, resolve
from sar_bulk.errors import ConfigError
from sar_bulk.run.metrics import MetricsSettings, RunMetrics
from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import ALL_TYPES

GUARD = 60.0
# Ten of the forty types keep the run at a few seconds on a busy machine.
_TEN_TYPES = ",".join(t.value for t in ALL_TYPES[:10])
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels (parsing is part of the test)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _so_far(samples: Samples, name: str, **labels: str) -> float:
    """A counter's value, 0 before it appears (the run's parts exist after its pre-flight)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def _slow_org(seed: int) -> SimulatorConfig:
    return SimulatorConfig(
        seed=seed,
        heavy_fraction=0.0,
        page_size=5,
        latency=0.02,
        latency_jitter=0.02,
        concurrency_limit=2,
        concurrency_retry_after=0.2,
        fault_502=0.03,
    )


async def _metrics_port(log: Path, process: asyncio.subprocess.Process) -> int:
    """The port the run says it serves metrics on (``--metrics-port 0``: any free port)."""
    async with asyncio.timeout(GUARD):
        while True:
            text = await asyncio.to_thread(log.read_text, "utf-8", "replace")
            for line in text.splitlines():
                if line.startswith("{"):
                    event = orjson.loads(line)
                    if event.get("event") == "metrics.serving":
                        assert event["host"] == "127.0.0.1"
                        return int(event["port"])
            assert process.returncode is None, text
            await asyncio.sleep(0.05)


async def _scrape(session: aiohttp.ClientSession, port: int) -> Samples:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        return _samples(await response.text())


def _args(sim: Simulator, tmp_path: Path, contacts: list[str], *extra: str) -> list[str]:
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    return run_args(
        sim.base_url,
        csv,
        tmp_path / "out",
        "--log-format",
        "json",
        "--window",
        "2",
        "--concurrency",
        "4",
        *extra,
    )


@pytest.mark.slow
async def test_metrics_move_during_the_run_and_the_textfile_holds_the_final_values(
    tmp_path: Path,
) -> None:
    textfile = tmp_path / "node-exporter" / "sar-bulk.prom"
    textfile.parent.mkdir()
    contacts = contact_ids(8, 31)
    log = tmp_path / "run.log"
    shard = {"shard": "all"}
    who = {"identity": "default", **shard}
    async with Simulator(_slow_org(31)) as sim:
        args = _args(
            sim,
            tmp_path,
            contacts,
            "--types",
            _TEN_TYPES,
            "--metrics-port",
            "0",
            "--metrics-textfile",
            str(textfile),
        )
        started = time.time()
        process = await start_cli(args, env=token_env(), log=log)
        port = await _metrics_port(log, process)
        scrapes: list[Samples] = []
        async with aiohttp.ClientSession() as session, asyncio.timeout(GUARD):
            while process.returncode is None and len(scrapes) < 2:
                samples = await _scrape(session, port)
                if _so_far(samples, "sar_bulk_contacts_total", state="done", **shard) >= 1 and (
                    not scrapes
                    or _value(samples, "sar_bulk_requests_sent_total", **who)
                    > _value(scrapes[-1], "sar_bulk_requests_sent_total", **who)
                ):
                    scrapes.append(samples)
                await asyncio.sleep(0.1)
        code = await asyncio.wait_for(process.wait(), GUARD)
        assert code == ExitCode.OK, log.read_text()
    assert len(scrapes) == 2, "the run ended before it could be scraped twice while working"
    first, second = scrapes
    for name in ("sar_bulk_requests_sent_total", "sar_bulk_retries_total"):
        assert _value(second, name, **who) >= _value(first, name, **who)
    assert _value(second, "sar_bulk_requests_sent_total", **who) > _value(
        first, "sar_bulk_requests_sent_total", **who
    )
    assert ("sar_bulk_last_success_timestamp_seconds", frozenset(shard.items())) not in second
    assert ("sar_bulk_run_exit_code", frozenset(shard.items())) not in second
    assert 0 < _value(second, "sar_bulk_run_duration_seconds", **shard) < GUARD

    final = _samples(textfile.read_text("utf-8"))
    report = read_report(tmp_path / "out")
    totals = report["totals"]
    expected = [
        ("sar_bulk_requests_sent_total", who, totals["requests"]),
        ("sar_bulk_requests_total", {**who, "outcome": "ok"}, totals["ok_requests"]),
        ("sar_bulk_requests_total", {**who, "outcome": "throttled"}, totals["throttled"]),
        ("sar_bulk_requests_total", {**who, "outcome": "fault"}, totals["faults"]),
        ("sar_bulk_retries_total", who, totals["retries"]),
        ("sar_bulk_contacts_total", {**shard, "state": "done"}, len(contacts)),
        ("sar_bulk_contacts_total", {**shard, "state": "failed"}, 0),
        ("sar_bulk_contacts_total", {**shard, "state": "skipped"}, 0),
        ("sar_bulk_interactions_total", shard, totals["interactions"]),
        ("sar_bulk_written_bytes_total", shard, totals["bytes_written"]),
        ("sar_bulk_run_exit_code", shard, 0),
    ]
    for name, labels, value in expected:
        assert _value(final, name, **labels) == value, (name, labels)
    # The slowed org answered 429s (its concurrency limit) and 502s: both are counted.
    assert totals["throttled"] > 0
    assert totals["faults"] > 0
    by_limit = {
        limit: _value(final, "sar_bulk_throttled_total", limit=limit, **who)
        for limit in ("requests", "execution-time", "concurrency")
    }
    assert by_limit == {"requests": 0, "execution-time": 0, "concurrency": totals["throttled"]}
    assert _value(final, "sar_bulk_run_duration_seconds", **shard) == pytest.approx(
        report["seconds"], abs=1.0
    )
    last_success = _value(final, "sar_bulk_last_success_timestamp_seconds", **shard)
    assert started < last_success <= time.time()
    # Written atomically: nothing but the file itself is left in the collector's folder.
    assert [p.name for p in textfile.parent.iterdir()] == [textfile.name]


async def test_a_failing_run_leaves_the_last_success_time_as_it_was(tmp_path: Path) -> None:
    textfile = tmp_path / "sar-bulk.prom"
    fresh = tmp_path / "first-ever.prom"
    contacts = contact_ids(2, 32)
    async with Simulator(SimulatorConfig(seed=32, heavy_fraction=0.0)) as sim:
        args = _args(sim, tmp_path, contacts, "--metrics-textfile", str(textfile))
        good = await run_cli(args, env=token_env())
        assert good.code == ExitCode.OK, good.explain()
        before = _value(
            _samples(textfile.read_text("utf-8")),
            "sar_bulk_last_success_timestamp_seconds",
            shard="all",
        )
        # A token the org refuses: the pre-flight stops the run with exit code 3.
        bad_env = token_env("refused-token")
        refused = await run_cli([*args, "--restart"], env=bad_env)
        first = await run_cli([*args, "--metrics-textfile", str(fresh)], env=bad_env)
    assert refused.code == ExitCode.REFUSED, refused.explain()
    after = _samples(textfile.read_text("utf-8"))
    assert _value(after, "sar_bulk_run_exit_code", shard="all") == ExitCode.REFUSED
    assert _value(after, "sar_bulk_last_success_timestamp_seconds", shard="all") == before
    assert first.code == ExitCode.REFUSED, first.explain()
    never = _samples(fresh.read_text("utf-8"))
    assert _value(never, "sar_bulk_run_exit_code", shard="all") == ExitCode.REFUSED
    assert not any(name == "sar_bulk_last_success_timestamp_seconds" for name, _ in never)


async def test_a_metrics_port_in_use_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        async with Simulator(SimulatorConfig(seed=33)) as sim:
            args = _args(sim, tmp_path, contact_ids(1, 33), "--metrics-port", str(port))
            result = await run_cli(args, env=token_env())
    finally:
        blocker.close()
        await blocker.wait_closed()
    assert result.code == ExitCode.USAGE, result.explain()
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert sim.counters()["total"]["requests"] == 0, "the run went on without its metrics"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"metrics_textfile": "metrics.txt"}, "must end in .prom"),
        ({"metrics_port": "65536"}, "must be a TCP port"),
        ({"metrics_port": "http"}, "is not valid"),
    ],
)
def test_metrics_flags_are_checked(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(RUN_OPTIONS, flags=flags, environ={}, config_file=None)


def test_metrics_settings_come_from_the_environment_too() -> None:
    settings = resolve(
        RUN_OPTIONS,
        flags={},
        environ={"SAR_BULK_METRICS_PORT": "9464", "SAR_BULK_METRICS_HOST": "0.0.0.0"},  # noqa: S104
        config_file=None,
    )
    assert (settings["metrics_port"], settings["metrics_host"]) == (9464, "0.0.0.0")  # noqa: S104


def test_a_textfile_in_a_missing_folder_is_refused_before_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "sar-bulk.prom"
    settings = resolve(
        RUN_OPTIONS, flags={"metrics_textfile": str(missing)}, environ={}, config_file=None
    )
    with pytest.raises(ConfigError, match=r"folder .*no-such-folder does not exist"):
        MetricsSettings.from_settings(settings)
    assert not MetricsSettings.from_settings(
        resolve(RUN_OPTIONS, flags={}, environ={}, config_file=None)
    ).enabled


async def test_a_fifo_or_link_planted_at_the_textfile_is_not_read_and_is_replaced(
    tmp_path: Path,
) -> None:
    """The last-success time is carried over from the previous file: reading a FIFO planted at
    its name blocked the end of the run until something wrote to the pipe (the pod's deadline,
    in Kubernetes), and a link was followed to whatever it pointed at."""
    fifo = tmp_path / "fifo.prom"
    os.mkfifo(fifo)
    secret = tmp_path / "elsewhere.prom"
    secret.write_text('sar_bulk_last_success_timestamp_seconds{shard="all"} 42.0\n', "utf-8")
    link = tmp_path / "link.prom"
    link.symlink_to(secret)
    try:
        for path in (fifo, link):
            metrics = RunMetrics(MetricsSettings(textfile=path), shard=None)
            async with asyncio.timeout(10):
                await metrics.stop(ExitCode.INCOMPLETE)
            assert not path.is_symlink(), path
            assert path.is_file(), path
            samples = _samples(path.read_text("utf-8"))
            assert _value(samples, "sar_bulk_run_exit_code", shard="all") == ExitCode.INCOMPLETE
            assert not any(name == "sar_bulk_last_success_timestamp_seconds" for name, _ in samples)
    finally:
        # A reader still blocked on the pipe (the bug) is let go, so the test ends either way.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert secret.read_text("utf-8").endswith("42.0\n")
