"""What one synthetic interaction looks like: realistic, awkward and personal.

The shapes follow Microsoft's description of the action's output (PascalCase fields; e-mail types
carry message, sending and address details, web types visitor, session, browser and geo, journey
types journey/activity/workflow ids). The values are chosen to break careless clients: non-ASCII
and right-to-left text, emoji, CJK, quotes, backslashes, ``</script>``, U+2028, nested objects and
arrays, nulls, booleans and floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sar_bulk.simulator.hashing import Draw
from sar_bulk.simulator.interaction_types import InteractionType as T

__all__ = ["Person", "build_record"]

_BOUNCE = frozenset({T.EmailBlockBounced, T.EmailHardBounced, T.EmailSoftBounced})
_EMAIL = _BOUNCE | frozenset(
    {
        T.EmailBlocked,
        T.EmailClicked,
        T.EmailContainsBlacklistedLinks,
        T.EmailDelivered,
        T.EmailFeedbackLoop,
        T.EmailForwarded,
        T.EmailOpened,
        T.EmailSendingFailed,
        T.EmailSent,
        T.EmailSubscriptionSubmit,
        T.InvalidRecipientAddress,
        T.InvalidSenderAddress,
        T.OutOfEmailCredits,
    }
)
_WEB = frozenset(
    {
        T.EmailClicked,
        T.EmailOpened,
        T.EmailSubscriptionSubmit,
        T.FormSubmitted,
        T.FormVisited,
        T.RedirectLinkClicked,
        T.WebsiteClicked,
        T.WebsiteVisited,
    }
)
_JOURNEY = frozenset(
    {
        T.ActivityContactBlocked,
        T.ActivityContactDispatched,
        T.ActivityContactProcessingFailed,
        T.CreateCrmActivityContactProcessed,
        T.CreateCustomChannelActivityContactProcessed,
        T.CustomChannelResponse,
        T.CustomerJourneyContactRecordUpdated,
        T.PassThroughActivityContactProcessed,
        T.SchedulerActivityContactProcessed,
        T.SplitterActivityContactProcessed,
        T.TriggerActivityContactProcessed,
        T.TriggerCrmWorkflowActivityContactProcessed,
    }
)
_EVENT = frozenset({T.EventCheckIn, T.EventRegistration})
_SEGMENT = frozenset({T.SegmentRelationshipEdited, T.SegmentSubscribed, T.SegmentUnsubscribed})

_NAMES = (
    "Jürgen Weiß",
    "Zoë O'Brien",
    'Ana María "Anita" Pérez',
    "李小龍",
    "Ólafur 🌋 Jónsson",
    "Łukasz Żółć",
    "佐藤 花子",
    "Nadia Al-Masri نادية",
    "Chris Back\\slash",
    "Sam Smith",
)
_MAILBOXES = (
    "contoso.com",
    "fabrikam.example",
    "adventure-works.com",
    "bücher.example",
    "例え.jp",
    "mail.example.org",
)
_PLACES: tuple[tuple[str, str | None, str, str | None], ...] = (
    ("Switzerland", "Zürich", "Zürich", "8001"),
    ("Brazil", "São Paulo", "São Paulo", "01310-100"),
    ("Poland", "Łódzkie", "Łódź", "90-001"),
    ("Japan", "東京都", "渋谷区", "150-0002"),
    ("Germany", "Bayern", "München", "80331"),
    ("Iceland", None, "Reykjavík", "101"),
    ("Canada", "Québec", "Montréal", "H2X 1Y4"),
    ("United States", "Washington", "Redmond", "98052"),
    ("Türkiye", "İstanbul", "İstanbul", "34000"),
    ("Greece", "Attica", "Αθήνα", "105 52"),
    ("Egypt", None, "القاهرة", None),
    ("Ireland", "Dublin", "Dublin", "D02 X285"),
)
_SUBJECTS = (
    'Save 20% on "Summer" deals',
    "Ihre Bestellung \u2013 Bestätigung",
    "¡Última oportunidad! 🎁",
    "Quarterly update </script><script>alert(1)</script>",
    "Path C:\\promo\\2024 & <b>bold</b>",
    "Line\u2028separator and tab\there",
    "新製品のお知らせ",
)
_FREE_TEXT = (
    'He said "hi" \\o/ </script>',
    "Très bien, merci ! 👍",
    "Please don't e-mail me again.",
    "多谢 — 很好",
    "C:\\Users\\me\\Desktop\\form.pdf",
    "",
    "multi\nline\r\nanswer",
)
_JOURNEYS = ("Welcome 👋", "Rückgewinnung Q3", 'Onboarding "VIP"', "秋のキャンペーン", None)
_BROWSERS = ("Edge 120.0", "Chrome 121.0", "Firefox 122.0", "Safari 17.2", "Samsung Internet 23")
_SYSTEMS = ("Windows 11", "macOS 14.2", "iOS 17.2", "Android 14", "Linux")
_PATHS = (
    "/",
    "/products?id=42&utm_source=email",
    "/événements/2024?lang=fr",
    "/blog/o'reilly-%22quotes%22",
    "/ja/製品",
)
_BOUNCES = {
    T.EmailHardBounced: ("Hard", "550 5.1.1 Recipient address rejected: User unknown"),
    T.EmailSoftBounced: ("Soft", "452 4.2.2 Mailbox full; try again later"),
    T.EmailBlockBounced: (
        "Block",
        '554 5.7.1 Service unavailable; client host blocked using "zen.spamhaus.org"',
    ),
}


@dataclass(frozen=True, slots=True)
class Person:
    """What stays the same across one contact's interactions: name, address, home town."""

    name: str
    email: str
    home: int

    @classmethod
    def from_draw(cls, draw: Draw) -> Person:
        name = draw.choice(_NAMES)
        local = draw.choice(("j", "z", "ana", "li", "o", "lz", "hs", "nadia", "chris"))
        local += f".{draw.below(1000)}" + draw.choice(("", "+news", ".o'neil"))
        return cls(name, f"{local}@{draw.choice(_MAILBOXES)}", draw.below(len(_PLACES)))


def _geo(draw: Draw, person: Person) -> dict[str, Any]:
    # Mostly the contact's home town, sometimes travelling.
    place = _PLACES[person.home if draw.chance(0.8) else draw.below(len(_PLACES))]
    country, state, city, postal = place
    return {"Country": country, "State": state, "City": city, "PostalCode": postal}


def _web(draw: Draw, person: Person) -> dict[str, Any]:
    site = draw.choice(("https://www.contoso.com", "https://events.fabrikam.example"))
    referrer = None
    if draw.chance(0.6):
        referrer = draw.choice(("https://www.bing.com/search?q=contoso+%22deal%22", site + "/"))
    return {
        "VisitorId": draw.guid(),
        "SessionId": draw.hex(16),
        "Browser": draw.choice(_BROWSERS),
        "OperatingSystem": draw.choice(_SYSTEMS),
        "IsMobile": draw.chance(0.4),
        "Geo": _geo(draw, person),
        "Url": site + draw.choice(_PATHS),
        "ReferrerUrl": referrer,
    }


def _email(draw: Draw, itype: T, person: Person) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "MessageId": draw.guid(),
        "SendingId": draw.guid(),
        "EmailAddressUsed": person.email,
        "EmailDomain": person.email.rpartition("@")[2],
        "Subject": draw.choice(_SUBJECTS),
        "IsTestSend": draw.chance(0.05),
    }
    if itype in _BOUNCE:
        category, reason = _BOUNCES[itype]
        fields["BounceCategory"] = category
        fields["BounceReason"] = reason if draw.chance(0.85) else None
    return fields


def _journey(draw: Draw, itype: T) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "CustomerJourneyId": draw.guid(),
        "CustomerJourneyName": draw.choice(_JOURNEYS),
        "ActivityId": draw.guid(),
        "WorkflowId": draw.guid()
        if itype is T.TriggerCrmWorkflowActivityContactProcessed or draw.chance(0.3)
        else None,
    }
    if itype is T.CustomerJourneyContactRecordUpdated:
        fields["UpdatedFields"] = draw.choice(
            (["telephone1"], ["address1_city", "address1_postalcode"], [])
        )
    if itype in (T.CustomChannelResponse, T.CreateCustomChannelActivityContactProcessed):
        fields["Channel"] = draw.choice(("SMS", "WhatsApp", "Teams"))
        fields["ResponseText"] = draw.choice(_FREE_TEXT)
    return fields


def _specific(draw: Draw, itype: T, person: Person) -> dict[str, Any]:
    if itype in _EVENT:
        return {
            "EventId": draw.guid(),
            "EventName": draw.choice(("Contoso Summit 2024", "Fête d'été", "春のセミナー")),
            "SessionName": draw.choice(("Keynote", 'Workshop "Hands-on"', None)),
            "CheckedIn": itype is T.EventCheckIn,
        }
    if itype in _SEGMENT:
        return {
            "SegmentId": draw.guid(),
            "SegmentName": draw.choice(("Newsletter \u2013 DE", "VIP 🌟", "All contacts")),
            "Source": draw.choice(("SubscriptionCenter", "Journey", None)),
        }
    if itype is T.SurveyResponse:
        return {
            "SurveyId": draw.guid(),
            "Score": draw.between(0, 10),
            "Comment": draw.choice(_FREE_TEXT),
            "Answers": [
                {"Question": f"Q{n}", "Answer": draw.choice(_FREE_TEXT)}
                for n in range(1, draw.between(1, 3) + 1)
            ],
        }
    if itype is T.LeadScoreBoost:
        return {
            "LeadId": draw.guid(),
            "ScoringModelId": draw.guid(),
            "BoostValue": round(draw.unit() * 50.0 - 5.0, 2),
        }
    if itype is T.FormSubmitted:
        return {
            "FormId": draw.guid(),
            "SubmittedFields": {
                "FullName": person.name,
                "Email": person.email,
                "Comments": draw.choice(_FREE_TEXT),
                "ConsentGiven": draw.chance(0.7),
                "Interests": draw.choice((["Events", "Produkte"], [], None)),
            },
        }
    if itype is T.FormVisited:
        return {"FormId": draw.guid(), "DurationSeconds": round(draw.unit() * 300.0, 3)}
    return {}


def build_record(
    draw: Draw,
    *,
    interaction_id: str,
    itype: T,
    timestamp: str,
    contact_id: str,
    person: Person,
) -> dict[str, Any]:
    """One interaction exactly as the server sends it inside ``Data``."""
    itype = T(itype)  # a caller's own str-valued enum member becomes ours, so ``is`` works
    record: dict[str, Any] = {
        "InteractionId": interaction_id,
        "InteractionType": itype.value,
        "Timestamp": timestamp,
        "ContactId": contact_id,
    }
    if itype in _EMAIL:
        record.update(_email(draw, itype, person))
    if itype in _WEB:
        record.update(_web(draw, person))
    if itype in _JOURNEY or (itype in _EMAIL and draw.chance(0.7)):
        record.update(_journey(draw, itype))
    record.update(_specific(draw, itype, person))
    return record
