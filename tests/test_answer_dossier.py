"""Every dossier carries the person's answer: index.html and README.txt, hashed and verified.

The writer builds them at assembly from the spooled entries (``dossier/answer_feed.py``); these
tests write dossiers through the real ``DossierWriter`` and read them back as a recipient would.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from answer_samples import statement

from sar_bulk.answer import Statement
from sar_bulk.dossier.format import MANIFEST_NAME, Question, Subject, member_info
from sar_bulk.dossier.spool import MEMORY_SPOOL_BYTES
from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.dossier.writer import DossierRequest, DossierWriter
from sar_bulk.sources.base import Part
from sar_bulk.sources.interaction_types import InteractionType as T

CONTACT = "0f8fad5b-d9cb-469f-a165-70867728950e"
ORG = "https://contoso.crm4.dynamics.com"
PARTS = (
    Part("interactions", "EmailSent"),
    Part("interactions", "EmailOpened"),
    Part("records", "records"),
    Part("realtime", "realtime"),
)
QUESTION = Question(ORG, ("interactions", "records", "realtime"), ("EmailSent", "EmailOpened"))
NOW = datetime(2024, 7, 1, 10, 30, tzinfo=UTC)
EXPORT = "realtime/ada@example.com.json"


def _sent(n: int) -> dict[str, Any]:
    return {
        "ContactId": CONTACT,
        "Timestamp": f"2024-03-{1 + n % 28:02d}T12:00:00Z",
        "Subject": f"Spring offer {n}",
        "EmailAddressUsed": "ada@example.com",
    }


async def _write(
    out: Path,
    *,
    statement: Statement | None,
    subject: Subject | None = None,
    contact: dict[str, Any] | None = None,
    sent: int = 3,
    export: bytes = b'{"Contact": {"email": "ada@example.com"}, "Journeys": [1, 2]}',
) -> Path:
    request = DossierRequest(CONTACT, PARTS, QUESTION, subject or Subject())
    async with DossierWriter(out, request, now=lambda: NOW, statement=statement) as writer:
        for start in range(0, sent, 500):
            page = [_sent(n) for n in range(start, min(sent, start + 500))]
            await writer.add_page(T.EmailSent, page)
        await writer.add_page(T.EmailOpened, [])
        records = writer.sink(Part("records", "records"))
        if contact is not None:
            await records.add_rows("records/contact.json", [contact])
        await records.add_rows(
            "records/leads.json", [{"subject": "Interested in boats", "leadid": "x"}]
        )
        realtime = writer.sink(Part("realtime", "realtime"))
        await realtime.add_file(EXPORT, export)
        summary = await writer.complete()
    return summary.path


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _rebuild(path: Path, members: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(member_info(name, len(data)), data)
    path.write_bytes(buffer.getvalue())


def _flat(data: bytes) -> str:
    return " ".join(data.decode("utf-8").split())


async def test_the_answer_names_the_person_the_controller_and_what_is_held(tmp_path: Path) -> None:
    subject = Subject(name="A. Lovelace (from the CSV)", received=date(2024, 6, 20))
    path = await _write(
        tmp_path,
        statement=statement(),
        subject=subject,
        contact={"contactid": CONTACT, "fullname": "Ada Lovelace", "emailaddress1": "a@b.c"},
    )
    members = _members(path)
    assert list(members)[:3] == ["README.txt", "index.html", MANIFEST_NAME]
    manifest = orjson.loads(members[MANIFEST_NAME])
    assert manifest["schema"] == "sar-bulk/dossier/v3"
    for key, name in (("readme", "README.txt"), ("index", "index.html")):
        assert manifest[key] == {
            "name": name,
            "sha256": hashlib.sha256(members[name]).hexdigest(),
            "bytes": len(members[name]),
        }
    readme, html = _flat(members["README.txt"]), _flat(members["index.html"])
    assert html.lower().startswith("<!doctype html>")
    for text in (readme, html):
        assert "Dear Ada Lovelace," in text  # the contact record wins over the CSV's name
        assert "from the CSV" not in text
        assert "Your personal data held by Contoso Ltd" in text
        assert "of 20 June 2024" in text  # received, from the Subject
        assert "Prepared on 1 July 2024, 10:30 UTC." in text  # when it was assembled
        assert "Erasure (Article 17)" in text
        assert "Complaint (Article 77)" in text
        assert "Marketing interactions are deleted 24 months after" in text  # retention
        assert "Sales leads about you" in text
        assert EXPORT in text
        assert CONTACT in text
        assert ORG in text
        assert "has not yet provided its statement" not in text
    assert "System searched https://contoso.crm4.dynamics.com" in readme  # not "organisation"
    assert "Email sent 3" in readme
    assert verify_dossier(path).ok


async def test_without_a_statement_the_answer_says_it_is_missing(tmp_path: Path) -> None:
    subject = Subject(name="Grace Hopper")
    path = await _write(tmp_path, statement=None, subject=subject)
    members = _members(path)
    for name in ("README.txt", "index.html"):
        text = _flat(members[name])
        assert "has not yet provided its statement" in text
        assert "Dear Grace Hopper," in text  # no contact record: the request's name
        assert "Your personal data held by the organisation" in text
        assert "Contoso" not in text  # nothing invented
    assert verify_dossier(path).ok


async def test_a_big_contact_spooled_to_disk_gets_the_same_answer(tmp_path: Path) -> None:
    """Past MEMORY_SPOOL_BYTES the entries are read back from the spool files."""
    sent = 3000
    assert sent * 100 > MEMORY_SPOOL_BYTES
    big_export = b'{"Journeys": [' + b",".join(b'"j%d"' % n for n in range(40_000)) + b"]}"
    path = await _write(tmp_path, statement=statement(), sent=sent, export=big_export)
    members = _members(path)
    readme = _flat(members["README.txt"])
    assert f"Email sent {sent:,}" in readme
    assert f"In all, {sent:,} marketing interactions." in readme
    assert f"{len(big_export):,} bytes" in readme  # listed, too big to summarise
    assert verify_dossier(path).ok


async def test_an_edited_index_html_fails_verify(tmp_path: Path) -> None:
    path = await _write(tmp_path, statement=statement())
    members = _members(path)
    members["index.html"] = members["index.html"].replace(b"Contoso Ltd", b"Contoso Inc")
    _rebuild(path, members)
    problems = verify_dossier(path).problems
    assert problems == ("index.html does not match its sha256 in the manifest",)


async def test_a_v3_dossier_without_index_html_fails_verify(tmp_path: Path) -> None:
    path = await _write(tmp_path, statement=statement())
    members = _members(path)
    del members["index.html"]
    _rebuild(path, members)
    assert verify_dossier(path).problems == ("member 'index.html' is missing",)

    manifest = orjson.loads(members[MANIFEST_NAME])
    del manifest["index"]
    members[MANIFEST_NAME] = orjson.dumps(manifest)
    _rebuild(path, members)
    assert "manifest: the top level lacks index" in verify_dossier(path).problems


async def test_a_v2_dossier_written_before_index_html_still_verifies(tmp_path: Path) -> None:
    """v2 had README.txt and manifest.json only; it is checked as v2, strictly."""
    path = await _write(tmp_path, statement=statement())
    members = _members(path)
    manifest = orjson.loads(members.pop(MANIFEST_NAME))
    index = members.pop("index.html")
    del manifest["index"]
    manifest["schema"] = "sar-bulk/dossier/v2"
    readme = members.pop("README.txt")
    v2 = {"README.txt": readme, MANIFEST_NAME: orjson.dumps(manifest), **members}
    _rebuild(path, v2)
    result = verify_dossier(path)
    assert (result.ok, result.schema) == (True, "sar-bulk/dossier/v2")

    _rebuild(path, {"README.txt": readme, "index.html": index, **v2})  # added later: refused
    assert "unexpected member 'index.html'" in verify_dossier(path).problems


async def test_numbers_orjson_refuses_are_shown_exactly(tmp_path: Path) -> None:
    """The spool holds such numbers verbatim (the org sent them); the answer still reads them."""
    contact = {
        "contactid": CONTACT,
        "fullname": "Ada Lovelace",
        "revenue": orjson.Fragment(b"1e400"),
    }
    path = await _write(tmp_path, statement=statement(), contact=contact)
    readme = _flat(_members(path)["README.txt"])
    assert "Dear Ada Lovelace," in readme
    assert "1E+400" in readme
    assert verify_dossier(path).ok  # verify reads such numbers too


async def test_verify_accepts_numbers_beyond_orjson_but_not_nan(tmp_path: Path) -> None:
    exact = b"[0.1000000000000000055511151231257827,1.5e-400,1e400,123456789012345678901234]"
    request = DossierRequest(
        CONTACT, PARTS[:2], Question(ORG, ("interactions",), ("EmailSent", "EmailOpened"))
    )
    async with DossierWriter(tmp_path, request) as writer:
        await writer.add_page(
            T.EmailSent, [{"ContactId": CONTACT, "Exact": orjson.Fragment(exact)}]
        )
        await writer.add_page(T.EmailOpened, [])
        path = (await writer.complete()).path
    assert verify_dossier(path).ok
    members = _members(path)
    members["interactions/EmailSent.json"] = members["interactions/EmailSent.json"].replace(
        b"1e400", b"NaN"
    )
    _rebuild(path, members)
    assert "line 2 is not one whole JSON value" in " ".join(verify_dossier(path).problems)


async def test_tables_the_operator_left_out_are_named_under_what_we_searched(
    tmp_path: Path,
) -> None:
    # --exclude-tables lead: the person's leads are not in the dossier; the answer must not
    # read as if every table had been searched.
    question = Question(
        ORG,
        ("interactions", "records", "realtime"),
        ("EmailSent", "EmailOpened"),
        excluded_tables=("lead", "new_loyaltycard"),
    )
    request = DossierRequest(CONTACT, PARTS, question, Subject())
    async with DossierWriter(tmp_path, request, now=lambda: NOW, statement=statement()) as writer:
        await writer.add_page(T.EmailSent, [_sent(0)])
        await writer.add_page(T.EmailOpened, [])
        await writer.sink(Part("records", "records")).add_rows("records/contact.json", [{}])
        await writer.sink(Part("realtime", "realtime")).add_file(EXPORT, b"{}")
        summary = await writer.complete()
    members = _members(summary.path)
    for name in ("README.txt", "index.html"):
        text = _flat(members[name])
        assert "Tables not searched" in text, name
        assert "Sales leads about you (lead)" in text, name
        assert "Rows of the table new_loyaltycard (new_loyaltycard)" in text, name
