"""The dossier: its format, the writer that assembles it and the verifier that checks it.

- ``format.py``: ``sar-bulk/dossier/v2`` (parts grouped by source, every member hashed) and
  README.txt, built from a small ``DossierView``; ``format_v1.py`` keeps the earlier format so
  that older dossiers still verify.
- ``writer.py``: ``DossierWriter`` and its ``PartSink`` per part; ``spool.py`` holds each entry
  in memory or on disk and assembles the zip; ``files.py`` private files, paths and leftovers.
- ``verify.py``: the strict check and the ``verify`` command; ``zip_layout.py`` walks the zip's
  records, ``manifest_check.py`` checks the manifest against its schema.
"""
