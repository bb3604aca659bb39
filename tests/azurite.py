"""Azurite, Microsoft's Blob Storage emulator, as a real process on loopback for the blob tests.

Usage::

    async with Azurite.started(tmp_path / "azurite") as azurite:
        url = azurite.container_url("dossiers", "nightly")   # http://127.0.0.1:P/devstoreaccount1/..
        env = azurite.env()                                  # AZURE_STORAGE_CONNECTION_STRING
        await azurite.stop()                                 # mid-run outage
        azurite.pause(); azurite.resume()                    # a stall: SIGSTOP / SIGCONT
        await azurite.start()                                # same port, same data

Azurite comes from the npm package pinned in ``.ci/run``, installed into the project-local
``.ci-node/`` folder (``npm install --no-save --prefix .ci-node azurite@3.37.0``). Without it the
tests FAIL saying how to install it: a blob test that is silently skipped proves nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
AZURITE_BIN: Final = ROOT / ".ci-node" / "node_modules" / ".bin" / "azurite-blob"
INSTALL: Final = "npm install --no-save --prefix .ci-node azurite@3.37.0"
ACCOUNT: Final = "devstoreaccount1"
# The emulator's documented, public development key: not a secret.
ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_READY_WITHIN: Final = 30.0


def azurite_command() -> Path:
    """The ``azurite-blob`` launcher; fails the test with the install command when absent."""
    override = os.environ.get("SAR_BULK_AZURITE_BIN")
    command = Path(override) if override else AZURITE_BIN
    if not command.exists():
        pytest.fail(
            f"Azurite is not installed ({command} is missing): run `{INSTALL}` in {ROOT} "
            "(.ci/run does), with Node.js on PATH"
        )
    return command


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Azurite:
    """One emulator with its data in ``location``; stop and start it again on the same port."""

    def __init__(self, location: Path, port: int | None = None) -> None:
        self.location = location
        self.port = port or _free_port()
        self._process: asyncio.subprocess.Process | None = None
        self._log = location / "azurite.log"

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def container_url(self, container: str, prefix: str = "") -> str:
        return f"{self.account_url}/{container}" + (f"/{prefix}" if prefix else "")

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        command = azurite_command()
        self.location.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                str(command),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(self.location),
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READY_WITHIN
        while loop.time() < deadline:
            assert self._process is not None
            if self._process.returncode is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return
        log = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
        await self.stop()
        pytest.fail(f"Azurite did not answer on port {self.port} within {_READY_WITHIN} s:\n{log}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        closed_before = self._closed_count()
        process.terminate()
        # Azurite saves its data and says so on SIGTERM, but node may linger for seconds on
        # idle timers afterwards: once it has said so, killing it loses nothing.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while process.returncode is None and loop.time() < deadline:
            if self._closed_count() > closed_before:
                break
            try:
                await asyncio.wait_for(process.wait(), 0.05)
            except TimeoutError:
                continue
        if process.returncode is None:
            process.kill()
        await process.wait()

    def pause(self) -> None:
        """Freeze the emulator (SIGSTOP): the kernel still accepts connections, nothing answers,
        as a store behind a stalled proxy or a hung gateway behaves."""
        assert self._process is not None
        assert self._process.returncode is None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGCONT)

    def _closed_count(self) -> int:
        if not self._log.exists():
            return 0
        return self._log.read_text(errors="replace").count("successfully closed")

    @classmethod
    @asynccontextmanager
    async def started(cls, location: Path) -> AsyncIterator[Azurite]:
        azurite = cls(location)
        await azurite.start()
        try:
            yield azurite
        finally:
            await azurite.stop()
