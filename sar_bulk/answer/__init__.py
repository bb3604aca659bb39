"""The answer a controller sends: index.html and README.txt, built from an ``AnswerView``.

Usage (the dossier writer, at assembly time)::

    from sar_bulk.answer import AnswerBuilder, Question, load_statement, render_html, render_text

    statement = load_statement(toml_document.get("controller"))    # once per run
    builder = AnswerBuilder(contact_id, Question(system=org_url, types=requested))
    builder.add_interaction("EmailSent", row)      # streaming, any order, bounded memory
    builder.add_interactions("EmailSent", rows)    # the same for many rows of one type
    builder.add_record("contact", row)
    builder.add_export("realtime/1-gdpr_output.json", size, sha256, small_content_or_None)
    view = builder.build(prepared_at=now, statement=statement)
    files = answer_files(view)     # {"index.html": bytes, "README.txt": bytes}

Modules: ``statement`` (the controller's statement and its TOML table), ``view`` (the input model
and its builder), ``fields`` (labels and value formats), ``wording`` (the shared sentences),
``timeline`` (the SVG), ``html`` and ``text`` (the two renderers), ``files`` (both as bytes),
``template`` (``sar-bulk init``).
"""

from sar_bulk.answer.files import HTML_NAME, TEXT_NAME, answer_files
from sar_bulk.answer.html import render_html
from sar_bulk.answer.statement import Purpose, Statement, Transfer, load_statement
from sar_bulk.answer.template import write_template
from sar_bulk.answer.text import render_text
from sar_bulk.answer.view import (
    AnswerBuilder,
    AnswerView,
    ExportFile,
    Question,
    RecordTable,
    TypeRows,
)

__all__ = [
    "HTML_NAME",
    "TEXT_NAME",
    "AnswerBuilder",
    "AnswerView",
    "ExportFile",
    "Purpose",
    "Question",
    "RecordTable",
    "Statement",
    "Transfer",
    "TypeRows",
    "answer_files",
    "load_statement",
    "render_html",
    "render_text",
    "write_template",
]
