"""What every strategy of the token service shares: the token type, time, margin and retries."""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from django.utils import timezone

from ..app_settings import oauth_settings
from ..exceptions import TransientGoogleError
from ..google import transport

logger = structlog.get_logger("oauth.tokens")

#: Longest wait honoured from Google's Retry-After between two attempts of one call.
MAX_RETRY_AFTER = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class AccessToken:
    """A bearer token for Google APIs. ``value`` is plaintext: pass it to Google, never log it."""

    value: str = field(repr=False)
    expires_at: dt.datetime
    account: str  # email, else credential_key, else "env:<VAR>"
    credential_key: str | None

    def expires_in(self, *, now: dt.datetime | None = None) -> int:
        return int((self.expires_at - (now or now_())).total_seconds())


def now_() -> dt.datetime:
    """Separate so tests can move time."""
    return timezone.now()


def margin() -> dt.timedelta:
    """How long before expiry a token counts as stale (OAUTH_ACCESS_TOKEN_MARGIN)."""
    return dt.timedelta(seconds=float(oauth_settings.OAUTH_ACCESS_TOKEN_MARGIN))


def duration_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def with_retries(attempt: Callable[[bool], T], *, what: str, credential_key: str | None) -> T:
    """Call ``attempt(final)`` until it returns, retrying a :class:`TransientGoogleError` with
    exponential backoff and jitter (or what Google's Retry-After asks, bounded) at most
    OAUTH_REFRESH_RETRIES times. ``final`` tells the last attempt, whose failure is counted
    against the grant. Every other error passes through at once."""
    retries = max(0, int(oauth_settings.OAUTH_REFRESH_RETRIES))
    for number in range(retries + 1):
        final = number == retries
        try:
            return attempt(final)
        except TransientGoogleError as exc:
            if final:
                raise
            delay = transport.backoff(
                number + 1, base=float(oauth_settings.OAUTH_REFRESH_BACKOFF),
                cap=MAX_RETRY_AFTER, asked=exc.retry_after,
            )
            logger.warning(
                f"{what} attempt failed, retrying", credential_key=credential_key,
                reason=exc.error, attempt=number + 1, retry_in_s=round(delay, 2),
            )
            time.sleep(delay)  # no lock is held here: each attempt takes and releases its own
    raise AssertionError("unreachable")
