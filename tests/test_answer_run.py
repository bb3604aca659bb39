"""A real ``sar-bulk run`` with a ``[controller]`` statement: its dossier's index.html in Chromium.

The simulator plays today's cloud org (``org_kind="realtime"``: records and real-time exports,
no outbound-marketing action), its exports ready after half a second. The command runs as a user
runs it; the test then opens a dossier's index.html in a real headless Chromium and reads what a
person would read, and checks README.txt says the same. Chromium missing is a failure, never a
skip (see tests/browser.py). Screenshot: ``SAR_BULK_SCREENSHOTS=docs/screenshots pytest
tests/test_answer_run.py`` (an absolute path: tests run in their tmp_path) wrote
docs/screenshots/dossier-index.png.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from browser import BrowserMissing, Chromium, Page
from cli_support import cli_env, run_args, run_cli, token_env
from support import contact_ids, dossier_names, read_report, write_csv

from sar_bulk.answer.wording import table_label
from sar_bulk.simulator import Simulator, SimulatorConfig

CONTROLLER_TOML = """
[controller]
name = "Contoso Ltd"
address = "1 Harbour Street, Dublin 2, Ireland"
contact = "privacy@contoso.example"
dpo = "dpo@contoso.example"
supervisory_authority = "Data Protection Commission, 21 Fitzwilliam Square, Dublin 2"
categories = ["Identity and contact details", "Consent choices"]
recipients = ["Microsoft Ireland Operations Ltd, our processor for Dynamics 365"]
retention = "Contact records are deleted 24 months after the last interaction."
source_of_data = "You, and event partners who share registrations with us."
automated_decisions = "None."
transfers = []

[[controller.purposes]]
purpose = "Sending our newsletter"
legal_basis = "Consent, Article 6(1)(a) GDPR"
"""
SOURCES = ("--sources", "records,realtime", "--realtime-poll", "0.2")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    try:
        async with Chromium.start(tmp_path / "profile") as chromium:
            yield chromium
    except BrowserMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(seed=11, org_kind="realtime", realtime_delay=0.5, request_limit=10**9)
    async with Simulator(config) as sim:
        yield sim


async def _run(sim: Simulator, tmp_path: Path, *extra: str) -> tuple[Path, str]:
    """Run over two contacts; the output folder and what the command logged."""
    contacts = write_csv(tmp_path / "contacts.csv", ["contactid", *contact_ids(2, seed=3)])
    out = tmp_path / "out"
    result = await run_cli(run_args(sim.base_url, contacts, out, *SOURCES, *extra), env=token_env())
    assert result.code == 0, result.explain()
    assert len(dossier_names(out)) == 2
    return out, result.stdout + result.stderr


def _open(path: Path, into: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and members of a dossier; index.html is also unpacked into ``into``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    into.mkdir(parents=True)
    (into / "index.html").write_bytes(members["index.html"])
    return orjson.loads(members["manifest.json"]), members


async def _text(page: Page) -> str:
    text: str = await page.evaluate("document.body.innerText")
    return " ".join(text.split())


def _flat(data: bytes) -> str:
    return " ".join(data.decode("utf-8").split())


def _entries(manifest: dict[str, Any], source: str) -> list[dict[str, Any]]:
    return [
        entry
        for group in manifest["sources"]
        if group["source"] == source
        for part in group["parts"]
        for entry in part["entries"]
    ]


async def test_a_run_with_a_statement_gives_a_page_a_person_can_read(
    simulator: Simulator, browser: Chromium, tmp_path: Path
) -> None:
    config = tmp_path / "sar-bulk.toml"
    config.write_text(CONTROLLER_TOML, encoding="utf-8")
    out, logged = await _run(simulator, tmp_path, "--config", str(config))
    assert "controller.statement_missing" not in logged
    assert read_report(out)["parameters"]["controller_statement"] == "present"
    path = out / sorted(dossier_names(out))[0]
    manifest, members = _open(path, tmp_path / "unpacked")
    contact = orjson.loads(members["records/contact.json"].splitlines()[0])
    exports = _entries(manifest, "realtime")
    assert exports, "the simulated org's export was not fetched"

    page = await browser.new_page(width=1000, height=900)
    await page.load(tmp_path / "unpacked" / "index.html")
    html = await _text(page)
    readme = _flat(members["README.txt"])
    for text in (html, readme):
        assert f"Dear {contact['fullname']}," in text
        assert "Your personal data held by Contoso Ltd" in text
        assert "Sending our newsletter" in text
        assert "Contact records are deleted 24 months" in text
        for right in ("Access (Article 15)", "Erasure (Article 17)", "Complaint (Article 77)"):
            assert right in text
        assert simulator.base_url in text  # shown as the system searched
        assert manifest["contact_id"] in text
        for entry in exports:
            assert entry["name"] in text
        assert "has not yet provided its statement" not in text
    assert f"System searched {simulator.base_url}" in readme
    assert f"Real-time export files {len(exports):,}" in readme  # counts as in the manifest
    assert f"Export files {len(exports):,}" in html
    records = _entries(manifest, "records")
    assert len(records) >= 3
    for entry in records:  # each table's count, as the manifest has it
        table = entry["name"].removeprefix("records/").removesuffix(".json")
        if table == "contact":
            continue
        if "contactpointconsent" in table:
            assert f"Consent and preferences {entry['rows']:,}" in readme
            assert f"Your consent and contact preferences {entry['rows']:,}" in html
        else:
            assert f"{table_label(table)} {entry['rows']:,}" in readme
            assert f"{table_label(table)} {entry['rows']:,}" in html
    assert await page.evaluate("document.scripts.length") == 0
    assert page.problems == []
    shots = Path(os.environ.get("SAR_BULK_SCREENSHOTS") or tmp_path / "shots")
    png = await page.screenshot(shots / "dossier-index.png", max_height=2400)
    assert png.startswith(PNG_MAGIC)

    verified = await run_cli(["verify", str(out)], env=cli_env())
    assert verified.code == 0, verified.explain()
    with zipfile.ZipFile(path) as archive:
        kept = {name: archive.read(name) for name in archive.namelist()}
    kept["index.html"] = kept["index.html"].replace(b"Contoso Ltd", b"Contoso Trust Ltd")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in kept.items():
            archive.writestr(name, data)
    edited = await run_cli(["verify", str(path)], env=cli_env())
    assert edited.code == 1
    assert "index.html does not match its sha256 in the manifest" in edited.stdout


async def test_a_run_without_a_statement_warns_once_and_says_so(
    simulator: Simulator, browser: Chromium, tmp_path: Path
) -> None:
    out, logged = await _run(simulator, tmp_path)
    assert logged.count("controller.statement_missing") == 1
    assert read_report(out)["parameters"]["controller_statement"] == "missing"
    path = out / sorted(dossier_names(out))[0]
    _, members = _open(path, tmp_path / "unpacked")
    page = await browser.new_page()
    await page.load(tmp_path / "unpacked" / "index.html")
    html = await _text(page)
    for text in (html, _flat(members["README.txt"])):
        assert "has not yet provided its statement" in text
        assert "Your personal data held by the organisation" in text
        assert "Contoso" not in text
        assert "Erasure (Article 17)" in text  # the law's rights are stated all the same
    assert page.problems == []
