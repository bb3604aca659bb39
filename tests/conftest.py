"""Shared test set-up: every test runs in its own temporary working folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing a test writes by accident can land in the repository or another test's files.
    monkeypatch.chdir(tmp_path)
