"""The zip bytes the writer gets from zipfile and zlib are pinned, on every Python.

A dossier's sha256 is handed to the recipient and compared by ``verify --sha256``; resumed and
sharded runs may be made by other Pythons (an operator's python:3.12 or 3.13 image, CI's 3.11).
zipfile's writer and zlib's deflate are the Python side of those bytes: this writes members the
way ``Spool.assemble`` does (to a stream that cannot seek, so with data descriptors;
``writestr`` for the answer and manifest, ``open(info, "w")`` for an entry, all with
``member_info``; one ZIP64 member) and compares the whole file to a digest
made on 3.11.7 and checked to be the same on 3.12.1 and 3.13.0 (zlib 1.2.13 on all three).
A failure means dossiers made by this interpreter differ from those made by the others.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from typing import TYPE_CHECKING

from sar_bulk.dossier.format import member_info

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_SHA256 = "469a05ef5ef5cb7f53c48ccf333ebb15bbf1d38889a38929023348241a109458"


class _Stream(io.RawIOBase):
    """A file that cannot seek, as the writer's output (spool's _HashingStream) is."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data)
        self.data += view
        return len(view)

    def tell(self) -> int:
        return len(self.data)

    def seekable(self) -> bool:
        return False


def _zip() -> bytes:
    text = "".join(f"line {n}: Zoë O'Neil <x> 日本 \U0001f600\n" for n in range(3000)).encode()
    rows = b"".join(b'{"n":%d,"ContactId":"c"}\n' % n for n in range(5000))
    stream = _Stream()
    with zipfile.ZipFile(stream, "w", allowZip64=True) as archive:
        archive.writestr(member_info("README.txt", len(text)), text)
        archive.writestr(member_info("manifest.json", 2), b"{}")
        info = member_info("interactions/EmailSent.json", len(rows))
        with archive.open(info, "w") as target:
            target.write(rows[:1000])
            target.write(rows[1000:])
        big = member_info("realtime/big.json", 0)
        with archive.open(big, "w", force_zip64=True) as target:
            target.write(b"[]")
    return bytes(stream.data)


def test_the_writer_s_zip_bytes_are_the_same_on_every_python() -> None:
    data = _zip()
    assert hashlib.sha256(data).hexdigest() == _SHA256, (
        f"zip bytes differ from those of Python 3.11.7 (zlib {zlib.ZLIB_RUNTIME_VERSION} here)"
    )
