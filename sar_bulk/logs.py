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
    """Configure structlog for the process: ``fmt`` is auto, json or console.

    Records of the standard library's logging (azure-identity writes its warnings there) go
    through the same redaction and renderer, so a JSON log stays all JSON.
    """
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exceptions: Processor = (
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        if use_json
        else structlog.processors.format_exc_info
    )
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    redactor = SecretRedactor(secrets)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            exceptions,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                redactor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    # The libraries' chatter below warnings (connection pools, token caches) is not ours to show.
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
