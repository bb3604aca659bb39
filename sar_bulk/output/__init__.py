"""Where dossiers and the run report are published: a local folder or a blob container.

Usage::

    target = open_target("https://acme.blob.core.windows.net/sar/nightly", auth, os.environ)
    # or open_target("sar-bulk-out", ...) for a folder, exactly as before
    await target.prepare()
    published = await target.publish(staged_zip, "<contact-id>.zip")

``target.py`` holds the ``OutputTarget`` protocol, ``Published`` and ``LocalTarget``;
``blob.py`` holds ``ContainerUrl`` and ``BlobTarget`` (Azure Blob Storage, or Azurite).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sar_bulk.dataverse.auth import AuthKind
from sar_bulk.output.blob import (
    BlobTarget,
    ContainerUrl,
    is_container_url,
    storage_credential,
    storage_secrets,
)
from sar_bulk.output.target import LocalTarget, OutputTarget, Published

__all__ = [
    "BlobTarget",
    "ContainerUrl",
    "LocalTarget",
    "OutputTarget",
    "Published",
    "is_container_url",
    "open_target",
    "storage_secrets",
]


def open_target(out: str | Path, auth: AuthKind, environ: Mapping[str, str]) -> OutputTarget:
    """The target ``--out`` names: a container URL, or a folder (nothing goes over the network).

    Raises ``ConfigError`` for an unusable URL or credential.
    """
    if isinstance(out, str) and is_container_url(out):
        url = ContainerUrl.parse(out)
        return BlobTarget(url, storage_credential(url, auth, environ))
    return LocalTarget(Path(out))
