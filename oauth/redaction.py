"""Secret redaction: the one place that knows what a secret looks like in text and in events.

Used by the log formatter (``butlers/logging.py``), the audit trail (``oauth.services``), error
messages built from Google's answers and the startup banner, so a token that reaches any of them
by any route is masked before it is written.
"""
from __future__ import annotations

import re
from typing import Any

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
    # this project's service keys (bk_ + 32 random bytes, url-safe)
    (re.compile(r"\bbk_[A-Za-z0-9_-]{20,}"), REDACTED),
    # Fernet tokens (our own ciphertext is not for logs either)
    (re.compile(r"\bgAAAAA[A-Za-z0-9_=-]{20,}"), REDACTED),
]


#: What every pattern above needs somewhere in the text (a superset: matched without case): text
#: without any of these has nothing to mask, and most logged values (states, keys, emails, counts)
#: are such text. One search instead of eight substitutions per value of every log line.
_MAYBE_SECRET = re.compile(r"(?i)=|[\"']|bearer|ya29\.|1//|gocspx-|bk_|gaaaaa")


def redact_text(text: str) -> str:
    """Mask every secret-looking fragment of ``text``."""
    if not _MAYBE_SECRET.search(text):
        return text
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
