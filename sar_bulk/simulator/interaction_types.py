"""The 40 interaction types the simulated action accepts, kept apart from the client's list.

The simulator is a separate program: if the client misspells a type, the org must refuse it, so
the org keeps its own list (the spelling of Microsoft's schemas: ``EmailContainsBlacklistedLinks``).
The enum's order is the order ``Dataset`` spreads heavy contacts over, so it must not change.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALL_TYPES", "InteractionType"]


class InteractionType(StrEnum):
    """One interaction type; the value is the exact name the action accepts."""

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


ALL_TYPES: tuple[InteractionType, ...] = tuple(InteractionType)
