"""The sample controller statement of ``sar-bulk demo``: a made-up company, marked as such.

Usage::

    settings["statement"] = sample_statement()      # the demo's dossiers show a complete answer

A real run never uses it: its statement comes only from the ``[controller]`` table of the run's
TOML file. The sample's name says it is a sample on every page it appears on, so a demo dossier
cannot be mistaken for a real controller's answer.
"""

from __future__ import annotations

from typing import Any, Final

from sar_bulk.answer.statement import Statement, load_statement

__all__ = ["SAMPLE_CONTROLLER", "sample_statement"]

SAMPLE_CONTROLLER: Final[dict[str, Any]] = {
    "name": "Contoso Demo Ltd (sample statement)",
    "address": "1 Example Street, Dublin 2, Ireland (a made-up address)",
    "contact": "privacy@contoso-demo.example",
    "supervisory_authority": "Data Protection Commission, 21 Fitzwilliam Square, Dublin 2",
    "categories": [
        "Identity and contact details: name, e-mail address, phone number",
        "Marketing interactions: e-mails sent, opened and clicked; website and form visits",
        "Consent and subscription choices",
    ],
    "recipients": ["Microsoft Ireland Operations Ltd, as our processor for Dynamics 365"],
    "retention": "Marketing interactions are deleted 24 months after they happen; the contact "
    "record 24 months after the last of them.",
    "source_of_data": "You, through our forms and e-mails; no data is bought from others.",
    "automated_decisions": "Lead scoring ranks your interest to prioritise sales calls; it has "
    "no legal or similarly significant effect on you.",
    "purposes": [
        {"purpose": "Sending you our newsletter", "legal_basis": "Your consent, Article 6(1)(a)"},
        {
            "purpose": "Measuring which e-mails are read, to improve them",
            "legal_basis": "Our legitimate interest, Article 6(1)(f)",
        },
    ],
    "transfers": [],
    "rights_note": "This is a sample statement for the sar-bulk demo; a real answer carries the "
    "controller's own statement from the [controller] table of its configuration.",
}


def sample_statement() -> Statement:
    """The demo's statement, checked like any other."""
    statement = load_statement(SAMPLE_CONTROLLER)
    assert statement is not None  # a table was given
    return statement
