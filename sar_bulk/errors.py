"""The exception tree of sar-bulk.

Every error the tool raises on purpose is a ``SarBulkError``::

    SarBulkError
    ├── ConfigError               a flag, config file or environment variable is unusable (exit 2)
    ├── InputError                the contacts file cannot be read at all (exit 2)
    ├── CredentialError           the credential could not produce a token (exit 3)
    ├── DossierError              a dossier could not be written or is not valid
    │   └── OutputError           the output folder or blob container refused or lost it
    │       ├── OutputUnreachable no answer from the blob store at all
    │       └── OutputRefused     the blob store answered an upload with an error or refusal
    └── DataverseError            one call to the org failed; knows contact, part, status, code
        ├── RetryableError        worth another attempt
        │   ├── Throttled         429 service protection; carries retry_after and which limit
        │   ├── Transient         502/503/504, transient 500, timeouts, dropped connections
        │   │   └── ConnectFailed no connection at all (refused, no DNS answer, no route)
        │   └── MalformedResponse a 2xx whose body is not what was asked for
        ├── RunStopper            no later call can succeed either: the run stops (exit 3)
        │   ├── AuthRejected      401 even after a fresh token
        │   ├── ActionMissing     404 for the action: the org no longer has it
        │   └── Unreachable       TLS failure: the org's certificate is not trusted
        │       └── NoConnection  connect failures in a row with no answer between them
        ├── RetryBudgetSpent      one (contact, part) would wait past its retry budget
        ├── Forbidden             403: the application user lacks a security role
        ├── BadRequest            400 with Dataverse's code and message
        ├── ServerError           any other answer (a non-transient 500, an unexpected status)
        ├── PagingError           a NextSkipToken that repeats, or more pages than the cap
        ├── NotFound              404 for one record (not for the action): that contact fails
        ├── Redirected            a 3xx: never followed, the Location is named
        ├── OverLimit             an answer or skip token beyond a configured size cap
        └── ForeignData           a page holds another contact's or another type's interaction

Messages say what failed (contact, part, HTTP status, Dataverse code) and what the user can do.
They never contain a token, a secret or interaction content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Self, TypeVar

__all__ = [
    "LIMIT_CODES",
    "ActionMissing",
    "AuthRejected",
    "BadRequest",
    "ConfigError",
    "ConnectFailed",
    "CredentialError",
    "DataverseError",
    "DossierError",
    "Forbidden",
    "ForeignData",
    "InputError",
    "MalformedResponse",
    "NoConnection",
    "NotFound",
    "OutputError",
    "OutputRefused",
    "OutputUnreachable",
    "OverLimit",
    "PagingError",
    "Redirected",
    "RequestContext",
    "RetryBudgetSpent",
    "RetryableError",
    "RunStopper",
    "SarBulkError",
    "ServerError",
    "Throttled",
    "Transient",
    "Unreachable",
    "normalise_code",
]

# Service-protection error codes, in the hex form the Web API uses (the SDK's decimal form is
# mapped onto these by ``normalise_code``).
REQUESTS_LIMIT: Final = "0x80072322"
EXECUTION_TIME_LIMIT: Final = "0x80072321"
CONCURRENCY_LIMIT: Final = "0x80072326"
LIMIT_CODES: Final[dict[str, str]] = {
    REQUESTS_LIMIT: "requests",
    EXECUTION_TIME_LIMIT: "execution-time",
    CONCURRENCY_LIMIT: "concurrency",
}


def normalise_code(code: object) -> str:
    """Dataverse error codes come as ``"0x80072322"``, ``"-2147015902"`` or ints: one hex form.

    Unknown shapes come back as their string, empty for ``None``.
    """
    if code is None:
        return ""
    text = str(code).strip()
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return text
    return f"0x{value & 0xFFFFFFFF:08x}"


class SarBulkError(Exception):
    """Base of every error sar-bulk raises on purpose."""


class ConfigError(SarBulkError):
    """An option, config file or environment variable is unusable."""


class InputError(SarBulkError):
    """The contacts file cannot be used at all (missing, unreadable, without a single id)."""


class CredentialError(SarBulkError):
    """The credential could not produce a token (wrong secret, no managed identity, ...)."""


class DossierError(SarBulkError):
    """A dossier could not be written, or a written one is not valid."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a failed call was about: enough to name it in a message, never a secret."""

    contact_id: str
    part: str  # the part's key, e.g. "interactions/EmailSent", "records", "realtime"
    page: int = 1

    def describe(self) -> str:
        where = f"{self.part} for contact {self.contact_id}"
        return where if self.page == 1 else f"{where} (page {self.page})"


_E = TypeVar("_E", bound="DataverseError")


class DataverseError(SarBulkError):
    """One call to the org failed.

    ``status`` is the HTTP status (``None`` when no answer came) and ``code`` Dataverse's error
    code in hex form (empty when the body had none).
    """

    advice = "see the message for details"

    def __init__(
        self,
        context: RequestContext | None,
        detail: str,
        *,
        status: int | None = None,
        code: str = "",
    ) -> None:
        self.context = context
        self.detail = detail
        self.status = status
        self.code = code
        super().__init__(self._message())

    def retold(
        self, kind: type[_E], what: str = "", *, context: RequestContext | None = None
    ) -> _E:
        """The same answer as a ``kind`` (whose advice fits the caller), its detail told as
        ``what: detail`` (the detail alone without ``what``), about ``context`` if given."""
        detail = f"{what}: {self.detail}" if what else self.detail
        return kind(context or self.context, detail, status=self.status, code=self.code)

    def with_detail(self, detail: str) -> Self:
        """The same error with another ``detail`` (e.g. the server's text with values taken out)."""
        # Not copy.copy: it would call __init__ with the message alone.
        changed = type(self).__new__(type(self))
        changed.__dict__.update(self.__dict__)
        changed.detail = detail
        changed.args = (changed._message(),)
        return changed

    def _message(self) -> str:
        what = self.context.describe() if self.context else "request"
        answer = [f"HTTP {self.status}"] if self.status is not None else ["no answer"]
        if self.code:
            answer.append(f"code {self.code}")
        return f"{what} failed ({', '.join(answer)}): {self.detail}; {self.advice}"


class RetryableError(DataverseError):
    """The same call may succeed later."""

    advice = "retried automatically"


class Throttled(RetryableError):
    """HTTP 429 from Dataverse service protection.

    ``retry_after`` is the server's wait in seconds (``None`` when absent or unparseable) and
    ``limit`` which limit was hit: ``"requests"``, ``"execution-time"``, ``"concurrency"`` or
    ``"unknown"``.
    """

    advice = "every request of this identity pauses for Retry-After; lower --rate if it recurs"

    def __init__(
        self,
        context: RequestContext | None,
        detail: str,
        *,
        retry_after: float | None,
        code: str = "",
        status: int | None = 429,
    ) -> None:
        self.retry_after = retry_after
        self.limit = LIMIT_CODES.get(code, "unknown")
        super().__init__(context, detail, status=status, code=code)


class Transient(RetryableError):
    """A fault that usually passes: 502/503/504, transient 500, a timeout, a dropped connection."""


class RunStopper(DataverseError):
    """No later call can succeed either, so the whole run stops (exit 3)."""


class AuthRejected(RunStopper):
    """401 even with a freshly fetched token."""

    advice = (
        "check that the identity exists in the environment as an application user and that "
        "the token is for this org; the run stops"
    )


class ActionMissing(RunStopper):
    """404 for the action: this org no longer has msdyncrm_LoadInteractionsPublic."""

    advice = (
        "outbound marketing and this action were retired from Microsoft cloud orgs; this org "
        "cannot answer through it (real-time journeys uses msdynmkt_gdprrequest); the run stops"
    )


class Forbidden(DataverseError):
    """403: the identity may not run the action."""

    advice = "give the application user a security role that may run the action"


class BadRequest(DataverseError):
    """400: Dataverse refused the parameters."""

    advice = "check the contact id, interaction type, dates and page size"


class MalformedResponse(RetryableError):
    """A 200 whose body is not what the action returns (HTML, not JSON, Data not an array)."""

    advice = "a proxy or gateway may be in the way; retried, then the type fails"


class Unreachable(RunStopper):
    """TLS to the org failed: its certificate is not trusted or the handshake broke."""

    advice = "check the org URL and the machine's CA certificates; the run stops"


class ServerError(DataverseError):
    """Any other answer: a 500 that is not transient, or a status the action never gives."""

    advice = "Dataverse reported an internal error for this call; try again later"


class PagingError(DataverseError):
    """NextSkipToken repeated, or more pages came than the configured cap."""

    advice = "raise --max-pages if the contact really has that many pages; otherwise report it"


class NotFound(DataverseError):
    """404 about one record (e.g. the contact does not exist), not about the action itself."""

    advice = "check that the contact id exists in this org; the other contacts go on"


class Redirected(DataverseError):
    """A 3xx answer: redirects are never followed (the token must not travel elsewhere)."""

    advice = "Dataverse does not redirect its Web API; check the org URL and any proxy in the way"


class OverLimit(DataverseError):
    """An answer, or a skip token, larger than the configured cap: not read any further."""

    advice = "raise --max-answer-bytes if the org really sends answers that big; else report it"


class ForeignData(DataverseError):
    """A page holds an interaction of another contact or another type than the one asked for.

    Nothing of the page is kept: writing it would hand one person's data to another.
    """

    advice = "nothing of it is written, to protect that person; report it to the org's admin"


# --- throttle/retry additions (issue 8): appended here so parallel edits above do not collide.


class ConnectFailed(Transient):
    """No connection to the org at all: refused, no DNS answer, no route.

    Retried like any transient fault, but the fetcher also counts these in a row: past a few with
    no answer in between, the org is taken as unreachable and the run stops (``Unreachable``).
    """

    def __init__(self, context: RequestContext | None, detail: str, *, host: str) -> None:
        self.host = host
        super().__init__(context, detail)


class RetryBudgetSpent(DataverseError):
    """One (contact, part) would wait longer than its retry budget allows; it fails at once.

    ``last`` is the error that made it wait (``None`` when the wait was the shared pause another
    request's 429 started); its status and code are kept so the report can still name them.
    """

    advice = "raise --retry-budget, or lower --rate so the org throttles less; rerun to resume"

    def __init__(
        self, context: RequestContext | None, detail: str, *, last: DataverseError | None
    ) -> None:
        self.last = last
        status = last.status if last is not None else None
        code = last.code if last is not None else ""
        super().__init__(context, detail, status=status, code=code)


class NoConnection(Unreachable):
    """Request after request found no connection to the org, with no answer in between."""

    advice = (
        "check the org URL, its DNS name and the network path to it (proxy, firewall); "
        "the run stops"
    )


# --- blob output additions (issue 11): appended here so parallel edits above do not collide.


class OutputError(DossierError):
    """The output (a folder or a blob container) refused or lost a dossier or the report.

    A ``DossierError`` because, for a contact, the outcome is the same: its dossier is not
    published, the contact fails with this message and a later run fetches it again.
    """


class OutputUnreachable(OutputError):
    """No answer from the blob store at all (connection refused, no DNS answer, timeouts)."""


class OutputRefused(OutputError):
    """The blob store answered, but with an error after the client's retries: a refused
    credential (403: a SAS expired mid-run), a 5xx, or an answer that is not Blob Storage's."""


class OutputGone(RunStopper):
    """Dossier after dossier found no answer, or a refusal, from the blob store: the run stops
    (exit 3).

    A ``RunStopper`` and not an ``OutputError``: one contact's failed upload fails that contact,
    but a store that stays silent would fail every contact after its data was fetched, spending
    the identities' request limits for nothing.
    """

    # What to check is in the last failure's own message (the detail quotes it): reachability
    # for a silent store, the credential for a refusal. Said once, not twice.
    advice = "once that is fixed, rerun: published dossiers are kept, the others fetched then"

    def _message(self) -> str:
        return f"{self.detail}; {self.advice}"
