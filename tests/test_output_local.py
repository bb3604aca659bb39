"""The folder target (``LocalTarget``) never writes through what is planted in the folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path

from sar_bulk.output.target import LocalTarget


async def test_put_report_does_not_write_through_a_planted_link(tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = LocalTarget(out)
    await target.prepare()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    # Where the report used to be staged: a name anyone who can write the folder can guess.
    (out / f".run-report.json.{os.getpid()}.tmp").symlink_to(victim)
    await target.put_report("run-report.json", b'{"ok": true}\n')
    assert victim.read_text() == "untouched"
    report = out / "run-report.json"
    assert not report.is_symlink()
    assert report.read_bytes() == b'{"ok": true}\n'
    assert stat.S_IMODE(report.stat().st_mode) == 0o600


async def test_lookup_never_reads_a_pipe_or_follows_a_link_planted_at_a_dossier_name(
    tmp_path: Path,
) -> None:
    """A FIFO at a dossier's name would block the run for ever if it were read; a link would
    lead the digest elsewhere. Either is something there, but not a dossier this tool wrote."""
    out = tmp_path / "out"
    target = LocalTarget(out)
    await target.prepare()
    os.mkfifo(out / "pipe.zip")
    elsewhere = tmp_path / "elsewhere.zip"
    elsewhere.write_bytes(b"not ours")
    (out / "link.zip").symlink_to(elsewhere)
    try:
        async with asyncio.timeout(5):
            pipe = await target.lookup("pipe.zip")
            link = await target.lookup("link.zip")
    finally:
        # Were the pipe opened for reading, its thread would wait for a writer for ever.
        with contextlib.suppress(OSError):
            os.close(os.open(out / "pipe.zip", os.O_WRONLY | os.O_NONBLOCK))
    assert pipe is not None
    assert pipe.sha256 == ""
    assert link is not None
    assert link.sha256 == ""
