"""``sar-bulk verify https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX``: check dossiers.

Usage::

    code = await verify_containers(["https://acme.blob.core.windows.net/sar/nightly"],
                                   auth=AuthKind.DEFAULT, environ=os.environ, as_json=False,
                                   out=sys.stdout)

Each ``*.zip`` and ``*.zip.age`` directly under the prefix is downloaded to a private temporary
file (one at a time: disk and memory stay at one dossier), checked against the SHA-256 and
Content-MD5 it was published with, then verified exactly as a local file is: an encrypted one
with ``decryptor`` (``--identity`` / ``--passphrase-env``), else reported as locked, not
checked. Exit codes as for folders: 0 all valid, 1 any invalid or locked, 2 misuse (a URL that
is not a container, a container without dossiers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, TextIO

import orjson

from sar_bulk.dataverse.auth import AuthKind
from sar_bulk.dossier.encryption import Decryptor
from sar_bulk.dossier.verify import (
    LOCKED_ADVICE,
    VerifyResult,
    result_json,
    result_line,
    verify_dossier,
)
from sar_bulk.errors import OutputError, SarBulkError
from sar_bulk.output.target import OutputTarget
from sar_bulk.output.url import ContainerUrl

__all__ = ["verify_containers"]

EXIT_VALID: Final = 0
EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2


async def verify_containers(
    urls: Sequence[str],
    *,
    auth: AuthKind,
    environ: Mapping[str, str],
    as_json: bool,
    out: TextIO,
    decryptor: Decryptor | None = None,
) -> int:
    """Verify every dossier under each container URL; the exit code of ``verify``."""
    from sar_bulk.output import open_target

    results: list[_Checked] = []
    for text in urls:
        try:
            target = open_target(ContainerUrl.parse(text), auth, environ)
        except SarBulkError as exc:
            _summary(out, as_json, results, f"{text}: {exc}")
            return EXIT_USAGE
        try:
            found = await _verify_all(target, as_json, out, decryptor)
        except OutputError as exc:
            _summary(out, as_json, results, str(exc))
            return EXIT_USAGE
        finally:
            await target.close()
        if not found:
            _summary(
                out, as_json, results, f"{text}: container holds no dossiers (*.zip, *.zip.age)"
            )
            return EXIT_USAGE
        results.extend(found)
    _summary(out, as_json, results, None)
    return EXIT_VALID if all(r.ok for _, r in results) else EXIT_INVALID


_Checked = tuple[str, VerifyResult]  # the blob's URL, and the verdict on its downloaded copy


async def _verify_all(
    target: OutputTarget, as_json: bool, out: TextIO, decryptor: Decryptor | None
) -> list[_Checked]:
    results: list[_Checked] = []
    async for name in target.list_dossiers():
        # A listed name comes from the store: no control character of it reaches the terminal.
        shown = name if name.isprintable() else repr(name)
        where = f"{target.description}/{shown}"
        try:
            async with target.open_for_verify(name) as path:
                result = await asyncio.to_thread(verify_dossier, path, decryptor=decryptor)
        except OutputError as exc:
            result = VerifyResult(Path(name), False, None, None, (str(exc),))
        results.append((where, result))
        if not as_json:
            out.write(result_line(where, result))
    return results


def _summary(out: TextIO, as_json: bool, results: list[_Checked], error: str | None) -> None:
    # The same shape as the folder verify's: locked (encrypted, no key given) counted apart.
    valid = sum(r.ok for _, r in results)
    locked = sum(r.locked for _, r in results)
    invalid = len(results) - valid - locked
    if as_json:
        document = {
            "ok": error is None and valid == len(results),
            "error": error,
            "checked": len(results) - locked,
            "valid": valid,
            "invalid": invalid,
            **({"locked": locked} if any(r.encrypted for _, r in results) else {}),
            "dossiers": [result_json(where, r) for where, r in results],
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif error is not None:
        out.write(f"error: {error}\n")
    else:
        not_checked = f", {locked} encrypted and not checked ({LOCKED_ADVICE})" if locked else ""
        out.write(
            f"verified {len(results)} dossier(s): {valid} valid, {invalid} invalid{not_checked}\n"
        )
