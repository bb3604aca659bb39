"""Sample answers for the answer tests: empty, small and heavy, with hostile values on purpose.

``HOSTILE`` holds markup that would run script or break out of an attribute if any renderer forgot
to escape; the small sample carries it in a name, a subject, a nested field and a column name.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sar_bulk.answer import AnswerBuilder, AnswerView, Question, Statement, load_statement

CONTACT: Final = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
HOSTILE: Final = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">"\''
PREPARED: Final = datetime(2024, 6, 30, 9, 5, tzinfo=UTC)

CONTROLLER: Final[dict[str, Any]] = {
    "name": "Contoso Ltd",
    "address": "1 Harbour Street, Dublin 2, Ireland",
    "contact": "privacy@contoso.example",
    "dpo": "dpo@contoso.example",
    "supervisory_authority": "Data Protection Commission, 21 Fitzwilliam Square, Dublin 2",
    "categories": ["Identity and contact details", "Marketing interactions", "Consent choices"],
    "recipients": ["Microsoft Ireland Operations Ltd, our processor for Dynamics 365"],
    "retention": "Marketing interactions are deleted 24 months after they happen.",
    "source_of_data": "Event partners who share registrations with us.",
    "automated_decisions": "Lead scoring ranks contacts by e-mail clicks; no legal effect.",
    "purposes": [
        {"purpose": "Sending our newsletter", "legal_basis": "Consent, Article 6(1)(a)"},
        {"purpose": "Measuring e-mail reads", "legal_basis": "Legitimate interest, 6(1)(f)"},
    ],
    "transfers": [{"destination": "United States", "safeguard": "Standard contractual clauses"}],
}


def statement() -> Statement:
    result = load_statement(CONTROLLER)
    assert result is not None
    return result


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def empty_view(*, with_statement: bool = True) -> AnswerView:
    builder = AnswerBuilder(CONTACT, Question(system="https://contoso.crm4.dynamics.com"))
    return builder.build(prepared_at=PREPARED, statement=statement() if with_statement else None)


def small_view(*, with_statement: bool = True) -> AnswerView:
    builder = AnswerBuilder(
        CONTACT,
        Question(
            system="https://contoso.crm4.dynamics.com",
            date_from=date(2023, 1, 1),
            date_to=date(2024, 6, 30),
        ),
    )
    builder.add_record(
        "contact",
        {
            "@odata.etag": 'W/"123"',
            "contactid": CONTACT,
            "fullname": "Ada Lovelace",
            "firstname": "Ada",
            "lastname": "Lovelace",
            "emailaddress1": "ada@example.org",
            "address1_city": "London",
            "jobtitle": "Mathematician",
            "description": HOSTILE,
            "donotbulkemail": False,
            "preferredcontactmethodcode": 2,
            "preferredcontactmethodcode@OData.Community.Display.V1.FormattedValue": "Email",
            "createdon": "2022-11-02T08:00:00Z",
        },
    )
    builder.add_record(
        "msdynmkt_contactpointconsent4s",
        {
            "msdynmkt_contactpointvalue": "ada@example.org",
            "msdynmkt_contactpointtype": 534120000,
            "msdynmkt_contactpointtype@OData.Community.Display.V1.FormattedValue": "Email",
            "msdynmkt_value": 534120001,
            "msdynmkt_value@OData.Community.Display.V1.FormattedValue": "Opted In",
            "msdynmkt_source": "Subscription centre",
            "modifiedon": "2023-02-01T10:00:00Z",
        },
    )
    builder.add_record("leads", {"leadid": "9d0c", "subject": "Interested in analytical engines"})
    start = datetime(2023, 3, 4, 13, 10, tzinfo=UTC)
    for n in range(12):
        builder.add_interaction(
            "EmailOpened",
            {
                "InteractionId": f"00000000-0000-0000-0000-{n:012d}",
                "InteractionType": "EmailOpened",
                "Timestamp": _stamp(start + timedelta(days=23 * n)),
                "ContactId": CONTACT,
                "Subject": HOSTILE if n == 0 else f"Newsletter {n}",
                "EmailAddressUsed": "ada@example.org",
                "Geo": {"City": "London", "Country": HOSTILE if n == 0 else "United Kingdom"},
                "IsMobile": n % 2 == 0,
                **({HOSTILE: "a column named with markup"} if n == 0 else {}),
                **(
                    {"ResponseText": "multi\nline\r\nanswer\u2028with a\u2029paragraph break"}
                    if n == 1
                    else {}
                ),
            },
        )
    builder.add_interaction(
        "LeadScoreBoost",
        {
            "InteractionId": "11111111-0000-0000-0000-000000000000",
            "InteractionType": "LeadScoreBoost",
            "Timestamp": "2024-03-04T13:10:00Z",
            "ContactId": CONTACT,
            "LeadId": "9d0c",
            "BoostValue": 12.5,
        },
    )
    builder.add_export(
        "realtime/1-gdpr_output.json", 58, "ab" * 32, b'{"Contact": {"Name": "Ada"}, "Emails": [1]}'
    )
    return builder.build(
        prepared_at=PREPARED,
        statement=statement() if with_statement else None,
        received=date(2024, 6, 1),
    )


HEAVY_TYPES: Final = (
    "EmailSent",
    "EmailDelivered",
    "EmailOpened",
    "EmailClicked",
    "WebsiteVisited",
)


def heavy_view(total: int = 4000) -> AnswerView:
    """``total`` interactions over five types and four years, fed in arbitrary order."""
    builder = AnswerBuilder(CONTACT, Question(system="https://contoso.crm4.dynamics.com"))
    builder.add_record("contact", {"contactid": CONTACT, "fullname": "Grace Hopper"})
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for n in range(total):
        itype = HEAVY_TYPES[n % len(HEAVY_TYPES)]
        when = start + timedelta(hours=(n * 7919) % (4 * 365 * 24))
        builder.add_interaction(
            itype,
            {
                "InteractionId": f"{n:08d}-0000-0000-0000-000000000000",
                "InteractionType": itype,
                "Timestamp": _stamp(when),
                "ContactId": CONTACT,
                "Subject": f"Offer {n} \u2013 Ihre Bestätigung 🎁",
                "Url": f"https://www.contoso.com/products?id={n}&utm_source=email",
                "Geo": {"City": "Zürich", "Country": "Switzerland"},
                "MessageId": f"{n:032x}",
            },
        )
    return builder.build(prepared_at=PREPARED, statement=statement())
