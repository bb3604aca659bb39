"""Split one contacts file between several workers without coordination.

Every worker reads the whole file and keeps the contacts its shard owns. Ownership depends only on
the contact id (SHA-256 of its canonical form, modulo the shard count), so the shards are disjoint,
together cover the file, and a contact keeps its shard across resumes, reorderings and spellings.

Usage::

    shard = Shard.parse("2/8")                   # --shard 2/8
    shard = Shard.from_env(8, os.environ)        # Kubernetes Indexed Job: JOB_COMPLETION_INDEX
    if shard.owns(contact_id): ...
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sar_bulk.errors import ConfigError
from sar_bulk.guids import canonical_guid, is_canonical_guid

__all__ = ["INDEX_VARIABLE", "Shard"]

INDEX_VARIABLE: Final = "JOB_COMPLETION_INDEX"
# ASCII digits only (int() would take "٣" or "1_0"); nine digits keep the numbers sane.
_SHARD = re.compile(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", re.ASCII)
_INDEX = re.compile(r"\s*([0-9]{1,9})\s*", re.ASCII)


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``; ``Shard(0, 1)`` owns everything."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"shard count must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"shard index must be between 0 and {self.count - 1} for {self.count} shards, "
                f"got {self.index}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"I/N"`` as given to ``--shard``, e.g. ``"0/4"`` for the first of four."""
        match = _SHARD.fullmatch(text)
        if match is None:
            raise ConfigError(
                f"--shard {text!r} is not of the form I/N (e.g. 0/4: shard 0 of 4, with 0 <= I < N)"
            )
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def from_env(cls, count: int, environ: Mapping[str, str]) -> Shard:
        """Shard of ``count`` whose index Kubernetes sets in ``JOB_COMPLETION_INDEX``.

        An Indexed Job with ``completions: N`` runs pods 0..N-1; ``count`` must equal N.
        """
        raw = environ.get(INDEX_VARIABLE)
        if raw is None:
            raise ConfigError(
                f"{INDEX_VARIABLE} is not set: it comes from a Kubernetes Indexed Job "
                "(completionMode: Indexed); outside one, give --shard I/N instead"
            )
        match = _INDEX.fullmatch(raw)
        if match is None:
            raise ConfigError(f"{INDEX_VARIABLE}={raw!r} is not a whole number")
        index = int(match[1])
        if count >= 1 and index >= count:
            raise ConfigError(
                f"{INDEX_VARIABLE}={index} but there are only {count} shards: "
                "set the shard count to the Job's completions"
            )
        return cls(index, count)

    def owns(self, contact_id: str) -> bool:
        """True when this shard handles ``contact_id`` (any spelling; ``ValueError`` if no GUID)."""
        if len(contact_id) != 36 or not is_canonical_guid(contact_id):
            contact_id = canonical_guid(contact_id)
        digest = hashlib.sha256(contact_id.encode("ascii")).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
