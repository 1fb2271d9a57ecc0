"""Structured logging with secret redaction on every path.

Both structlog loggers and plain ``logging`` loggers (Django, Celery, the connectors' runbook lines)
go through one ``ProcessorFormatter`` whose chain ends in :func:`redact_event`, so a token that
reaches a log call by any route is masked before it is written.
"""
from __future__ import annotations

import logging
import logging.config
from typing import Any

import structlog

from oauth.redaction import REDACTED, SECRET_KEYS, redact_event, redact_text  # noqa: F401 - re-exported


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
                # django-axes writes its bookkeeping ("Deleted 0 failed login attempts") at INFO on
                # every login; lockouts and failures are WARNING and still logged
                "axes": {"level": "WARNING" if level in ("DEBUG", "INFO") else level},
            },
        }
    )
