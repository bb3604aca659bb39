"""The dossier: its format, the writer that assembles it and the verifier that checks it.

- ``format.py``: ``sar-bulk/dossier/v3`` (parts grouped by source, every member hashed, v2
  without index.html still verified); ``format_v1.py`` keeps the earliest format so that older
  dossiers still verify. ``answer_feed.py`` builds the person's answer (README.txt and
  index.html, ``sar_bulk.answer``) from the spooled entries at assembly.
- ``writer.py``: ``DossierWriter`` and its ``PartSink`` per part; ``spool.py`` holds each entry
  in memory or on disk and assembles the zip; ``files.py`` private files, paths and leftovers.
- ``verify.py``: the strict check and the ``verify`` command; ``zip_layout.py`` walks the zip's
  records, ``manifest_check.py`` checks the manifest against its schema.
"""
