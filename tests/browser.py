"""A real headless Chromium for tests, driven over the Chrome DevTools Protocol with aiohttp.

Usage::

    async with Chromium.start(tmp_path / "profile") as browser:
        page = await browser.new_page(width=1000, height=800)
        seconds = await page.load(html_path)                  # navigate -> load event
        text = await page.evaluate("document.body.innerText")
        await page.screenshot(tmp_path / "page.png")
        assert not page.problems                              # console, log, exceptions, network

Why this and not a browser-automation package: the project already depends on aiohttp, Debian
ships Chromium (``apt-get install chromium``; ``.ci/run`` does it), and CDP over one websocket is
all a test needs. Nothing is downloaded. The browser listens on a port it picks itself
(``--remote-debugging-port=0``) and writes it to ``DevToolsActivePort`` in its profile folder.

If Chromium is missing, ``start`` raises ``BrowserMissing``: the tests turn that into a failure
with the install command, never a skip, so CI cannot pass without having looked at a page.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

__all__ = ["BrowserMissing", "Chromium", "Page", "find_chromium"]

_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
_START_TIMEOUT: Final = 30.0
_CALL_TIMEOUT: Final = 30.0


class BrowserMissing(RuntimeError):
    """No Chromium binary on this machine."""


def find_chromium() -> str:
    for candidate in (os.environ.get("SAR_BULK_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    raise BrowserMissing(
        "Chromium is not installed, so the answer cannot be checked in a real browser: "
        "run `apt-get update && apt-get install -y chromium` (.ci/run does this), "
        "or point SAR_BULK_CHROMIUM at a chromium binary"
    )


class _Connection:
    """One websocket to the browser; commands by id, events handed to the page they belong to."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._ws.send_json(message)
        reply = await asyncio.wait_for(future, _CALL_TIMEOUT)
        if "error" in reply:
            raise RuntimeError(f"CDP {method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif (page := self.pages.get(data.get("sessionId", ""))) is not None:
                page.on_event(data["method"], data.get("params", {}))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("the browser closed the DevTools connection"))

    async def close(self) -> None:
        self._reader.cancel()
        # wait() neither raises the reader's cancellation nor hides a cancellation of close().
        await asyncio.wait([self._reader])
        await self._ws.close()


@dataclass
class Page:
    """One tab. ``problems`` collects console output, log errors, exceptions and network use."""

    connection: _Connection
    session: str
    problems: list[str] = field(default_factory=list)
    _loaded: asyncio.Event = field(default_factory=asyncio.Event)
    _allowed_url: str = ""

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.consoleAPICalled":
            self.problems.append(f"console.{params.get('type')}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            self.problems.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.problems.append(f"log {entry.get('level')}: {entry.get('text')}")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if url != self._allowed_url and not url.startswith("data:"):
                self.problems.append(f"network request: {url}")

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.connection.call(method, params, self.session)

    async def load(self, path: Path) -> float:
        """Open ``path`` (absolute); seconds from navigate to the load event (wall clock)."""
        self._allowed_url = path.as_uri()
        self._loaded.clear()
        started = time.perf_counter()
        await self.call("Page.navigate", {"url": self._allowed_url})
        await asyncio.wait_for(self._loaded.wait(), _CALL_TIMEOUT)
        return time.perf_counter() - started

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"evaluating {expression!r} failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def resize(self, width: int, height: int, scale: float = 1.0) -> None:
        """The viewport in CSS pixels; ``scale`` 2 at half the width is what 200 % zoom shows."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": False},
        )

    async def screenshot(self, path: Path, *, top: int = 0, max_height: int = 4000) -> bytes:
        """A PNG of the page from ``top`` down, at most ``max_height`` CSS pixels of it."""
        size = await self.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        width, height = int(size[0]), min(int(size[1]) - top, max_height)
        reply = await self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": top, "width": width, "height": height, "scale": 1},
            },
        )
        png = base64.b64decode(reply["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, png)
        return png


class Chromium:
    """A running headless Chromium with one DevTools connection."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        http: aiohttp.ClientSession,
        connection: _Connection,
    ) -> None:
        self._process = process
        self._http = http
        self._connection = connection

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, profile: Path) -> AsyncIterator[Chromium]:
        binary = find_chromium()
        await asyncio.to_thread(_fresh_profile, profile)
        process = await asyncio.create_subprocess_exec(
            binary,
            *_FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            endpoint = await _endpoint(process, profile / "DevToolsActivePort")
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(endpoint, max_msg_size=64 * 1024 * 1024)
                connection = _Connection(ws)
                try:
                    yield cls(process, http, connection)
                finally:
                    with contextlib.suppress(RuntimeError, ConnectionError, TimeoutError):
                        await connection.call("Browser.close")
                    await connection.close()
        finally:
            if process.returncode is None:
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()

    async def new_page(self, *, width: int = 1000, height: int = 800) -> Page:
        target = await self._connection.call("Target.createTarget", {"url": "about:blank"})
        attached = await self._connection.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self._connection, attached["sessionId"])
        self._connection.pages[page.session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            await page.call(f"{domain}.enable")
        await page.resize(width, height)
        return page


def _fresh_profile(profile: Path) -> None:
    profile.mkdir(parents=True, exist_ok=True)
    # A port file left by an earlier browser in this profile would point at a dead port.
    (profile / "DevToolsActivePort").unlink(missing_ok=True)


async def _endpoint(process: asyncio.subprocess.Process, port_file: Path) -> str:
    """Wait for the browser to write its port; the websocket address of the browser target."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"Chromium exited with status {process.returncode} at start")
        with contextlib.suppress(FileNotFoundError):
            lines = (await asyncio.to_thread(port_file.read_text)).split()
            if len(lines) == 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise RuntimeError(f"Chromium did not open its DevTools port within {_START_TIMEOUT:.0f} s")
