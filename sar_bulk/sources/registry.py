"""Which sources a run can use, by name: ``build(name, deps)`` makes one for the run.

Usage::

    names = parse_sources("auto")                 # None: every source whose probe answers
    names = parse_sources("interactions,records") # ("interactions", "records")
    source = build("interactions", deps)          # SourceNotBuilt when it is not in this build

Adding a source is its module plus one line in ``_FACTORIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from sar_bulk.errors import ConfigError
from sar_bulk.sources.base import Source, SourceDeps
from sar_bulk.sources.interactions import InteractionsSource
from sar_bulk.sources.realtime import RealtimeSource
from sar_bulk.sources.records import RecordsSource

__all__ = ["AUTO", "SOURCE_NAMES", "build", "build_many", "parse_sources"]

AUTO: Final = "auto"
Factory = Callable[[SourceDeps], Source]


_FACTORIES: Final[Mapping[str, Factory]] = {
    "interactions": InteractionsSource,
    "records": RecordsSource,
    "realtime": RealtimeSource,
}
SOURCE_NAMES: Final = tuple(_FACTORIES)


def parse_sources(text: str) -> tuple[str, ...] | None:
    """``auto`` (None) or a comma list of known source names, in canonical order, no repeats."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if words == [AUTO]:
        return None
    if not words:
        raise ValueError(f"must be {AUTO} or a comma list of {', '.join(SOURCE_NAMES)}")
    unknown = sorted(set(words) - set(SOURCE_NAMES))
    if unknown:
        raise ValueError(
            f"names unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCE_NAMES)}, "
            f"or {AUTO}"
        )
    return tuple(name for name in SOURCE_NAMES if name in words)


def build(name: str, deps: SourceDeps) -> Source:
    """A source for this run; ``ConfigError`` for an unknown name."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown source {name!r}; known: {', '.join(SOURCE_NAMES)}") from None
    return factory(deps)


def build_many(names: tuple[str, ...] | None, deps: SourceDeps) -> list[Source]:
    """The sources ``names`` asks for (None: ``auto``, every source there is)."""
    return [build(name, deps) for name in (names if names is not None else SOURCE_NAMES)]
