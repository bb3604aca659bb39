"""The folder target (``LocalTarget``) never writes through what is planted in the folder."""

from __future__ import annotations

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
