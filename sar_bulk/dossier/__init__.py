"""The dossier: its format, the writer that assembles it and the verifier that checks it."""
