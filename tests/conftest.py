"""Shared test set-up: every test runs in its own temporary working folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azurite import Azurite


@pytest.fixture(autouse=True)
def _own_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing a test writes by accident can land in the repository or another test's files.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def azurite(tmp_path: Path) -> AsyncIterator[Azurite]:
    """An Azurite blob service on loopback, its data in this test's folder, stopped after it."""
    async with Azurite.started(tmp_path / "azurite") as emulator:
        yield emulator
