"""Stable hashing: the only source of "randomness" in the synthetic data.

Everything the simulated org holds is a pure function of ``(seed, contact, type, index)``, computed
with BLAKE2b (never Python's ``hash()``, which is salted per process), so two simulators with the
same seed serve identical bytes and any single interaction can be built without building the
others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Draw", "stable_digest", "stable_unit"]

T = TypeVar("T")

_BLOCK_VALUES = 8  # 64-bit values per 64-byte BLAKE2b block
_UNIT = 2.0**-53


def stable_digest(*parts: str | int | bytes) -> bytes:
    """A 32-byte digest of ``parts``; each part is length-prefixed so boundaries cannot shift."""
    hasher = hashlib.blake2b(digest_size=32)
    for part in parts:
        if isinstance(part, bytes):
            raw = part
        elif isinstance(part, int):
            raw = str(part).encode("ascii")
        else:
            raw = part.encode("utf-8")
        hasher.update(len(raw).to_bytes(4, "big"))
        hasher.update(raw)
    return hasher.digest()


def stable_unit(*parts: str | int | bytes) -> float:
    """A number in [0, 1) that depends only on ``parts``."""
    return (int.from_bytes(stable_digest(*parts)[:8], "big") >> 11) * _UNIT


class Draw:
    """A deterministic stream of choices keyed by a digest (BLAKE2b in counter mode).

    Cheap to create, so each interaction gets its own stream and never depends on the draws made
    for any other interaction.
    """

    __slots__ = ("_counter", "_key", "_values")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._values: list[int] = []

    def _next64(self) -> int:
        if not self._values:
            raw = hashlib.blake2b(
                self._key + self._counter.to_bytes(4, "big"), digest_size=64
            ).digest()
            self._counter += 1
            self._values = [
                int.from_bytes(raw[i * 8 : i * 8 + 8], "big") for i in range(_BLOCK_VALUES)
            ]
            self._values.reverse()
        return self._values.pop()

    def unit(self) -> float:
        """Uniform in [0, 1)."""
        return (self._next64() >> 11) * _UNIT

    def below(self, bound: int) -> int:
        """Uniform-enough integer in [0, bound) (the modulo bias of 64 bits is negligible)."""
        return self._next64() % bound

    def between(self, low: int, high: int) -> int:
        """Integer in [low, high], both ends included."""
        return low + self.below(high - low + 1)

    def chance(self, probability: float) -> bool:
        return self.unit() < probability

    def choice(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def hex(self, n_bytes: int) -> str:
        """``n_bytes`` random bytes as lower-case hex."""
        out = b"".join(self._next64().to_bytes(8, "big") for _ in range((n_bytes + 7) // 8))
        return out[:n_bytes].hex()

    def guid(self) -> str:
        """A lower-case dashed GUID (version-4 shaped)."""
        raw = self.hex(16)
        variant = "89ab"[int(raw[16], 16) % 4]
        return f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-{variant}{raw[17:20]}-{raw[20:]}"
