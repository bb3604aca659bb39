"""What is planted under a dossier's name in an output folder is refused, never followed or awaited.

A symbolic link named ``<id>.zip`` (to a dossier elsewhere, or to anything) is not a dossier in
the folder: verify names it, and a resume fetches the contact again instead of adopting the link.
A FIFO under that name would block any ``open`` until someone writes to it: verify and the resume
must answer at once. Real files, a real FIFO, the simulator over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from support import contact_ids, read_report, run_config, run_engine, write_csv
from test_verify import _dossier

from sar_bulk.dossier.verify import file_sha256, run_verify_command, verify_dossier
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import InteractionType

SIMULATOR = SimulatorConfig(seed=67, heavy_fraction=0.0)
_T = TypeVar("_T")


async def _soon(fifo: Path, work: Callable[[], Awaitable[_T]]) -> _T:
    """``work``'s result within 30 s; if it blocks on ``fifo``, unblock it and fail."""
    task = asyncio.ensure_future(work())
    done, _ = await asyncio.wait([task], timeout=30)
    if not done:
        # A reader blocked in open() of the FIFO: open the other end so that it returns.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        await task
        pytest.fail(f"blocked on the FIFO {fifo.name}")
    return task.result()


async def test_verify_names_a_symbolic_link_and_does_not_follow_it(tmp_path: Path) -> None:
    real = await _dossier(tmp_path / "elsewhere")
    assert verify_dossier(real).ok
    out = tmp_path / "out"
    out.mkdir()
    link = out / real.name
    link.symlink_to(real)
    result = verify_dossier(link)
    assert not result.ok
    assert result.problems == (
        f"{real.name} is a symbolic link, not a dossier file: verify the file it points to",
    )
    sealed = out / f"{real.name}.age"  # an encrypted name: refused before any decryption
    sealed.symlink_to(real)
    assert verify_dossier(sealed).problems == (
        f"{sealed.name} is a symbolic link, not a dossier file: verify the file it points to",
    )
    text = tmp_path / "verify.txt"
    with text.open("w") as stream:
        assert run_verify_command([str(out)], as_json=False, out=stream) == 1
    assert "is a symbolic link" in text.read_text()


async def test_verify_and_hashing_refuse_a_fifo_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "0f8fad5b-d9cb-469f-a165-70867728950e.zip"
    os.mkfifo(fifo, 0o600)
    result = await _soon(fifo, lambda: asyncio.to_thread(verify_dossier, fifo))
    assert result.problems == (f"{fifo.name} is not a regular file, not a dossier",)
    with pytest.raises(OSError, match="not a regular file"):
        await _soon(fifo, lambda: asyncio.to_thread(file_sha256, fifo))


async def test_a_resume_fetches_again_what_a_link_or_fifo_holds_the_name_of(
    tmp_path: Path,
) -> None:
    linked, piped = contact_ids(2, 67)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", linked, piped])
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    async with Simulator(SIMULATOR) as sim:
        # A complete dossier of the same contact and question, in another folder...
        config = run_config(sim, csv, elsewhere, types=InteractionType.EmailSent)
        assert (await run_engine(config)).code == 0
        # ...linked into a fresh output folder, next to a FIFO under the other contact's name.
        out.mkdir(mode=0o700)
        (out / f"{linked}.zip").symlink_to(elsewhere / f"{linked}.zip")
        fifo = out / f"{piped}.zip"
        os.mkfifo(fifo, 0o600)
        before = (elsewhere / f"{linked}.zip").read_bytes()
        config = run_config(sim, csv, out, types=InteractionType.EmailSent)
        outcome = await _soon(fifo, lambda: run_engine(config))
    assert outcome.code == 0
    totals = read_report(out)["totals"]
    assert totals["succeeded"] == 2
    assert totals["skipped_already_done"] == 0
    for contact in (linked, piped):
        path = out / f"{contact}.zip"
        assert path.is_file()
        assert not path.is_symlink()
        assert verify_dossier(path).ok
    assert (elsewhere / f"{linked}.zip").read_bytes() == before  # the link's target untouched
    shutil.rmtree(elsewhere)


async def test_a_resume_never_takes_a_link_or_fifo_for_a_recorded_dossier(tmp_path: Path) -> None:
    """The state recorded both dossiers as done; since then one name is a link to an identical
    copy elsewhere and the other a FIFO. Neither is adopted: both are fetched again."""
    linked, piped = contact_ids(2, 68)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", linked, piped])
    out = tmp_path / "out"
    async with Simulator(SIMULATOR) as sim:
        config = run_config(sim, csv, out, types=InteractionType.EmailSent)
        assert (await run_engine(config)).code == 0
        copy = tmp_path / "copy.zip"
        shutil.copyfile(out / f"{linked}.zip", copy)
        (out / f"{linked}.zip").unlink()
        (out / f"{linked}.zip").symlink_to(copy)
        fifo = out / f"{piped}.zip"
        fifo.unlink()
        os.mkfifo(fifo, 0o600)
        outcome = await _soon(fifo, lambda: run_engine(config))
    assert outcome.code == 0
    totals = read_report(out)["totals"]
    assert (totals["succeeded"], totals["skipped_already_done"]) == (2, 0)
    for contact in (linked, piped):
        path = out / f"{contact}.zip"
        assert path.is_file()
        assert not path.is_symlink()
        assert verify_dossier(path).ok
