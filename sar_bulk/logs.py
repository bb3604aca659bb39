"""structlog set-up: JSON lines for machines, readable lines for people, and THE redactor.

Usage::

    configure_logging(fmt="auto", level="info", secrets=secrets_from_environ(os.environ))
    structlog.contextvars.bind_contextvars(run_id=run_id)
    REDACTOR.add(token)                      # a bearer token, the moment it is issued
    print(scrub(message), file=sys.stderr)   # any text that leaves the process

Why one redactor for the process: text from the server (an error body's message) can echo the
bearer token it received, and that text travels to stdout, stderr, logs, the report and the state.
Every one of those exits runs it through ``REDACTOR``, which knows every secret the tool read at
start (``secrets_from_environ``) and every token issued since; as a second line of defence it
also blanks anything shaped like a JWT (``eyJ...``, three dot-separated base64url parts) or
following ``Bearer``. Adding is thread-safe: the known values are an immutable tuple, replaced
whole.

Processors are small functions that take an event dict and return one
(https://www.structlog.org/en/stable/processors.html). The redactor runs last before rendering,
so no event can carry a token, a secret or an Authorization header out, whatever a caller bound.
Records of the standard library (aiohttp, azure) get the bound context too, ``run_id`` included.
Tracebacks are rendered without local variables: locals of the HTTP layer hold the token.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "REDACTOR",
    "SecretRedactor",
    "configure_logging",
    "scrub",
    "scrub_value",
    "secrets_from_environ",
]

_SECRET_KEYS = re.compile(r"token|secret|password|authorization|credential_value", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/=]+")
# A JWT: header and payload are base64url JSON objects, so both start with "eyJ" ('{"').
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
REDACTED = "[redacted]"
# Very short values would blank out ordinary words; real tokens and secrets are long.
_MIN_SECRET = 8
# Variables whose values are secrets: the ones auth.py reads, and any SAR_BULK_/AZURE_ variable
# whose name says it holds one (a future SAR_BULK_PROXY_PASSWORD, say).
_SECRET_VARIABLES = ("SAR_BULK_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSPHRASE|KEY", re.IGNORECASE)
_NOT_SECRET_NAMES = frozenset({"AZURE_FEDERATED_TOKEN_FILE"})  # a path, not a secret


def secrets_from_environ(environ: Mapping[str, str]) -> list[str]:
    """The values of every secret variable in ``environ`` (blank ones left out)."""
    names = {
        name
        for name in environ
        if name in _SECRET_VARIABLES
        or (
            name.startswith(("SAR_BULK_", "AZURE_"))
            and _SECRET_NAME.search(name)
            and name not in _NOT_SECRET_NAMES
        )
    }
    return [value for name in sorted(names) if (value := environ[name].strip())]


class SecretRedactor:
    """Processor: blank secret-named keys, bearer tokens, JWTs and known secret values."""

    __slots__ = ("_known", "_lock")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._known: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Know these values from now on (a no-op for values already known or too short)."""
        fresh = {s for s in secrets if s and len(s) >= _MIN_SECRET} - set(self._known)
        if not fresh:
            return
        with self._lock:
            # Longest first: a secret containing another is blanked whole.
            self._known = tuple(sorted({*self._known, *fresh}, key=len, reverse=True))

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
        """``text`` without any known secret, bearer token or JWT-shaped value."""
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _JWT.sub(REDACTED, text)
        return _BEARER.sub(r"\1 " + REDACTED, text)

    def scrub_value(self, value: Any) -> Any:
        """``value`` (JSON-like: dicts, lists, strings) with every string scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {self.scrub(str(k)): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        return value


REDACTOR = SecretRedactor()
"""The process's redactor: every exit (logs, stdout/stderr, report, state) goes through it."""


def scrub(text: str) -> str:
    """``REDACTOR.scrub``: ``text`` fit to leave the process."""
    return REDACTOR.scrub(text)


def scrub_value(value: Any) -> Any:
    """``REDACTOR.scrub_value``: a JSON-like document fit to be written out."""
    return REDACTOR.scrub_value(value)


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
    REDACTOR.add(*secrets)
    redactor = REDACTOR
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
            # merge_contextvars: aiohttp's and azure's records carry the run id too.
            foreign_pre_chain=[structlog.contextvars.merge_contextvars, *shared],
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
