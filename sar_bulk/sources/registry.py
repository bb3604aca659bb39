"""Which sources a run can use, by name: ``build(name, deps)`` makes one for the run.

Usage::

    names = parse_sources("auto")                 # None: every source whose probe answers
    names = parse_sources("interactions,records") # ("interactions", "records")
    source = build("interactions", deps)          # SourceNotBuilt when it is not in this build

Adding a source is its module plus one line in ``_FACTORIES``. ``records`` and ``realtime`` are
written alongside this module; until their modules are wired here their factories raise
``SourceNotBuilt``, which an ``auto`` run reports as "missing" and an explicit
``--sources records`` reports as a usage error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from sar_bulk.errors import ConfigError
from sar_bulk.sources.base import Source, SourceDeps
from sar_bulk.sources.interactions import InteractionsSource

__all__ = ["AUTO", "SOURCE_NAMES", "SourceNotBuilt", "build", "build_many", "parse_sources"]

AUTO: Final = "auto"
Factory = Callable[[SourceDeps], Source]


class SourceNotBuilt(ConfigError):
    """The source is known by name but this build of sar-bulk does not have it."""


def _not_built(name: str) -> Factory:
    def factory(deps: SourceDeps) -> Source:
        raise SourceNotBuilt(f"the {name} source is not part of this sar-bulk build yet")

    return factory


_FACTORIES: Final[Mapping[str, Factory]] = {
    "interactions": InteractionsSource,
    "records": _not_built("records"),
    "realtime": _not_built("realtime"),
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
    """A source for this run; ``ConfigError`` for an unknown name, ``SourceNotBuilt`` if absent."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown source {name!r}; known: {', '.join(SOURCE_NAMES)}") from None
    return factory(deps)


def build_many(
    names: tuple[str, ...] | None, deps: SourceDeps
) -> tuple[list[Source], dict[str, str]]:
    """The sources ``names`` asks for (None: ``auto``, every one this build has).

    Returns the sources and, for ``auto``, why each one this build lacks is left out; an
    explicitly named source this build lacks raises ``SourceNotBuilt``.
    """
    sources: list[Source] = []
    not_built: dict[str, str] = {}
    for name in names if names is not None else SOURCE_NAMES:
        try:
            sources.append(build(name, deps))
        except SourceNotBuilt as exc:
            if names is not None:
                raise
            not_built[name] = str(exc)
    return sources, not_built
