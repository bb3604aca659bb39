"""Write ``sar_bulk/_unicode14.py``: the characters Unicode 14.0 calls printable, as ranges.

Usage (under Python 3.11, whose ``unicodedata`` is Unicode 14.0; any other refuses)::

    python3.11 scripts/unicode14_table.py            # rewrite the table
    python3.11 scripts/unicode14_table.py --check    # exit 1 if the table differs

Why: ``sar_bulk.printable`` answers "is this character shown as it is" from this fixed table,
not from the interpreter's Unicode database, which is newer on every Python (15.0 on 3.12, 15.1
on 3.13): README.txt must be the same bytes whichever Python made the dossier. The table is
written once; there is no reason to regenerate it unless the pinned version itself is changed
on purpose (then every dossier with a newly assigned character changes, and the golden file).
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

_VERSION = "14.0.0"
_TARGET = Path(__file__).resolve().parent.parent / "sar_bulk" / "_unicode14.py"
_PER_LINE = 6  # ranges per source line: indent, 6 * 14 characters and quotes stay under 100


def printable_ranges() -> list[tuple[int, int]]:
    """Inclusive ranges of the code points ``str.isprintable`` accepts in this interpreter."""
    ranges: list[tuple[int, int]] = []
    start = None
    for point in range(sys.maxunicode + 2):
        shown = point <= sys.maxunicode and chr(point).isprintable()
        if shown and start is None:
            start = point
        elif not shown and start is not None:
            ranges.append((start, point - 1))
            start = None
    return ranges


def source(ranges: list[tuple[int, int]]) -> str:
    items = [f"{first:06X}-{last:06X}" for first, last in ranges]
    lines = [
        '    "' + " ".join(items[at : at + _PER_LINE]) + ' "'
        for at in range(0, len(items), _PER_LINE)
    ]
    lines[-1] = lines[-1][:-2] + '"'  # no blank after the last range
    return (
        '"""Unicode 14.0\'s printable characters (``str.isprintable`` of Python 3.11): '
        "inclusive\nranges of code points, in hex. Written by ``scripts/unicode14_table.py``; "
        'do not edit.\n"""\n\n'
        "from typing import Final\n\n"
        f'UNICODE_VERSION: Final = "{_VERSION}"\n'
        "PRINTABLE_RANGES: Final = (\n" + "\n".join(lines) + "\n)\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if unicodedata.unidata_version != _VERSION:
        print(
            f"this Python has Unicode {unicodedata.unidata_version}; run it with Python 3.11 "
            f"(Unicode {_VERSION})",
            file=sys.stderr,
        )
        return 2
    text = source(printable_ranges())
    if args.check:
        same = _TARGET.read_text(encoding="utf-8") == text
        print(f"{_TARGET.name} is {'up to date' if same else 'NOT the table of this Python'}")
        return 0 if same else 1
    _TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {_TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
