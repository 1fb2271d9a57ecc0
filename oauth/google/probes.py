"""Cheap API calls that prove a grant's scopes still work (the heartbeat and the admin's "Test").

One call per granted product (:data:`oauth.scopes.PRODUCT_SCOPES`), the cheapest Google offers:
Calendar ``calendarList`` with ``maxResults=1`` and Gmail ``users/me/profile``. No retries here: a
heartbeat that cannot probe now probes again at the next sweep. The token is given (the heartbeat
just refreshed it), so a probe never triggers a refresh of its own.
"""
from __future__ import annotations

import requests

from .. import metrics
from ..app_settings import oauth_settings
from ..scopes import products_granted
from . import transport

#: product -> (path, query) of its cheapest call
PROBES: dict[str, tuple[str, dict]] = {
    "calendar": ("/calendar/v3/users/me/calendarList", {"maxResults": "1"}),
    "gmail": ("/gmail/v1/users/me/profile", {}),
}

OK = "ok"
MISSING_SCOPE = "missing_scope"  # 403: the token lacks the scope (or the API is disabled)
UNAUTHORIZED = "unauthorized"  # 401: the token itself was refused
ERROR = "error"  # 5xx, 429, timeouts: says nothing about the grant


def _outcome(status: int) -> str:
    if 200 <= status < 300:
        return OK
    if status == 403:
        return MISSING_SCOPE
    if status == 401:
        return UNAUTHORIZED
    return ERROR


def credential_probe(*, granted: list[str], access_token: str) -> dict[str, str]:
    """Touch each product the ``granted`` scopes open; ``{"calendar": "ok", "gmail": "missing_scope"}``.

    A product whose scope was never granted is not called (and not in the result).
    """
    base = oauth_settings.GOOGLE_API_BASE_URL
    results: dict[str, str] = {}
    for product in products_granted(granted):
        path, params = PROBES[product]
        try:
            response = transport.send(
                "GET", base + path, params=params,
                headers={"Authorization": f"Bearer {access_token}"},
            )
            results[product] = _outcome(response.status_code)
        except requests.RequestException:
            results[product] = ERROR
        metrics.PROBES.labels(product, results[product]).inc()
    return results
