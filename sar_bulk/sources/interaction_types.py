"""The 40 interaction types that ``msdyncrm_LoadInteractionsPublic`` accepts.

The spelling is the one the server expects (``EmailContainsBlacklistedLinks``, not the renamed
``EmailContainsBlockListedLinks`` of Microsoft's newest page), and the order of the enum is the
canonical order used everywhere: in the dossier's manifest, in README.txt and in reports.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALL_TYPES", "InteractionType", "parse_types"]


class InteractionType(StrEnum):
    """One interaction type; the value is the exact name sent as ``InteractionType``."""

    ActivityContactBlocked = "ActivityContactBlocked"
    ActivityContactDispatched = "ActivityContactDispatched"
    ActivityContactProcessingFailed = "ActivityContactProcessingFailed"
    CreateCrmActivityContactProcessed = "CreateCrmActivityContactProcessed"
    CreateCustomChannelActivityContactProcessed = "CreateCustomChannelActivityContactProcessed"
    CustomChannelResponse = "CustomChannelResponse"
    CustomerJourneyContactRecordUpdated = "CustomerJourneyContactRecordUpdated"
    EmailBlockBounced = "EmailBlockBounced"
    EmailBlocked = "EmailBlocked"
    EmailClicked = "EmailClicked"
    EmailContainsBlacklistedLinks = "EmailContainsBlacklistedLinks"
    EmailDelivered = "EmailDelivered"
    EmailFeedbackLoop = "EmailFeedbackLoop"
    EmailForwarded = "EmailForwarded"
    EmailHardBounced = "EmailHardBounced"
    EmailOpened = "EmailOpened"
    EmailSendingFailed = "EmailSendingFailed"
    EmailSent = "EmailSent"
    EmailSoftBounced = "EmailSoftBounced"
    EmailSubscriptionSubmit = "EmailSubscriptionSubmit"
    EventCheckIn = "EventCheckIn"
    EventRegistration = "EventRegistration"
    FormSubmitted = "FormSubmitted"
    FormVisited = "FormVisited"
    InvalidRecipientAddress = "InvalidRecipientAddress"
    InvalidSenderAddress = "InvalidSenderAddress"
    LeadScoreBoost = "LeadScoreBoost"
    OutOfEmailCredits = "OutOfEmailCredits"
    PassThroughActivityContactProcessed = "PassThroughActivityContactProcessed"
    RedirectLinkClicked = "RedirectLinkClicked"
    SchedulerActivityContactProcessed = "SchedulerActivityContactProcessed"
    SegmentRelationshipEdited = "SegmentRelationshipEdited"
    SegmentSubscribed = "SegmentSubscribed"
    SegmentUnsubscribed = "SegmentUnsubscribed"
    SplitterActivityContactProcessed = "SplitterActivityContactProcessed"
    SurveyResponse = "SurveyResponse"
    TriggerActivityContactProcessed = "TriggerActivityContactProcessed"
    TriggerCrmWorkflowActivityContactProcessed = "TriggerCrmWorkflowActivityContactProcessed"
    WebsiteClicked = "WebsiteClicked"
    WebsiteVisited = "WebsiteVisited"

    @property
    def meaning(self) -> str:
        """One plain-language line for the data subject (used in the dossier's README.txt)."""
        return _MEANINGS[self]


ALL_TYPES: tuple[InteractionType, ...] = tuple(InteractionType)

_MEANINGS: dict[InteractionType, str] = {
    InteractionType.ActivityContactBlocked: "a customer journey step was blocked for you",
    InteractionType.ActivityContactDispatched: "a customer journey step was sent to you",
    InteractionType.ActivityContactProcessingFailed: "a customer journey step failed for you",
    InteractionType.CreateCrmActivityContactProcessed: "a journey created a CRM activity about you",
    InteractionType.CreateCustomChannelActivityContactProcessed: (
        "a journey sent you a message over a custom channel"
    ),
    InteractionType.CustomChannelResponse: "you responded on a custom channel",
    InteractionType.CustomerJourneyContactRecordUpdated: "a journey updated your contact record",
    InteractionType.EmailBlockBounced: "an e-mail to you was rejected as blocked (block bounce)",
    InteractionType.EmailBlocked: "an e-mail to you was not sent because it was blocked",
    InteractionType.EmailClicked: "you clicked a link in an e-mail",
    InteractionType.EmailContainsBlacklistedLinks: (
        "an e-mail to you was stopped because it contained blocked links"
    ),
    InteractionType.EmailDelivered: "an e-mail was delivered to you",
    InteractionType.EmailFeedbackLoop: "an e-mail to you was reported as spam",
    InteractionType.EmailForwarded: "you forwarded an e-mail",
    InteractionType.EmailHardBounced: "an e-mail to you bounced permanently (hard bounce)",
    InteractionType.EmailOpened: "you opened an e-mail",
    InteractionType.EmailSendingFailed: "sending an e-mail to you failed",
    InteractionType.EmailSent: "an e-mail was sent to you",
    InteractionType.EmailSoftBounced: "an e-mail to you bounced temporarily (soft bounce)",
    InteractionType.EmailSubscriptionSubmit: "you submitted a subscription centre form",
    InteractionType.EventCheckIn: "you checked in at an event",
    InteractionType.EventRegistration: "you registered for an event",
    InteractionType.FormSubmitted: "you submitted a marketing form",
    InteractionType.FormVisited: "you viewed a marketing form",
    InteractionType.InvalidRecipientAddress: "an e-mail to you was not sent: invalid address",
    InteractionType.InvalidSenderAddress: "an e-mail to you was not sent: the sender was invalid",
    InteractionType.LeadScoreBoost: "your lead score was raised",
    InteractionType.OutOfEmailCredits: "an e-mail to you was not sent: the sender had no credits",
    InteractionType.PassThroughActivityContactProcessed: "you passed a journey step",
    InteractionType.RedirectLinkClicked: "you clicked a redirect (tracked) link",
    InteractionType.SchedulerActivityContactProcessed: "you passed a scheduled journey step",
    InteractionType.SegmentRelationshipEdited: "your segment membership was edited",
    InteractionType.SegmentSubscribed: "you were added to a segment",
    InteractionType.SegmentUnsubscribed: "you were removed from a segment",
    InteractionType.SplitterActivityContactProcessed: "you passed a journey split step",
    InteractionType.SurveyResponse: "you answered a survey",
    InteractionType.TriggerActivityContactProcessed: "you passed a journey trigger step",
    InteractionType.TriggerCrmWorkflowActivityContactProcessed: (
        "a journey started a CRM workflow for you"
    ),
    InteractionType.WebsiteClicked: "you clicked a link on a tracked website",
    InteractionType.WebsiteVisited: "you visited a tracked website",
}


def parse_types(text: str) -> tuple[InteractionType, ...]:
    """Parse ``"all"`` or a comma list of type names into canonical order, without duplicates.

    Raises ``ValueError`` naming the unknown entries and listing the valid names.
    """
    stripped = text.strip()
    if stripped.lower() == "all":
        return ALL_TYPES
    names = [part.strip() for part in stripped.split(",") if part.strip()]
    if not names:
        raise ValueError("no interaction types given; use 'all' or a comma list of type names")
    unknown = [name for name in names if name not in InteractionType.__members__]
    if unknown:
        raise ValueError(
            f"unknown interaction type(s): {', '.join(unknown)}; "
            f"valid names: {', '.join(t.value for t in ALL_TYPES)}"
        )
    wanted = set(names)
    return tuple(t for t in ALL_TYPES if t.value in wanted)
