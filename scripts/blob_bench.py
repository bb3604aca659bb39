"""Wall time of the same simulator run with a local folder vs an Azurite container as output.

Usage::

    .venv/bin/python scripts/blob_bench.py                       # 200 contacts, 3 runs each
    .venv/bin/python scripts/blob_bench.py --contacts 500 --repeat 5 --latency 0

The simulator (``sar-bulk simulate``) and Azurite (``.ci-node``, see .ci/run) run as processes
on loopback; each sar-bulk run is a fresh process with a fresh output (folder, or container
prefix) and state, alternating local and blob so that machine noise hits both alike. Prints the
median wall time of each and the ratio blob / local (the target is at most 1.1).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / ".ci-node" / "node_modules" / ".bin" / "azurite-blob"
CLI = [sys.executable, "-m", "sar_bulk.cli"]
TOKEN = "sim-bench.1"  # noqa: S105 - the simulator's fake token, not a secret
# Azurite's documented development key: public, loopback only.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the process on port {port} ended early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one sar-bulk process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"sar-bulk exited {result.returncode}:\n{result.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.02, help="simulator latency, s")
    options = parser.parse_args()
    if not AZURITE.exists():
        raise SystemExit(f"{AZURITE} is missing: npm install --no-save --prefix .ci-node azurite")
    work = Path(tempfile.mkdtemp(prefix="sar-bulk-blob-bench-"))
    contacts = work / "contacts.csv"
    ids = [str(uuid.UUID(int=n * 7919 + 1, version=4)) for n in range(options.contacts)]
    contacts.write_text("ContactId\n" + "\n".join(ids) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAR_BULK_", "AZURE_"))}
    env["SAR_BULK_TOKEN"] = TOKEN

    port = _free_port()
    azurite = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(work / "azurite"), "--silent", "--skipApiVersionCheck", "--loose"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    simulator = subprocess.Popen(
        [*CLI, "simulate", "--port", "0", "--latency", str(options.latency),
         "--request-limit", "1000000000"],
        env=env,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_port(port, azurite)
        assert simulator.stdout is not None
        match = re.search(rb"http://127\.0\.0\.1:\d+", simulator.stdout.readline())
        if match is None:
            raise SystemExit("the simulator did not say where it listens")
        org = match.group(0).decode()
        account = f"http://127.0.0.1:{port}/devstoreaccount1"
        blob_env = env | {
            "AZURE_STORAGE_CONNECTION_STRING": (
                f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                f"AccountKey={DEV_KEY};BlobEndpoint={account};"
            )
        }
        common = ["run", "--auth", "static-token", "--org", org, "--contacts", str(contacts),
                  "--sources", "interactions", "--no-progress", "--rate", "1000",
                  "--log-level", "warning"]  # fmt: skip
        local: list[tuple[float, float]] = []
        blob: list[tuple[float, float]] = []
        for n in range(options.repeat):
            local.append(_run([*common, "--out", str(work / f"local-{n}")], env))
            blob.append(
                _run(
                    [*common, "--out", f"{account}/bench/run-{n}", "--work", str(work / f"w{n}")],
                    blob_env,
                )
            )
            print(
                f"run {n + 1}: local {local[-1][0]:.2f} s (cpu {local[-1][1]:.2f} s), "
                f"blob {blob[-1][0]:.2f} s (cpu {blob[-1][1]:.2f} s)",
                file=sys.stderr,
            )
    finally:
        for process in (simulator, azurite):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    local_s, blob_s = (statistics.median(w for w, _ in runs) for runs in (local, blob))
    local_cpu, blob_cpu = (statistics.median(c for _, c in runs) for runs in (local, blob))
    print(
        f"{options.contacts} contacts, simulator latency {options.latency * 1000:.0f} ms, "
        f"median of {options.repeat}: local {local_s:.2f} s, blob (Azurite) {blob_s:.2f} s, "
        f"ratio {blob_s / local_s:.3f}; sar-bulk CPU local {local_cpu:.2f} s, "
        f"blob {blob_cpu:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
