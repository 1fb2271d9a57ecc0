"""Structured logging with secret redaction on every path.

Both structlog loggers and plain ``logging`` loggers (Django, Celery, the connectors' runbook lines)
go through one ``ProcessorFormatter`` whose chain ends in :func:`redact_event`, so a token that
reaches a log call by any route is masked before it is written.
"""
from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

import structlog

REDACTED = "[redacted]"

#: Event keys whose values are secrets whatever they hold. (django-structlog logs the HTTP status
#: under ``code``: that key is not a secret; ``code=`` inside a URL is, and is masked below.)
SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "client_secret",
        "id_token",
        "code_verifier",
        "authorization",
        "password",
        "token",
        "secret",
    }
)

_PATTERNS = [
    # query strings and form bodies: code=..., access_token=..., and friends
    (
        re.compile(
            r"(?i)\b(code|access_token|refresh_token|client_secret|id_token|code_verifier|token|state)"
            r"=([^&\s'\"]+)"
        ),
        rf"\1={REDACTED}",
    ),
    # JSON bodies: "refresh_token": "..."
    (
        re.compile(
            r"(?i)([\"'](?:access_token|refresh_token|client_secret|id_token|code|code_verifier)[\"']\s*:\s*)"
            r"[\"'][^\"']*[\"']"
        ),
        rf'\1"{REDACTED}"',
    ),
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]+"), f"Bearer {REDACTED}"),
    # Google's token shapes, wherever they appear
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), REDACTED),
    (re.compile(r"\b1//[A-Za-z0-9._-]+"), REDACTED),
    (re.compile(r"\bGOCSPX-[A-Za-z0-9._-]+"), REDACTED),
    # Fernet tokens (our own ciphertext is not for logs either)
    (re.compile(r"\bgAAAAA[A-Za-z0-9_=-]{20,}"), REDACTED),
]


def redact_text(text: str) -> str:
    """Mask every secret-looking fragment of ``text``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in SECRET_KEYS and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value("", v) for v in value)
    return value


def redact_event(_logger: Any, _method: str, event_dict: dict) -> dict:
    """structlog processor: mask secret keys and secret-looking text in every value."""
    return {key: _redact_value(key, value) for key, value in event_dict.items()}


def _render_message(_logger: Any, _method: str, event_dict: dict) -> dict:
    """Merge a stdlib record's %-args into its message before redaction sees it."""
    record = event_dict.get("_record")
    if record is not None and record.args:
        event_dict["event"] = record.getMessage()
    return event_dict


def configure_logging(*, level: str = "INFO", fmt: str = "console") -> None:
    """Configure structlog and stdlib logging once, for every process of the project."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "foreign_pre_chain": [_render_message, *shared],
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        redact_event,
                        renderer,
                    ],
                },
            },
            "handlers": {
                "console": {"class": "logging.StreamHandler", "formatter": "structured"},
            },
            "root": {"handlers": ["console"], "level": level},
            "loggers": {
                "django.db.backends": {"level": "INFO"},
                "django_structlog": {"level": level},
            },
        }
    )
