"""Kept for imports of the old place: ``Shard`` is a setting's value type, in ``sar_bulk.sharding``.

The run reads the shard from its settings; the settings (``config.py``) must not depend on the
run package, so the type lives beside ``dates.py`` and ``guids.py``.
"""

from __future__ import annotations

from sar_bulk.sharding import INDEX_VARIABLE, Shard

__all__ = ["INDEX_VARIABLE", "Shard"]
