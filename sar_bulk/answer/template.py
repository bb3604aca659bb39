"""``sar-bulk init [PATH]``: write a commented config template, never over an existing file.

Usage::

    path = write_template(Path("sar-bulk.toml"))     # ConfigError if the file exists

The template's ``[controller]`` values are ``<placeholders>``; ``load_statement`` refuses any
value that still holds one, so a template nobody filled in cannot end up in a person's answer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from sar_bulk.errors import ConfigError

__all__ = ["DEFAULT_PATH", "TEMPLATE", "write_template"]

DEFAULT_PATH: Final = Path("sar-bulk.toml")

TEMPLATE: Final = """\
# sar-bulk configuration. Settings can also come from SAR_BULK_* environment variables or flags
# (precedence: flag > environment > this file > default). Secrets never go here.

[run]
# org = "https://contoso.crm4.dynamics.com"
# auth = "client-secret"          # reads AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET
# contacts = "requests.csv"
# out = "answers"
# date_from = "2024-01-01"        # MM-DD-YYYY or YYYY-MM-DD
# date_to = "2024-12-31"

# The controller's statement: what Article 15 GDPR requires every answer to tell the person
# besides their data. sar-bulk never invents any of it. Replace every <placeholder>; a value
# that still holds one is refused. Delete this whole table to send answers that say plainly
# that the statement is missing (not recommended).
[controller]
name = "<legal name of the organisation, e.g. Contoso Ltd>"
address = "<postal address of the organisation>"
contact = "<how to reach you about personal data, e.g. privacy@contoso.com>"
dpo = "<the data protection officer's contact; delete this line if you have none>"
supervisory_authority = "<your lead supervisory authority and its address or website>"

# What you hold: the categories of personal data concerned (Art. 15(1)(b)).
categories = [
  "<e.g. identity and contact details: name, e-mail address, phone number>",
  "<e.g. marketing interactions: e-mails sent, opened and clicked; website and form visits>",
  "<e.g. consent and subscription choices>",
]

# Who receives it, by name or category (Art. 15(1)(c)).
recipients = [
  "<e.g. Microsoft Ireland Operations Ltd, as our processor for Dynamics 365>",
]

# How long it is kept, or the criteria that decide (Art. 15(1)(d)).
retention = "<e.g. marketing interactions are deleted 24 months after they happen>"

# Where data not collected from the person came from (Art. 15(1)(g)).
source_of_data = "<e.g. event partners who share registrations; purchased lists: none>"

# Automated decisions and profiling, their logic and consequences (Art. 15(1)(h)).
# Dynamics 365 lead scoring (LeadScoreBoost) is profiling: say what it does and what follows.
automated_decisions = "<e.g. lead scoring ranks your interest to prioritise sales calls>"

# Why you use it and on which legal basis (Art. 15(1)(a), Art. 6): one table per purpose.
[[controller.purposes]]
purpose = "<e.g. sending you our newsletter>"
legal_basis = "<e.g. your consent, Article 6(1)(a) GDPR>"

[[controller.purposes]]
purpose = "<e.g. measuring which e-mails are read, to improve them>"
legal_basis = "<e.g. our legitimate interest, Article 6(1)(f) GDPR>"

# Transfers outside the EEA and their safeguards (Art. 15(2)): one table per destination.
# If there are none, delete these tables and write `transfers = []` in [controller] above.
[[controller.transfers]]
destination = "<e.g. United States (Microsoft Corporation, support access)>"
safeguard = "<e.g. EU-US Data Privacy Framework; standard contractual clauses>"
"""


def write_template(path: Path = DEFAULT_PATH) -> Path:
    """Create ``path`` with the template; refuses to replace anything already there."""
    try:
        # O_EXCL: the check and the creation are one step, so nothing is ever overwritten.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigError(
            f"{path} already exists; sar-bulk init never overwrites a file: "
            "choose another path or move the file away"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(TEMPLATE)
    return path
