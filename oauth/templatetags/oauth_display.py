"""Display helpers for the dashboard: scope short names and readable timestamps."""
from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

from .. import scopes as scope_catalogue
from ..models import CredentialState

register = template.Library()

_STATE_LABELS = {**dict(CredentialState.choices), "not_configured": "Not configured"}


@register.filter
def scope_name(uri: str) -> str:
    """``gmail.modify`` for ``https://www.googleapis.com/auth/gmail.modify``."""
    return scope_catalogue.short_name(uri)


@register.filter
def state_label(state: str) -> str:
    return _STATE_LABELS.get(state, state)


@register.filter
def when(value: str | dt.datetime | None) -> str:
    """A time (datetime or ISO string) as '2026-01-02 10:00 UTC (3 hours ago)'; 'never' when
    empty. Every time an operator sees is shown this way: absolute and relative."""
    if not value:
        return "never"
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return str(value)
    now = timezone.now()
    if abs((now - moment).total_seconds()) < 60:
        return f"{moment.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC (just now)"
    relative = (
        f"{timesince(moment, now)} ago" if moment <= now else f"in {timeuntil(moment, now)}"
    )
    return f"{moment.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC ({relative})"
