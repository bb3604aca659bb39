"""Where dossiers and the run report are published: a local folder or a blob container.

Usage::

    target = open_target(config.blob or config.out, config.auth, os.environ)
    await target.prepare()
    published = await target.publish(staged_zip, "<contact-id>.zip")

``target.py`` holds the ``OutputTarget`` protocol, ``Published`` and ``LocalTarget``; ``url.py``
parses container URLs; ``blob.py`` holds ``BlobTarget`` (Azure Blob Storage, or Azurite). The
storage SDK is imported only when a container is opened: folder runs never pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sar_bulk.dataverse.auth import AuthKind
from sar_bulk.output.target import LocalTarget, OutputTarget, Published
from sar_bulk.output.url import ContainerUrl, is_container_url

__all__ = [
    "ContainerUrl",
    "LocalTarget",
    "OutputTarget",
    "Published",
    "is_container_url",
    "open_target",
]


def open_target(
    out: ContainerUrl | Path | str,
    auth: AuthKind,
    environ: Mapping[str, str],
    *,
    backoff: float = 2.0,
    timeout: float = 60.0,
) -> OutputTarget:
    """The target ``--out`` names: a container URL, or a folder (nothing goes over the network).

    ``backoff`` is the storage client's first wait before a retry (3 retries, growing) and
    ``timeout`` its read timeout per request. Raises ``ConfigError`` for an unusable URL or
    credential.
    """
    if isinstance(out, str):
        out = ContainerUrl.parse(out) if is_container_url(out) else Path(out)
    if isinstance(out, ContainerUrl):
        from sar_bulk.output.blob import BlobTarget, storage_credential

        credential = storage_credential(out, auth, environ)
        return BlobTarget(out, credential, backoff=backoff, timeout=timeout)
    return LocalTarget(out)
