"""The answer renderers as they were before they were made faster, kept only to compare bytes.

``tests/test_answer_same_bytes.py`` renders the same inputs with these modules and with
``sar_bulk.answer`` and requires identical bytes: the speed work must not change a single
character a person reads. Copied verbatim from ``sar_bulk/answer`` and
``sar_bulk/dossier/answer_feed.py`` at commit b55c31d; only the imports point here. Never edit
them to make a comparison pass.
"""
