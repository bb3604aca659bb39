"""Names and dates in a manifest are matched whole: a trailing newline is not let through.

Python's ``$`` also matches before a final newline, so ``re.match`` with ``^...$`` accepted
``"01-31-2024\\n"`` as a date and ``"a.json\\n"`` as a plain name segment.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from test_verify import EXPORT, _dossier, _listed, _members, _problems, _rebuild, _tamper

from sar_bulk.dossier.format import entry_problem, source_problem
from sar_bulk.sources.base import Part


@pytest.fixture
async def good(tmp_path: Path) -> Path:
    return await _dossier(tmp_path / "out")


def test_a_date_with_a_trailing_newline_is_not_a_date(good: Path) -> None:
    _tamper(good, lambda members, manifest: manifest["question"].update(date_from="01-31-2024\n"))
    assert "manifest: question.date_from is neither null nor MM-DD-YYYY" in _problems(good)


def test_a_member_named_with_a_trailing_newline_is_refused(good: Path) -> None:
    renamed = f"{EXPORT}\n"
    members = _members(good)
    manifest = orjson.loads(members["manifest.json"])
    _listed(manifest, EXPORT)["name"] = renamed
    members = {renamed if n == EXPORT else n: d for n, d in members.items()}
    members["manifest.json"] = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    _rebuild(good, members)
    expected = f"entry {renamed!r} of part realtime has a name that is not allowed"
    assert f"manifest: {expected}" in _problems(good)


@pytest.mark.parametrize("name", ["realtime/x.json\n", "realtime/a\n/x.json"])
def test_entry_names_with_a_newline_are_refused_by_the_writer_too(name: str) -> None:
    assert entry_problem(Part("realtime", "realtime"), name, "file") is not None


def test_a_source_name_with_a_trailing_newline_is_refused() -> None:
    assert source_problem("records\n") is not None
    assert source_problem("records") is None
