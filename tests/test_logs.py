"""Logging: redaction of secrets, JSON lines, the standard library routed the same way."""

from __future__ import annotations

import io
import logging

import orjson
import structlog

from sar_bulk.logs import REDACTED, SecretRedactor, configure_logging

TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.CANARY-payload.signature"


def test_redactor_blanks_secret_keys_bearer_values_and_known_secrets() -> None:
    redact = SecretRedactor(["hunter2-secret-value", "short"])
    event = redact(
        None,
        "info",
        {
            "event": "request",
            "token": TOKEN,
            "Authorization": f"Bearer {TOKEN}",
            "client_secret": "x",
            "note": f"sent Bearer {TOKEN} and hunter2-secret-value",
            "nested": {"headers": {"authorization": "Bearer abc"}, "ok": "short is fine"},
            "items": [f"bearer {TOKEN}"],
        },
    )
    assert event["token"] == REDACTED
    assert event["Authorization"] == REDACTED
    assert event["client_secret"] == REDACTED
    assert event["note"] == f"sent Bearer {REDACTED} and {REDACTED}"
    assert event["nested"] == {"headers": {"authorization": REDACTED}, "ok": "short is fine"}
    assert event["items"] == [f"bearer {REDACTED}"]
    assert event["event"] == "request"


def test_json_lines_carry_no_secret_from_structlog_or_the_standard_library() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", level="debug", secrets=[TOKEN], stream=out)
    try:
        structlog.get_logger("t").info("calling", detail=f"token {TOKEN}", contact="c-1")
        logging.getLogger("azure.identity").warning("get_token failed: Bearer %s", TOKEN)
        lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    assert len(lines) == 2
    assert lines[0]["event"] == "calling"
    assert lines[0]["contact"] == "c-1"
    assert lines[1]["level"] == "warning"
    assert "CANARY" not in out.getvalue()


def test_level_filters_debug_events() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=out)
    try:
        structlog.get_logger("t").info("hidden")
        structlog.get_logger("t").warning("shown")
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    assert [orjson.loads(x)["event"] for x in out.getvalue().splitlines()] == ["shown"]
