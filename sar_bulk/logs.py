"""structlog set-up: JSON lines for machines, readable lines for people, and redaction.

Usage::

    configure_logging(fmt="auto", level="info", secrets=[os.environ.get("SAR_BULK_TOKEN")])
    structlog.contextvars.bind_contextvars(run_id=run_id)

Processors are small functions that take an event dict and return one
(https://www.structlog.org/en/stable/processors.html). ``redact`` runs last before rendering, so
no event can carry a token, a secret or an Authorization header out, whatever a caller bound.
Tracebacks are rendered without local variables: locals of the HTTP layer hold the token.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["SecretRedactor", "configure_logging"]

_SECRET_KEYS = re.compile(r"token|secret|password|authorization|credential_value", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/=]+")
REDACTED = "[redacted]"


class SecretRedactor:
    """Processor: blank secret-named keys, bearer tokens and known secret values in strings."""

    __slots__ = ("_known",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Very short values would blank out ordinary words; real tokens and secrets are long.
        self._known = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        return {key: self._clean(key, value) for key, value in event.items()}

    def _clean(self, key: str, value: Any) -> Any:
        if _SECRET_KEYS.search(key) and key != "event":
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, MutableMapping):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, v) for v in value]
        return value

    def scrub(self, text: str) -> str:
        for secret in self._known:
            text = text.replace(secret, REDACTED)
        return _BEARER.sub(r"\1 " + REDACTED, text)


def configure_logging(
    *,
    fmt: str = "auto",
    level: str = "info",
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the process: ``fmt`` is auto, json or console."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            SecretRedactor(secrets),
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors += [
            structlog.processors.format_exc_info,
            SecretRedactor(secrets),
            structlog.dev.ConsoleRenderer(colors=out.isatty()),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # azure-identity logs through the standard library; keep its chatter to warnings.
    logging.getLogger("azure").setLevel(logging.WARNING)
