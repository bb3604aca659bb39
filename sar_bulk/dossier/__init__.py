"""The dossier: its format, the writer that assembles it and the verifier that checks it.

``format.py`` defines ``sar-bulk/dossier/v2`` (parts grouped by source, every member hashed) and
README.txt; ``format_v1.py`` keeps the earlier format so that older dossiers still verify;
``writer.py`` spools each part's rows and files and assembles the zip; ``verify.py`` checks a
dossier strictly against the layout the writer makes.
"""
