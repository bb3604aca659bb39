"""Running the ``sar-bulk`` command as a real process, the way a user or a scheduler runs it.

Tests that start the simulator in-process keep it in their own event loop, so it outlives any
command the test starts (or kills) and its counters show what every run fetched; that is why the
runners here are async and never block the loop while a command runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import zipfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from support import dossier_names

CLI: tuple[str, ...] = (sys.executable, "-m", "sar_bulk.cli")
# Fast retries (the faults are many, the test machine is small), and a pace far above the
# default 20 requests/s: the simulator's request limit is not what these tests are about.
FAST: tuple[str, ...] = ("--retry-base", "0.05", "--retry-cap", "0.5", "--rate", "1000")
SIM_TOKEN = "sim-reliability.1"
COMMAND_TIMEOUT = 120.0
SIMULATOR_URL = re.compile(r"http://127\.0\.0\.1:\d+")


@dataclass(frozen=True, slots=True)
class CliResult:
    """How one ``sar-bulk`` process ended and what it printed."""

    code: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        """For assertion messages: the tail of what the command printed."""
        tail = 3000
        return (
            f"exit {self.code}\n--- stdout\n{self.stdout[-tail:]}\n"
            f"--- stderr\n{self.stderr[-tail:]}"
        )


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any sar-bulk or Azure setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAR_BULK_", "AZURE_"))}
    env.update(extra)
    return env


def token_env(token: str = SIM_TOKEN, **extra: str) -> dict[str, str]:
    """An environment for ``--auth static-token`` with ``token``."""
    return cli_env(SAR_BULK_TOKEN=token, **extra)


def run_args(org: str, contacts: Path, out: Path | str, *extra: str) -> list[str]:
    """``sar-bulk run`` arguments for a static-token run with fast retries (the action's source
    only, unless ``extra`` gives ``--sources``); ``out`` a folder or a container URL."""
    sources = [] if "--sources" in extra else ["--sources", "interactions"]
    return [
        "run",
        "--auth",
        "static-token",
        "--org",
        org,
        "--contacts",
        str(contacts),
        "--out",
        str(out),
        "--no-progress",
        *FAST,
        *sources,
        *extra,
    ]


async def _spawn(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, stdout: int, stderr: int
) -> asyncio.subprocess.Process:
    """Start ``sar-bulk ARGS`` with no standard input, as a scheduler would."""
    return await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )


async def start_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    log: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start ``sar-bulk ARGS``; its output goes to ``log`` (or nowhere), never to a full pipe."""
    target = log.open("ab") if log is not None else None
    try:
        output = target.fileno() if target is not None else asyncio.subprocess.DEVNULL
        return await _spawn(args, env=env, cwd=cwd, stdout=output, stderr=output)
    finally:
        if target is not None:
            target.close()


async def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    time_limit: float = COMMAND_TIMEOUT,
) -> CliResult:
    """Run ``sar-bulk ARGS`` to its end (the simulator keeps serving meanwhile).

    ``env`` defaults to :func:`cli_env`, so no setting of the test's own shell leaks in.
    """
    pipe = asyncio.subprocess.PIPE
    process = await _spawn(
        args, env=cli_env() if env is None else env, cwd=cwd, stdout=pipe, stderr=pipe
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"sar-bulk {' '.join(args)} did not end within {time_limit} s"
        ) from None
    assert process.returncode is not None
    return CliResult(
        process.returncode,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
    )


async def run_tool(*argv: str) -> tuple[int, str]:
    """Run another program (``unzip``) to its end; its exit code and combined output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


@asynccontextmanager
async def simulate_command(*flags: str) -> AsyncIterator[str]:
    """``sar-bulk simulate FLAGS`` in its own process on a free port, as a user would start it;
    yields the address it says it listens on, and stops it afterwards."""
    process = await _spawn(
        ["simulate", "--port", "0", *flags],
        env=cli_env(),
        cwd=None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), COMMAND_TIMEOUT)
        match = SIMULATOR_URL.search(line.decode("utf-8", "replace"))
        assert match, f"the simulator did not say where it listens: {line!r}"
        yield match.group(0)
    finally:
        with suppress(ProcessLookupError):
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def assert_zip_consumers_accept(out: Path) -> None:
    """``sar-bulk verify`` (the command), zipfile's CRC test and Info-ZIP all accept each file."""
    verified = await run_cli(["verify", str(out)], env=cli_env())
    assert verified.code == 0, verified.explain()
    paths = sorted(out / name for name in dossier_names(out))
    assert paths, "no dossier to check"
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None, path.name
    if shutil.which("unzip") is None:
        return  # Info-ZIP is not installed here: only this reader's check is left out
    for path in paths:
        code, output = await run_tool("unzip", "-tq", str(path))
        assert code == 0, f"unzip -t {path.name}: {output}"
