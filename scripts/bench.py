"""Benchmark sar-bulk against the simulator: limit use, client cost and memory (not a test).

Usage::

    .venv/bin/python scripts/bench.py                   # everything, about 20-25 minutes
    .venv/bin/python scripts/bench.py --quick           # small sizes: a smoke run of a few minutes
    .venv/bin/python scripts/bench.py --only 1,3 --contacts 40

Scenarios (every client runs in its own process against a fresh simulator process):

1. **Limit use**: Dataverse's limits scaled ten times in time (600 requests per 30 s, 52 at once,
   50 ms latency); sar-bulk with its default rate (6,000/300 s = 20/s, which is 600/30 s).
2. **Limits it was not told about**: the simulator allows half (300 per 30 s); sar-bulk still
   assumes 20/s. Half the contacts of scenario 1, so the run takes about as long.
3. **The naive peer** (``naive_peer.py``) on the settings of 1 and 2, its figures beside sar-bulk's.
4. **Client cost**: no limits, no latency; CPU seconds of the client process per 1,000 requests,
   sar-bulk (dossiers written) beside ``bare_loop.py`` (decodes, keeps nothing), both 16 at once.
5. **Memory**: peak RSS of sar-bulk for 1,000 and 10,000 contacts, and for one contact with
   1,000,000 interactions in pages of 5,000.
6. **Identity pool**: the limits of 1 (600 per 30 s, 52 at once, 50 ms) for *each* identity; one,
   two and four identities (``[[identities]]``), each run with that many times the contacts of
   the one-identity run so that all take about as long; the action's source only and no heavy
   contact (an export's wait, or one contact's pages one after the other, is a tail as long
   whatever the pool). Throughput (ok requests/s) against the
   one-identity run's should be x2 and x4 within 10 %, and each identity's 429 share <= 2 %.

Scenarios of a today's cloud org (``--sources``; limits 6,000 per 120 s, see SOURCES_LIMIT):

7. **Real-time exports**: 1,000 contacts of an org kind ``realtime``, exports done after
   ``--realtime-delay`` s (30); wall time against max(requests / rate, delay), share of polling.
8. **Records**: ``--sources records`` over 1,000 contacts: limit use, requests per contact.
9. **Memory, three sources**: peak RSS with ``--sources auto`` on an org kind ``both``,
   ``--sources-memory SMALL,LARGE`` contacts (1,000 and 10,000), no limits.

Figures for 1-3 come from the simulator's ``/_sim/counters`` and the wall time around the client
process; CPU and peak RSS from ``os.wait4`` of the client process alone. The table goes to standard
output, progress to standard error, everything to ``--json`` (default bench-results/bench.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import http.client
import math
import os
import platform
import random
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

PYTHON = sys.executable
SCRIPTS = Path(__file__).resolve().parent
SAR_BULK = [PYTHON, "-m", "sar_bulk.cli"]
SAR_TOKEN = "sim-bench.1"  # noqa: S105 - the simulator's fake token, not a secret
NAIVE_TOKEN = "sim-naive.1"  # noqa: S105 - the simulator's fake token, not a secret
BARE_TOKEN = "sim-bare.1"  # noqa: S105 - the simulator's fake token, not a secret
HEAVY_CONTACT = "5b3c1f0e-7d2a-4c8b-9e61-0a4f2d9c8e17"
FEW_TYPES = "EmailSent,EmailOpened,EmailClicked,WebsiteVisited"
UNCONSTRAINED = ["--rate", "100000", "--concurrency", "16"]
NO_LIMITS = ["--request-limit", "1000000000", "--concurrency-limit", "100000", "--latency", "0"]
MB = 1_000_000
_READY = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and shows what it printed."""


@dataclass(frozen=True, slots=True)
class Sizes:
    limits_contacts: int
    cost_contacts: int
    memory_small: int
    memory_large: int
    heavy_interactions: int
    realtime_contacts: int = 1_000
    realtime_delay: float = 30.0
    records_contacts: int = 1_000
    sources_memory: tuple[int, int] = (1_000, 10_000)
    pool_contacts: int = 30  # scenario 6: contacts per identity (all types: ~40 requests each)


FULL = Sizes(90, 500, 1_000, 10_000, 1_000_000)
QUICK = Sizes(8, 40, 50, 500, 50_000, 100, 10.0, 100, (50, 500), pool_contacts=10)
POOL_SIZES = (1, 2, 4)  # scenario 6: identities per run


@dataclass(frozen=True, slots=True)
class ProcResult:
    """One finished child process: exit code, wall time and its own resource use."""

    argv: list[str]
    code: int
    wall: float
    cpu_user: float
    cpu_sys: float
    maxrss_kib: int
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def peak_mb(self) -> float:
        return self.maxrss_kib * 1024 / MB

    def record(self, label: str, **extra: Any) -> dict[str, Any]:
        return {
            "label": label,
            "command": shlex.join(self.argv),
            "exit_code": self.code,
            "wall_seconds": round(self.wall, 3),
            "cpu_user_seconds": round(self.cpu_user, 3),
            "cpu_sys_seconds": round(self.cpu_sys, 3),
            "peak_rss_mb": round(self.peak_mb, 1),
            **extra,
        }


@dataclass(slots=True)
class Row:
    """One line of the table; ``peer`` is the naive peer's (1-3) or the bare loop's (4) value."""

    scenario: str
    figure: str
    value: float | None
    fmt: str = "{:.3f}"
    goal: str = ""
    passed: bool | None = None
    peer: float | None = None
    note: str = ""

    def verdict(self) -> str:
        if self.passed is None:
            return "-" if self.value is None and self.goal else "info"
        return "pass" if self.passed else "MISS"

    def shown(self, number: float | None) -> str:
        return "-" if number is None else self.fmt.format(number)


@dataclass(slots=True)
class Bench:
    """Shared state of one benchmark: options, work folder, rows, runs and notes."""

    args: argparse.Namespace
    sizes: Sizes
    work: Path
    rows: list[Row] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# ----- processes --------------------------------------------------------------------------------


def _tail(text: str, lines: int = 15) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) or "    (nothing)"


def _reap(
    proc: subprocess.Popen[Any], timeout: float, stop: signal.Signals
) -> tuple[int, Any, bool]:
    """Wait for ``proc`` with ``os.wait4``, which gives its own rusage; past ``timeout`` send
    ``stop``, then SIGKILL. Returns exit code, rusage and whether it had to be stopped.

    Only this function reaps: Popen's poll(), send_signal() and kill() would reap the child
    themselves and take its rusage with them, so signals go through os.kill.
    """
    box: list[tuple[int, int, Any]] = []
    waiter = threading.Thread(target=lambda: box.append(os.wait4(proc.pid, 0)), daemon=True)
    waiter.start()
    waiter.join(timeout)
    stopped = waiter.is_alive()
    for sig in (stop, signal.SIGKILL) if stopped else ():
        if waiter.is_alive():
            os.kill(proc.pid, sig)
            waiter.join(15.0)
    if not box:
        raise BenchError(f"{proc.args!r} (pid {proc.pid}) could not be stopped")
    _, status, usage = box[0]
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, stopped


def run_process(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> ProcResult:
    """Run a client to its end; wall time around it, CPU and peak RSS of that process alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        code, usage, timed_out = _reap(proc, timeout, signal.SIGKILL)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return ProcResult(
            argv=list(argv),
            code=code,
            wall=wall,
            cpu_user=usage.ru_utime,
            cpu_sys=usage.ru_stime,
            maxrss_kib=usage.ru_maxrss,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=timed_out,
        )


def client_env(**values: str) -> dict[str, str]:
    """This environment without SAR_BULK_* or BENCH_TOKEN settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAR_BULK_", "BENCH_"))}
    env.update(values)
    return env


def require_success(result: ProcResult, what: str) -> None:
    if result.timed_out:
        raise BenchError(
            f"{what} did not finish within the timeout; stderr:\n{_tail(result.stderr)}"
        )
    if result.code != 0:
        raise BenchError(
            f"{what} exited with {result.code}; command: {shlex.join(result.argv)}\n"
            f"stderr (last lines):\n{_tail(result.stderr)}\n"
            f"stdout (last lines):\n{_tail(result.stdout, 5)}"
        )


class SimulatorProcess:
    """``sar-bulk simulate`` in its own process on a free loopback port, for one client run."""

    def __init__(self, flags: Sequence[str], work: Path) -> None:
        self.argv = [*SAR_BULK, "simulate", "--port", "0", *flags]
        self._log_path = work / f"simulator-{time.monotonic_ns()}.log"
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self.url = ""
        self.cpu = 0.0

    def __enter__(self) -> SimulatorProcess:
        self._log = self._log_path.open("w")
        self._proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=self._log, text=True, env=client_env()
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 60.0
        line = ""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self._proc.stdout], [], [], 0.2)
            if readable:  # the ready line, or "" if it exited without one
                line = self._proc.stdout.readline()
                break
        match = _READY.search(line)
        if match is None:
            self.__exit__(None, None, None)
            log = self._log_path.read_text(errors="replace")
            raise BenchError(
                f"the simulator did not start (exit {self._proc.returncode}); "
                f"command: {shlex.join(self.argv)}\nstderr (last lines):\n{_tail(log)}"
            )
        self.url = match.group(1)
        return self

    def counters(self) -> dict[str, Any]:
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("GET", "/_sim/counters")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise BenchError(f"GET /_sim/counters answered {response.status}")
        document: dict[str, Any] = orjson.loads(body)
        return document

    def identity(self, token: str) -> dict[str, Any]:
        """Counters of the identity a token belongs to (the part before the first '.')."""
        name = token.split(".", 1)[0]
        found: dict[str, Any] | None = self.counters()["identities"].get(name)
        if found is None:
            raise BenchError(f"the simulator saw no request from identity {name!r}")
        return found

    def __exit__(self, *_: object) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            # SIGTERM, not SIGINT: a benchmark started in the background (nohup ... &) passes
            # an ignored SIGINT on to its children, and the simulator would never stop.
            os.kill(proc.pid, signal.SIGTERM)
            usage = _reap(proc, 15.0, signal.SIGKILL)[1]
            self.cpu = usage.ru_utime + usage.ru_stime
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._log is not None:
            self._log.close()


# ----- inputs and clients -----------------------------------------------------------------------


def make_contacts(path: Path, count: int, seed: int) -> Path:
    """A CSV of ``count`` random (seeded) canonical GUIDs under a ``contactid`` header."""
    rng = random.Random(seed)
    ids = (str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count))
    path.write_text("contactid\n" + "".join(f"{i}\n" for i in ids))
    return path


def run_sar_bulk(
    bench: Bench,
    url: str,
    contacts: Path,
    out: Path,
    extra: Sequence[str],
    *,
    thread_cpu: Path | None = None,
) -> ProcResult:
    """``sar-bulk run``; with ``thread_cpu``, through ``thread_cpu.py``, which writes there how
    its CPU split between the event loop's thread and the others."""
    launcher = SAR_BULK if thread_cpu is None else [PYTHON, str(SCRIPTS / "thread_cpu.py")]
    argv = [
        *launcher,
        "run",
        "--auth",
        "static-token",
        "--org",
        url,
        "--contacts",
        str(contacts),
        "--out",
        str(out),
        "--no-progress",
        "--log-level",
        "warning",
        # Scenarios 1-5 measure the action's source; the others name theirs.
        *([] if "--sources" in extra else ["--sources", "interactions"]),
        *extra,
    ]
    env = client_env(SAR_BULK_TOKEN=SAR_TOKEN)
    if thread_cpu is not None:
        env["BENCH_THREAD_CPU"] = str(thread_cpu)
    return run_process(argv, env=env, cwd=bench.work, timeout=bench.args.timeout)


def run_script(bench: Bench, name: str, token: str, args: Sequence[str]) -> ProcResult:
    argv = [PYTHON, str(SCRIPTS / name), *args]
    env = client_env(BENCH_TOKEN=token)
    return run_process(argv, env=env, cwd=bench.work, timeout=bench.args.timeout)


def read_report(out: Path) -> dict[str, Any]:
    path = out / "run-report.json"
    if not path.exists():
        return {}
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    return report


def _summary(result: ProcResult) -> dict[str, Any]:
    """The JSON line of totals a benchmark script prints last ({} if there is none)."""
    lines = result.stdout.strip().splitlines()
    try:
        found = orjson.loads(lines[-1]) if lines else {}
    except orjson.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# ----- scenarios 1-3: limit use -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitFigures:
    """What one client achieved against one request limit."""

    wall: float
    ok: int
    requests: int
    throttled: int
    max_in_flight: int
    allowed_rate: float
    limit: int
    window: float
    most_tries: float | None = None  # the naive peer's most sends for one page

    @property
    def rate_ratio(self) -> float:
        return self.ok / self.wall / self.allowed_rate

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    @property
    def wall_ratio(self) -> float:
        return self.wall / (self.ok / self.allowed_rate)

    @property
    def burst_aware_ratio(self) -> float:
        """ok/s against the most a sliding window that starts empty lets through in ``wall``."""
        most = self.limit * (math.floor(self.wall / self.window) + 1)
        return self.ok / most

    @property
    def burst_aware_ideal(self) -> float:
        """The shortest time for ``ok`` requests: a full window at t=0, then one per window."""
        return self.window * (math.ceil(self.ok / self.limit) - 1)


def _limit_run(
    bench: Bench, client: str, sim_flags: list[str], contacts: Path, tag: str
) -> tuple[ProcResult, dict[str, Any], dict[str, Any]]:
    with SimulatorProcess(sim_flags, bench.work) as sim:
        if client == "sar-bulk":
            out = bench.work / f"{tag}-out"
            result = run_sar_bulk(bench, sim.url, contacts, out, [])
            token, report = SAR_TOKEN, read_report(out)
        else:
            args = ["--org", sim.url, "--contacts", str(contacts)]
            result = run_script(bench, "naive_peer.py", NAIVE_TOKEN, args)
            token, report = NAIVE_TOKEN, {}
        counters = sim.identity(token)
        try:
            require_success(result, f"{client} ({tag})")
        except BenchError as exc:
            # Say how far it got: a client that gives up or runs out of time is a finding too.
            raise BenchError(
                f"{exc}\n    by then, after {result.wall:.0f} s: {counters['ok']} ok, "
                f"{counters['throttled']} throttled of {counters['requests']} requests"
            ) from None
    return result, counters, report


def limits_scenario(
    bench: Bench, key: str, limit: int, window: float, contacts_count: int, clients: list[str]
) -> None:
    rate = limit / window
    contacts = make_contacts(bench.work / f"{key}-contacts.csv", contacts_count, seed=int(key[1:]))
    sim_flags = [
        "--seed",
        "11",
        "--request-limit",
        str(limit),
        "--window-seconds",
        str(window),
        "--concurrency-limit",
        "52",
        "--latency",
        "0.05",
        "--retry-after-format",
        bench.args.retry_after_format,
    ]
    figures: dict[str, LimitFigures | None] = {}
    for client in clients:
        tag = f"{key}-{client}"
        progress(f"{key}: {client}, {contacts_count} contacts, limit {limit}/{window:g} s")
        try:
            result, counters, report = _limit_run(bench, client, sim_flags, contacts, tag)
        except BenchError as exc:
            bench.errors.append(f"{tag}: {exc}")
            progress(f"{tag} FAILED: {exc}")
            figures[client] = None
            continue
        found = LimitFigures(
            wall=result.wall,
            ok=int(counters["ok"]),
            requests=int(counters["requests"]),
            throttled=int(counters["throttled"]),
            max_in_flight=int(counters["max_in_flight"]),
            allowed_rate=rate,
            limit=limit,
            window=window,
            most_tries=_summary(result).get("most_tries_for_one_page"),
        )
        figures[client] = found
        bench.runs.append(
            result.record(
                tag,
                simulator=sim_flags,
                counters=counters,
                report_totals=report.get("totals"),
                report_throttle=report.get("throttle"),
                report_seconds=report.get("seconds"),
                client_summary=_summary(result),
            )
        )
        progress(
            f"{tag}: {found.ok} ok, {found.throttled} throttled, {found.wall:.1f} s, "
            f"ok/s / allowed = {found.rate_ratio:.3f}"
        )
    _limit_rows(bench, key, rate, figures)


def _limit_rows(
    bench: Bench, key: str, rate: float, figures: dict[str, LimitFigures | None]
) -> None:
    ours, peer = figures.get("sar-bulk"), figures.get("naive")
    name = f"{key} limits {rate:g}/s"

    def pick(getter: Callable[[LimitFigures], float], which: LimitFigures | None) -> float | None:
        return None if which is None else getter(which)

    def add(
        figure: str,
        getter: Callable[[LimitFigures], float],
        fmt: str,
        goal: str = "",
        check: Callable[[float], bool] | None = None,
    ) -> None:
        value = pick(getter, ours)
        passed = None if check is None or value is None else check(value)
        bench.rows.append(
            Row(name, figure, value, fmt, goal, passed, pick(getter, peer), "peer: naive")
        )

    add(f"ok req/s / allowed {rate:g}/s", lambda f: f.rate_ratio, "{:.3f}", ">= 0.95", _ge(0.95))
    add("throttled / all requests", lambda f: f.throttled_share, "{:.2%}", "<= 2%", _le(0.02))
    add(f"wall / ideal (ok / {rate:g} s)", lambda f: f.wall_ratio, "{:.3f}", "<= 1.05", _le(1.05))
    add("ok / most a fresh window allows in wall", lambda f: f.burst_aware_ratio, "{:.3f}")
    add("wall s", lambda f: f.wall, "{:.1f}")
    add("ideal s, burst-aware (see notes)", lambda f: f.burst_aware_ideal, "{:.1f}")
    add("ok requests", lambda f: f.ok, "{:.0f}")
    add("throttled (429)", lambda f: f.throttled, "{:.0f}")
    add("max in flight", lambda f: f.max_in_flight, "{:.0f}")
    if peer is not None and peer.most_tries is not None:
        bench.rows.append(
            Row(name, "most sends for one page", None, "{:.0f}", peer=peer.most_tries, note="naive")
        )


def _ge(goal: float) -> Callable[[float], bool]:
    return lambda value: value >= goal


def _le(goal: float) -> Callable[[float], bool]:
    return lambda value: value <= goal


# ----- scenario 6: identity pool ----------------------------------------------------------------


def _pool_config(folder: Path, count: int) -> tuple[Path, dict[str, str]]:
    """A config file with ``count`` static-token identities, and the environment with their
    tokens (sim-pool1.1, ...: the simulator counts each as an identity of its own)."""
    tables = []
    env: dict[str, str] = {}
    for n in range(1, count + 1):
        tables.append(
            f'[[identities]]\nname = "pool{n}"\nauth = "static-token"\n'
            f'env = {{ SAR_BULK_TOKEN = "BENCH_POOL_TOKEN_{n}" }}\n'
        )
        env[f"BENCH_POOL_TOKEN_{n}"] = f"sim-pool{n}.1"
    path = folder / f"s6-pool-{count}.toml"
    path.write_text("\n".join(tables))
    return path, env


def pool_scenario(bench: Bench) -> None:
    limit, window = 600, 30.0
    sim_flags = [
        "--seed",
        "11",
        # No heavy contacts: one contact's pages are fetched one after the other, and such a
        # tail (the same seconds whatever the pool) would hide how throughput scales.
        "--heavy-fraction",
        "0",
        "--request-limit",
        str(limit),
        "--window-seconds",
        str(window),
        "--concurrency-limit",
        "52",
        "--latency",
        "0.05",
        "--retry-after-format",
        bench.args.retry_after_format,
    ]
    per_identity = bench.sizes.pool_contacts
    pace: dict[int, float] = {}
    for count in POOL_SIZES:
        tag = f"s6-{count}"
        contacts = make_contacts(bench.work / f"{tag}-contacts.csv", per_identity * count, 6)
        config, env = _pool_config(bench.work, count)
        out = bench.work / f"{tag}-out"
        progress(
            f"s6: {count} identities, {per_identity * count} contacts, {limit}/{window:g} s each"
        )
        argv = [
            *SAR_BULK,
            "run",
            "--config",
            str(config),
            "--org",
            "",
            "--contacts",
            str(contacts),
            "--out",
            str(out),
            "--no-progress",
            "--log-level",
            "warning",
            # The action's 40 types only: realtime exports wait on the org (30 s here), which
            # is the same tail for any pool and says nothing about request throughput.
            "--sources",
            "interactions",
        ]
        with SimulatorProcess(sim_flags, bench.work) as sim:
            argv[argv.index("--org") + 1] = sim.url
            result = run_process(
                argv, env=client_env(**env), cwd=bench.work, timeout=bench.args.timeout
            )
            seen = sim.counters()["identities"]
        require_success(result, f"sar-bulk ({tag})")
        mine = {
            name: seen.get(f"sim-pool{n}", {})
            for n, name in enumerate([f"pool{n}" for n in range(1, count + 1)], 1)
        }
        ok = sum(int(c.get("ok", 0)) for c in mine.values())
        shares = {
            name: int(c.get("throttled", 0)) / max(1, int(c.get("requests", 0)))
            for name, c in mine.items()
        }
        report = read_report(out)
        contacts_by = {row["name"]: row["contacts"] for row in report.get("identities", [])}
        pace[count] = ok / result.wall
        bench.runs.append(
            result.record(
                tag,
                simulator=sim_flags,
                counters=mine,
                report_identities=report.get("identities"),
                report_totals=report.get("totals"),
            )
        )
        name = f"s6 pool of {count}"
        base = pace.get(1)
        ratio = pace[count] / base if base else None
        bench.rows.append(Row(name, "ok req/s (all identities)", pace[count], "{:.2f}"))
        bench.rows.append(
            Row(
                name,
                "throughput / 1 identity's",
                ratio,
                "{:.3f}",
                f"{count} +- 10%",
                None if ratio is None else abs(ratio / count - 1) <= 0.10,
            )
        )
        worst = max(shares.values()) if shares else 0.0
        bench.rows.append(
            Row(name, "throttled share, worst identity", worst, "{:.2%}", "<= 2%", worst <= 0.02)
        )
        bench.rows.append(Row(name, "wall s", result.wall, "{:.1f}"))
        spread = ", ".join(f"{k} {v}" for k, v in sorted(contacts_by.items()))
        bench.rows.append(Row(name, "contacts per identity", None, note=spread))
        progress(
            f"{tag}: {ok} ok in {result.wall:.1f} s = {pace[count]:.2f}/s"
            + (f", x{ratio:.2f} of one identity" if ratio else "")
            + f"; worst 429 share {worst:.2%}; contacts {spread}"
        )


# ----- scenario 4: client cost ------------------------------------------------------------------


def _startup_cpu(bench: Bench, imports: str, label: str) -> float:
    """Median CPU of starting the interpreter and importing what a client imports."""
    samples = []
    for _ in range(3):
        result = run_process(
            [PYTHON, "-c", f"import {imports}"], env=client_env(), cwd=bench.work, timeout=120
        )
        require_success(result, f"start-up probe ({label})")
        samples.append(result.cpu)
    return sorted(samples)[1]


@dataclass(frozen=True, slots=True)
class CostRun:
    """One client's run in scenario 4; ``main_thread`` is sar-bulk's event-loop thread CPU."""

    result: ProcResult
    requests: int
    main_thread: float | None = None


def _cost_pair(bench: Bench, contacts: Path, count: int, round_: int) -> dict[str, CostRun]:
    """One run of each client, each against a fresh simulator, back to back."""
    sim_flags = ["--seed", "11", *NO_LIMITS]
    measured: dict[str, CostRun] = {}
    for client in ("sar-bulk", "bare"):
        progress(f"s4 round {round_}: {client}, {count} contacts, no limits, 16 at once")
        main_thread: float | None = None
        with SimulatorProcess(sim_flags, bench.work) as sim:
            if client == "sar-bulk":
                out = bench.work / f"s4-out-{round_}"
                split_file = bench.work / f"s4-cpu-{round_}.json"
                result = run_sar_bulk(
                    bench, sim.url, contacts, out, UNCONSTRAINED, thread_cpu=split_file
                )
                token = SAR_TOKEN
            else:
                args = ["--org", sim.url, "--contacts", str(contacts), "--concurrency", "16"]
                result = run_script(bench, "bare_loop.py", BARE_TOKEN, args)
                token = BARE_TOKEN
            require_success(result, f"{client} (s4)")
            requests = int(sim.identity(token)["requests"])
        if client == "sar-bulk":
            shutil.rmtree(out, ignore_errors=True)
            main_thread = float(orjson.loads(split_file.read_bytes())["main_thread"])
        measured[client] = CostRun(result, requests, main_thread)
        bench.runs.append(
            result.record(
                f"s4-{client}-{round_}",
                requests=requests,
                main_thread_cpu_seconds=main_thread,
                simulator_cpu_seconds=round(sim.cpu, 3),
                client_summary=_summary(result),
            )
        )
        progress(
            f"s4-{client}: {requests} requests, {result.cpu:.1f} s CPU "
            f"({result.cpu_sys:.1f} s system), {result.wall:.1f} s"
            + (f", event-loop thread {main_thread:.1f} s" if main_thread is not None else "")
        )
    return measured


def cost_scenario(bench: Bench) -> None:
    """CPU per request of sar-bulk and of the bare loop, in interleaved rounds (median shown).

    The machine is shared: one round can land in a busy minute. Rounds alternate the two clients
    so both see the same load, and the median of the per-round ratios is the figure. Beside the
    whole process, sar-bulk's event-loop thread alone (the request path, the engine, start-up) is
    set against the bare loop, and the other threads' CPU (dossier assembly: answer files, zip,
    state) is shown per contact: the bare loop writes nothing, so that part has no peer.
    """
    count = bench.sizes.cost_contacts
    contacts = make_contacts(bench.work / "s4-contacts.csv", count, seed=4)
    rounds = [_cost_pair(bench, contacts, count, n + 1) for n in range(bench.args.cost_rounds)]
    ours_start = _startup_cpu(bench, "sar_bulk.cli, sar_bulk.run.runner", "sar-bulk")
    bare_start = _startup_cpu(bench, "aiohttp, orjson, sar_bulk.sources.interaction_types", "bare")

    def per_k(run: CostRun, start: float = 0.0) -> float:
        return (run.result.cpu - start) / run.requests * 1000

    def loop_per_k(run: CostRun) -> float:
        return (run.main_thread or 0.0) / run.requests * 1000

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    ratios = [per_k(r["sar-bulk"]) / per_k(r["bare"]) for r in rounds]
    net = [per_k(r["sar-bulk"], ours_start) / per_k(r["bare"], bare_start) for r in rounds]
    loop_ratios = [loop_per_k(r["sar-bulk"]) / per_k(r["bare"]) for r in rounds]
    assembly_ms = [
        (r["sar-bulk"].result.cpu - (r["sar-bulk"].main_thread or 0.0)) / count * 1000
        for r in rounds
    ]
    # The least any design could reach while it writes these dossiers: a request path and
    # engine exactly as cheap as the whole bare loop, plus the assembly CPU measured here.
    floors = [
        (r["bare"].result.cpu + r["sar-bulk"].result.cpu - (r["sar-bulk"].main_thread or 0.0))
        / r["bare"].result.cpu
        for r in rounds
    ]
    middle = sorted(range(len(rounds)), key=lambda i: ratios[i])[len(rounds) // 2]
    ours, bare = rounds[middle]["sar-bulk"], rounds[middle]["bare"]
    bench.notes.append(
        f"s4: sar-bulk / bare loop per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"event-loop thread alone: {', '.join(f'{r:.2f}' for r in loop_ratios)} "
        "(each round runs both clients back to back; the median round is shown)."
    )
    name = "s4 client cost"
    peer = "peer: bare loop"
    bench.rows += [
        Row(name, "CPU s per 1,000 requests", per_k(ours), "{:.3f}", peer=per_k(bare), note=peer),
        Row(
            name,
            f"ratio sar-bulk / bare (median of {len(rounds)})",
            ratios[middle],
            "{:.2f}",
            "<= 1.5",
            ratios[middle] <= 1.5,
        ),
        Row(
            name,
            "event-loop thread CPU s per 1,000 requests",
            loop_per_k(ours),
            "{:.3f}",
            peer=per_k(bare),
            note="requests, engine, start-up; peer: the bare loop's whole process",
        ),
        Row(name, "ratio, event-loop thread / bare (median)", median(loop_ratios), "{:.2f}"),
        Row(
            name,
            "other threads' CPU ms per contact",
            median(assembly_ms),
            "{:.1f}",
            note="dossier assembly: answer files, zip, state (the bare loop writes nothing)",
        ),
        Row(
            name,
            "floor: bare loop + this assembly, / bare (median)",
            median(floors),
            "{:.2f}",
            note="the ratio if the event-loop thread cost no more than the whole bare loop",
        ),
        Row(
            name,
            "CPU s per 1,000, start-up excluded",
            per_k(ours, ours_start),
            "{:.3f}",
            peer=per_k(bare, bare_start),
            note=peer,
        ),
        Row(name, "ratio, start-up excluded", median(net), "{:.2f}"),
        Row(
            name,
            "start-up CPU s (interpreter + imports)",
            ours_start,
            "{:.2f}",
            peer=bare_start,
            note=peer,
        ),
        Row(name, "requests", ours.requests, "{:.0f}", peer=bare.requests, note=peer),
        Row(name, "wall s", ours.result.wall, "{:.1f}", peer=bare.result.wall, note=peer),
    ]


# ----- scenario 5: memory -----------------------------------------------------------------------


def _memory_run(
    bench: Bench, tag: str, contacts: Path, sim_flags: list[str], extra: list[str]
) -> tuple[ProcResult, dict[str, Any]]:
    progress(f"{tag}: running")
    with SimulatorProcess(["--seed", "11", *NO_LIMITS, *sim_flags], bench.work) as sim:
        out = bench.work / f"{tag}-out"
        result = run_sar_bulk(bench, sim.url, contacts, out, [*UNCONSTRAINED, *extra])
        require_success(result, f"sar-bulk ({tag})")
        requests = int(sim.identity(SAR_TOKEN)["requests"])
    report = read_report(out)
    bench.runs.append(
        result.record(
            tag,
            requests=requests,
            simulator_cpu_seconds=round(sim.cpu, 3),
            report_totals=report.get("totals"),
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    progress(f"{tag}: {requests} requests, peak {result.peak_mb:.1f} MB, {result.wall:.1f} s")
    return result, report


def memory_scenario(bench: Bench) -> None:
    small, large = bench.sizes.memory_small, bench.sizes.memory_large
    small_csv = make_contacts(bench.work / "s5-small.csv", small, seed=5)
    large_csv = make_contacts(bench.work / "s5-large.csv", large, seed=5)  # starts with small's
    name = "s5 memory"
    first, _ = _memory_run(bench, "s5-small-all-types", small_csv, [], [])
    projected = first.wall * large / small
    types: list[str] = []
    label = "40 types"
    if projected > bench.args.max_large_seconds:
        types, label = ["--types", FEW_TYPES], f"{FEW_TYPES.count(',') + 1} types"
        bench.notes.append(
            f"s5: {large:,} contacts with 40 types would take about {projected:.0f} s "
            f"(> {bench.args.max_large_seconds:g} s), so both sizes were compared with --types "
            f"{FEW_TYPES}."
        )
        bench.rows.append(
            Row(name, f"peak RSS MB, {small:,} contacts, 40 types", first.peak_mb, "{:.1f}")
        )
        first, _ = _memory_run(bench, "s5-small-few-types", small_csv, [], types)
    second, _ = _memory_run(bench, "s5-large", large_csv, [], types)
    growth = (second.peak_mb - first.peak_mb) / first.peak_mb
    bench.rows += [
        Row(name, f"peak RSS MB, {small:,} contacts, {label}", first.peak_mb, "{:.1f}"),
        Row(name, f"peak RSS MB, {large:,} contacts, {label}", second.peak_mb, "{:.1f}"),
        Row(name, "growth, large over small", growth, "{:+.1%}", "within 10%", abs(growth) <= 0.10),
    ]
    heavy = bench.sizes.heavy_interactions
    heavy_csv = bench.work / "s5-heavy.csv"
    heavy_csv.write_text(f"contactid\n{HEAVY_CONTACT}\n")
    sim_flags = ["--heavy", f"{HEAVY_CONTACT}={heavy}", "--page-size", "5000"]
    result, report = _memory_run(bench, "s5-heavy", heavy_csv, sim_flags, ["--page-size", "5000"])
    got = (report.get("totals") or {}).get("interactions")
    bench.rows += [
        Row(
            name,
            f"peak RSS MB, 1 contact x {heavy:,} interactions",
            result.peak_mb,
            "{:.1f}",
            "< 150 MB",
            result.peak_mb < 150,
        ),
        Row(name, "interactions in that dossier", got, "{:,.0f}"),
        Row(name, "wall s for that contact", result.wall, "{:.1f}"),
    ]


# ----- scenarios 7-9: the sources of a today's cloud org (issue 9) -----------------------------

# Limits for 7-8: Dataverse's 6,000 per 300 s scaled 2.5 times in time (6,000 per 120 s, so
# 50/s), 52 at once, 20 ms latency; sar-bulk told the same rate. Real-time exports complete
# ``realtime_delay`` s after they are made, and sar-bulk polls every 12 s (the default 30 s,
# scaled the same). Faster scalings measure the simulator here: serving export files costs it
# about 5 ms of CPU a request.
SOURCES_LIMIT, SOURCES_WINDOW = 6000, 120.0
SOURCES_RATE = SOURCES_LIMIT / SOURCES_WINDOW
SOURCES_POLL = "12"
ONE_TYPE = "EmailSent"


def _sources_sim_flags(org_kind: str, delay: float) -> list[str]:
    return [
        "--seed",
        "11",
        "--org-kind",
        org_kind,
        "--realtime-delay",
        f"{delay:g}",
        "--request-limit",
        str(SOURCES_LIMIT),
        "--window-seconds",
        f"{SOURCES_WINDOW:g}",
        "--concurrency-limit",
        "52",
        "--latency",
        "0.02",
        "--retry-after-format",
        "fractional",
    ]


def _sources_run(
    bench: Bench, tag: str, sim_flags: list[str], count: int, extra: list[str], seed: int
) -> tuple[ProcResult, dict[str, Any], dict[str, Any]]:
    """One sar-bulk run over ``count`` contacts; its result, its identity's counters, report."""
    contacts = make_contacts(bench.work / f"{tag}.csv", count, seed=seed)
    progress(f"{tag}: {count} contacts, sar-bulk {shlex.join(extra)}")
    with SimulatorProcess(sim_flags, bench.work) as sim:
        out = bench.work / f"{tag}-out"
        result = run_sar_bulk(bench, sim.url, contacts, out, extra)
        counters = sim.identity(SAR_TOKEN)
        require_success(result, f"sar-bulk ({tag})")
    report = read_report(out)
    bench.runs.append(
        result.record(
            tag,
            simulator=sim_flags,
            simulator_cpu_seconds=round(sim.cpu, 3),
            counters=counters,
            report_totals=report.get("totals"),
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    progress(
        f"{tag}: {counters['ok']} ok, {counters['throttled']} throttled, {result.wall:.1f} s, "
        f"peak {result.peak_mb:.1f} MB, CPU {result.cpu:.1f} s (simulator {sim.cpu:.1f} s), "
        f"by kind {counters.get('by_kind')}"
    )
    return result, counters, report


def realtime_scenario(bench: Bench) -> None:
    """7: real-time exports at scale: wall time against max(requests / rate, delay), polling."""
    count, delay = bench.sizes.realtime_contacts, bench.sizes.realtime_delay
    flags = _sources_sim_flags("realtime", delay)
    extra = ["--sources", "realtime", "--rate", f"{SOURCES_RATE:g}"]
    extra += ["--realtime-poll", SOURCES_POLL]
    result, counters, _ = _sources_run(bench, "s7-realtime", flags, count, extra, seed=7)
    ok, kinds = int(counters["ok"]), counters["by_kind"]
    ideal = max(ok / SOURCES_RATE, delay)
    ratio = result.wall / ideal
    polls = int(kinds["poll"]) / int(counters["requests"])
    # No run can make its last export request before it has read every contact and made every
    # request before it at the allowed rate: that one completes ``delay`` s later still.
    reachable = max(ok / SOURCES_RATE, (kinds["query"] + kinds["create"]) / SOURCES_RATE + delay)
    name = f"s7 realtime {count:,} x delay {delay:g} s"
    bench.rows += [
        Row(name, "wall / max(ok / rate, delay)", ratio, "{:.3f}", "<= 1.1", ratio <= 1.1),
        Row(name, "wall / max(ok / rate, made / rate + delay)", result.wall / reachable, "{:.3f}"),
        Row(name, "progress polls / all requests", polls, "{:.2%}", "<= 5%", polls <= 0.05),
        Row(name, "wall s", result.wall, "{:.1f}"),
        Row(name, f"ok / {SOURCES_RATE:g} s", ok / SOURCES_RATE, "{:.1f}"),
        Row(name, "exports made", kinds["create"], "{:.0f}"),
        Row(name, "chunk downloads", kinds["download"], "{:.0f}"),
        Row(name, "progress polls", kinds["poll"], "{:.0f}"),
        Row(name, "throttled (429)", counters["throttled"], "{:.0f}"),
    ]
    bench.notes.append(
        f"s7-s8: Dataverse's limits scaled 2.5 times in time ({SOURCES_LIMIT:,} per "
        f"{SOURCES_WINDOW:g} s = {SOURCES_RATE:g}/s, 52 at once, 20 ms latency), sar-bulk's "
        f"--rate {SOURCES_RATE:g} and --realtime-poll {SOURCES_POLL} s (30 s scaled the same)."
    )


def records_scenario(bench: Bench) -> None:
    """8: records only at the scaled limits: limit use and requests per contact."""
    count = bench.sizes.records_contacts
    flags = _sources_sim_flags("realtime", 1.0)
    extra = ["--sources", "records", "--rate", f"{SOURCES_RATE:g}"]
    result, counters, report = _sources_run(bench, "s8-records", flags, count, extra, seed=8)
    ok = int(counters["ok"])
    use = ok / result.wall / SOURCES_RATE
    burst = ok / (SOURCES_LIMIT * (math.floor(result.wall / SOURCES_WINDOW) + 1))
    done = int((report.get("totals") or {}).get("succeeded") or count)
    name = f"s8 records {count:,}"
    bench.rows += [
        Row(name, f"ok req/s / allowed {SOURCES_RATE:g}/s", use, "{:.3f}", ">= 0.95", use >= 0.95),
        Row(name, "ok / most a fresh window allows in wall", burst, "{:.3f}"),
        Row(name, "requests per contact", ok / done, "{:.2f}"),
        Row(name, "throttled / all requests", counters["throttled"] / ok, "{:.2%}"),
        Row(name, "wall s", result.wall, "{:.1f}"),
    ]


def sources_memory_scenario(bench: Bench) -> None:
    """9: peak RSS with all three sources, small against large (no limits, short delay)."""
    small, large = bench.sizes.sources_memory
    flags = ["--seed", "11", "--org-kind", "both", "--realtime-delay", "2", *NO_LIMITS]
    extra = [*UNCONSTRAINED, "--sources", "auto", "--types", ONE_TYPE, "--realtime-poll", "1"]
    first, _, _ = _sources_run(bench, "s9-small", flags, small, extra, seed=9)
    second, _, _ = _sources_run(bench, "s9-large", flags, large, extra, seed=9)
    growth = (second.peak_mb - first.peak_mb) / first.peak_mb
    name = "s9 memory, 3 sources"
    bench.rows += [
        Row(name, f"peak RSS MB, {small:,} contacts", first.peak_mb, "{:.1f}"),
        Row(name, f"peak RSS MB, {large:,} contacts", second.peak_mb, "{:.1f}"),
        Row(name, "growth, large over small", growth, "{:+.1%}", "within 10%", abs(growth) <= 0.10),
        Row(name, f"wall s, {large:,} contacts", second.wall, "{:.1f}"),
    ]
    bench.notes.append(
        f"s9: org kind 'both' (action, tables and exports), no request limits, exports complete "
        f"after 2 s, polled every 1 s; --types {ONE_TYPE} to keep the large run short."
    )


# ----- output -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def table(rows: list[Row]) -> str:
    header = ("scenario", "figure", "sar-bulk", "goal", "result", "peer")
    lines = [
        (
            r.scenario,
            r.figure,
            r.shown(r.value),
            r.goal or "-",
            r.verdict(),
            "" if r.peer is None else f"{r.shown(r.peer)} ({r.note.removeprefix('peer: ')})",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in lines)])


def write_json(bench: Bench, info: dict[str, Any], finished: bool) -> None:
    path: Path = bench.args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        **info,
        "finished": finished,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_now": [round(x, 2) for x in os.getloadavg()],
        "rows": [dataclasses.asdict(r) | {"result": r.verdict()} for r in bench.rows],
        "runs": bench.runs,
        "notes": bench.notes,
        "errors": bench.errors,
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


@contextmanager
def work_folder(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sar-bulk-bench-"))
    try:
        yield folder
    finally:
        if keep:
            progress(f"work folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


STANDING_NOTES = (
    "Limits are Dataverse's scaled ten times in time (600 per 30 s instead of 6,000 per 300 s). "
    "The simulator's window starts empty, so over a run of T s a client may get up to "
    "600 x (floor(T/30) + 1) requests through, more than 20/s x T; 'ok / most a fresh window "
    "allows' and the burst-aware ideal time show the figures against that bound.",
    "Figures 1-3 are from the simulator's counters per identity (sar-bulk's include its one "
    "pre-flight call); wall time is around the client process, start-up included.",
    "CPU and peak RSS are those of the client process alone (os.wait4); the simulator runs in a "
    "process of its own.",
    "The machine is shared with other engineers' test runs: wall-time figures are noisy; CPU "
    "seconds and peak RSS much less so. See the load averages.",
)


SOURCE_SCENARIOS: tuple[tuple[int, Callable[[Bench], None]], ...] = (
    (7, realtime_scenario),
    (8, records_scenario),
    (9, sources_memory_scenario),
)


def _pair(text: str) -> tuple[int, int]:
    small, _, large = text.partition(",")
    return int(small), int(large)


def _parse_only(text: str) -> set[int]:
    chosen = {int(part) for part in text.split(",") if part.strip()}
    if not chosen <= set(range(1, 10)):
        raise argparse.ArgumentTypeError("scenarios are numbered 1 to 9")
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only",
        type=_parse_only,
        default=set(range(1, 10)),
        metavar="N[,N]",
        help="run only these scenarios (1-6)",
    )
    parser.add_argument(
        "--contacts", type=int, default=None, help="contacts for scenario 1 (2 uses half)"
    )
    parser.add_argument(
        "--pool-contacts", type=int, default=None, help="contacts per identity for scenario 6"
    )
    parser.add_argument(
        "--retry-after-format",
        default="fractional",
        choices=("seconds", "fractional", "http-date"),
        help="simulator's Retry-After in 1-3 (fractional suits scaled time)",
    )
    parser.add_argument(
        "--max-large-seconds",
        type=float,
        default=360.0,
        help="longest acceptable all-types run for the large memory size",
    )
    parser.add_argument(
        "--cost-rounds", type=int, default=3, help="interleaved rounds of scenario 4 (median)"
    )
    parser.add_argument("--realtime-delay", type=float, help="seconds an export takes in 7")
    parser.add_argument("--sources-memory", type=_pair, help="SMALL,LARGE contacts for 9")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per client run")
    parser.add_argument("--json", type=Path, default=Path("bench-results/bench.json"))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.sources_memory is not None:
        sizes = dataclasses.replace(sizes, sources_memory=args.sources_memory)
    if args.realtime_delay is not None:
        sizes = dataclasses.replace(sizes, realtime_delay=args.realtime_delay)
    if args.contacts is not None:
        sizes = dataclasses.replace(sizes, limits_contacts=args.contacts)
    if args.pool_contacts is not None:
        sizes = dataclasses.replace(sizes, pool_contacts=args.pool_contacts)
    try:
        import sar_bulk  # the package must be importable by this interpreter
    except ImportError:
        print(
            f"bench: sar_bulk is not installed for {PYTHON}; use the project's venv",
            file=sys.stderr,
        )
        return 2
    info = {
        "command": shlex.join([PYTHON, *sys.argv]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sar_bulk_version": sar_bulk.__version__,
        "machine": machine(),
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
    }
    with work_folder(args.keep) as work:
        bench = Bench(args, sizes, work, notes=list(STANDING_NOTES))
        steps: list[tuple[str, Callable[[], None]]] = []
        for key, limit, count in (
            ("s1", 600, sizes.limits_contacts),
            ("s2", 300, max(1, sizes.limits_contacts // 2)),
        ):
            clients = [c for n, c in ((int(key[1]), "sar-bulk"), (3, "naive")) if n in args.only]
            if clients:
                steps.append((key, _bind_limits(bench, key, limit, count, clients)))
        if 4 in args.only:
            steps.append(("s4", lambda: cost_scenario(bench)))
        if 5 in args.only:
            steps.append(("s5", lambda: memory_scenario(bench)))
        if 6 in args.only:
            steps.append(("s6", lambda: pool_scenario(bench)))
        steps += [
            (f"s{n}", functools.partial(f, bench)) for n, f in SOURCE_SCENARIOS if n in args.only
        ]
        for key, step in steps:
            try:
                step()
            except BenchError as exc:
                bench.errors.append(f"{key}: {exc}")
                progress(f"{key} FAILED: {exc}")
            write_json(bench, info, finished=False)
        write_json(bench, info, finished=True)
    _print_results(bench, info)
    return 1 if bench.errors else 0


def _bind_limits(
    bench: Bench, key: str, limit: int, count: int, clients: list[str]
) -> Callable[[], None]:
    return lambda: limits_scenario(bench, key, limit, 30.0, count, clients)


def _print_results(bench: Bench, info: dict[str, Any]) -> None:
    m = info["machine"]
    print(f"sar-bulk {info['sar_bulk_version']} benchmark, {info['started_at']}")
    print(f"machine: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['platform']}")
    print(
        f"load average at start {m['load_average_at_start']}, at end "
        f"{[round(x, 2) for x in os.getloadavg()]} (shared machine)"
    )
    print(f"command: {info['command']}")
    if info["quick"]:
        print("QUICK RUN: sizes are tiny, the figures only show that everything works.")
    print()
    print(table(bench.rows))
    print()
    for note in bench.notes:
        print(f"note: {note}")
    for error in bench.errors:
        print(f"ERROR: {error}")
    print(f"\nJSON: {bench.args.json}")


if __name__ == "__main__":
    sys.exit(main())
