"""index.html in a real headless Chromium: what a person sees, no errors, no script, fast enough.

Chromium comes from Debian (``.ci/run`` installs it); when it is missing these tests FAIL with the
install command, because an answer nobody opened in a browser is not tested. Screenshots go to
the test's folder, or to ``$SAR_BULK_SCREENSHOTS`` (the committed ones in docs/screenshots/ were
made with ``SAR_BULK_SCREENSHOTS=docs/screenshots pytest tests/test_answer_browser.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from answer_samples import (
    CONTACT,
    CONTROLLER,
    HOSTILE,
    PREPARED,
    empty_view,
    heavy_view,
    small_view,
    statement,
)
from browser import BrowserMissing, Chromium, Page, find_chromium

from sar_bulk.answer import AnswerBuilder, AnswerView, Question, load_statement, render_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEAVY_BUDGET_SECONDS = 2.0


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    try:
        async with Chromium.start(tmp_path / "profile") as chromium:
            yield chromium
    except BrowserMissing as exc:
        pytest.fail(str(exc))


def _shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("SAR_BULK_SCREENSHOTS") or tmp_path / "screenshots").absolute()


def _write(tmp_path: Path, view: AnswerView) -> Path:
    path = tmp_path / "answer" / "index.html"
    path.parent.mkdir()
    path.write_text(render_html(view), encoding="utf-8")
    return path


async def _text(page: Page) -> str:
    text: str = await page.evaluate("document.body.innerText")
    return " ".join(text.split())


async def test_small_answer_reads_right_and_runs_nothing(browser: Chromium, tmp_path: Path) -> None:
    page = await browser.new_page(width=1000, height=900)
    await page.load(_write(tmp_path, small_view()))
    text = await _text(page)
    for expected in (
        "Dear Ada Lovelace,",
        "Your personal data held by Contoso Ltd",
        "Supervisory authority Data Protection Commission",
        "Erasure (Article 17)",
        "Objection (Article 21)",
        "Complaint (Article 77)",
        "In all, 13 marketing interactions.",
        "We hold no records of the other 38 kinds of marketing interaction",
        "Opted In",
        HOSTILE,  # shown as the text it is
    ):
        assert expected in text, expected
    assert await page.evaluate("typeof window.pwned") == "undefined"
    assert await page.evaluate("document.scripts.length") == 0
    assert await page.evaluate("document.images.length") == 0
    assert await page.evaluate("document.querySelector('svg.timeline rect') !== null")
    assert page.problems == []
    png = await page.screenshot(_shots(tmp_path) / "small-answer.png", max_height=1400)
    assert png.startswith(PNG_MAGIC)


async def test_empty_answer_says_so_in_one_line(browser: Chromium, tmp_path: Path) -> None:
    page = await browser.new_page()
    await page.load(_write(tmp_path, empty_view()))
    text = await _text(page)
    assert "We hold no records of this kind about you: none of the 40 kinds" in text
    assert "Contoso Ltd" in text
    assert "Complaint (Article 77)" in text
    assert await page.evaluate("document.querySelectorAll('table').length") <= 6
    assert page.problems == []
    await page.screenshot(_shots(tmp_path) / "empty-answer.png", max_height=1400)


async def test_heavy_answer_renders_within_budget(browser: Chromium, tmp_path: Path) -> None:
    view = heavy_view(4000)
    assert view.total_interactions == 4000
    page = await browser.new_page()
    seconds = await page.load(_write(tmp_path, view))
    timing = await page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return [n.domContentLoadedEventEnd, n.loadEventEnd, n.transferSize]; })()"
    )
    print(
        f"heavy answer (4,000 interactions, {len(render_html(view)):,} bytes): load event "
        f"{seconds:.3f} s after navigate (wall clock); navigation timing DOMContentLoaded "
        f"{timing[0]:.0f} ms, load end {timing[1]:.0f} ms"
    )
    assert seconds < HEAVY_BUDGET_SECONDS
    text = await _text(page)
    assert "Dear Grace Hopper," in text
    assert "In all, 4,000 marketing interactions." in text
    assert "300 more in interactions/EmailSent.json" in text
    assert await page.evaluate("document.querySelectorAll('details:not([open])').length") == 5
    assert page.problems == []
    await page.screenshot(_shots(tmp_path) / "heavy-answer.png", max_height=1400)


async def test_reflows_at_200_percent_zoom(browser: Chromium, tmp_path: Path) -> None:
    page = await browser.new_page()
    # A 1280 px wide window at 200 % zoom lays the page out in 640 CSS pixels.
    await page.resize(640, 800, scale=2)
    await page.load(_write(tmp_path, small_view()))
    widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways at 200 %: {widths}"
    font = await page.evaluate("getComputedStyle(document.body).fontSize")
    assert font == "16px"
    assert page.problems == []
    await page.screenshot(_shots(tmp_path) / "zoom-200.png", max_height=1200)


async def test_long_unbroken_text_wraps_at_200_percent_zoom(
    browser: Chromium, tmp_path: Path
) -> None:
    # A statement pointing at a web page (a long URL has no space to break at) and a name the
    # org holds as one long word: both must wrap, not push the page sideways.
    url = "https://www.dataprotection.ie/en/individuals/exercising-your-rights/" + "x" * 60
    controller = CONTROLLER | {"retention": f"See {url}", "rights_note": f"Use the form: {url}"}
    builder = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    builder.add_record("contact", {"fullname": "Ada" * 60})
    view = builder.build(prepared_at=PREPARED, statement=load_statement(controller))
    page = await browser.new_page()
    await page.resize(640, 800, scale=2)
    await page.load(_write(tmp_path, view))
    widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways at 200 %: {widths}"
    assert url in await _text(page)
    assert page.problems == []


def test_missing_chromium_is_a_failure_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("SAR_BULK_CHROMIUM", "no-such-browser")
    with pytest.raises(BrowserMissing, match=r"apt-get install -y chromium"):
        find_chromium()


async def test_printed_answer_keeps_every_column_of_every_table(
    browser: Chromium, tmp_path: Path
) -> None:
    # Wide tables scroll in their own box on screen; printed (or saved as PDF, as a controller
    # may send it) that box cut them off: the consent table lost "Status reason", the leads
    # table its last columns, interaction tables half their columns and the checksums.
    builder = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    long_word = "Lovelace" * 40
    builder.add_record(
        "contact", {"contactid": CONTACT, "fullname": "Ada", "description": long_word}
    )
    columns = [f"Column{n}" for n in range(12)]
    for n in range(3):
        builder.add_interaction(
            "EmailOpened",
            {"Timestamp": f"2024-01-0{n + 1}T00:00:00Z", **{c: f"value {c} {n}" for c in columns}},
        )
    builder.add_export("realtime/1-gdpr_output.json", 58, "ab" * 32, None)
    page = await browser.new_page(width=700, height=900)  # an A4 page's width at 96 dpi
    await page.call("Emulation.setEmulatedMedia", {"media": "print"})
    await page.load(_write(tmp_path, builder.build(prepared_at=PREPARED, statement=statement())))
    cut = await page.evaluate(
        "[...document.querySelectorAll('.wide')]"
        ".filter(box => box.scrollWidth > box.clientWidth + 1)"
        ".map(box => box.getAttribute('aria-label'))"
    )
    assert cut == [], f"printed, these tables lose columns: {cut}"
    widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the printed page is wider than the paper: {widths}"
    assert page.problems == []
    await page.screenshot(_shots(tmp_path) / "printed.png", max_height=2400)
