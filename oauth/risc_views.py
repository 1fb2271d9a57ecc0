"""``POST /api/oauth/google/risc``: Google's security event tokens (RFC 8935 push delivery).

Thin: read the body, hand it to :func:`oauth.risc.security_event_receive`, answer 202 when the
event was accepted, or 400 ``{"err": ..., "description": ...}`` (RFC 8935's error shape) saying why
it was refused; nothing is changed by a refused token. 503 when Google's keys cannot be read (Google
retries the delivery).
"""
from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .exceptions import SecurityEventRejected, SecurityEventUnavailable
from .risc import security_event_receive

logger = logging.getLogger("oauth.risc")

#: A security event token is a few hundred bytes; anything far larger is not one.
MAX_BODY = 16 * 1024
_CONTENT_TYPES = ("application/secevent+jwt", "application/jwt", "text/plain", "")


def _refused(err: str, description: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"err": err, "description": description}, status=status)


@csrf_exempt  # called by Google, not a browser: the signed token is the authentication
@require_POST
@never_cache
def risc_receiver(request: HttpRequest) -> HttpResponse:
    content_type = (request.content_type or "").lower()
    if content_type not in _CONTENT_TYPES:
        return _refused("invalid_request", "Send the security event token as "
                        "'Content-Type: application/secevent+jwt'.")
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        return _refused("invalid_request", f"The body is larger than {MAX_BODY} bytes.")
    try:
        token = request.body.decode("ascii").strip()
    except UnicodeDecodeError:
        return _refused("invalid_request", "malformed: the body is not a JWT (non-ASCII bytes).")
    if not token:
        return _refused("invalid_request", "malformed: the body is empty.")
    try:
        security_event_receive(token=token)
    except SecurityEventRejected as exc:
        return _refused(exc.error, exc.description)
    except SecurityEventUnavailable as exc:
        response = _refused(exc.error, exc.description, status=503)
        response["Retry-After"] = "60"
        return response
    except DatabaseError as exc:
        logger.error("A security event could not be stored: %s", type(exc).__name__)
        response = _refused("temporarily_unavailable", "The database is unreachable; the event "
                            "was not applied (Google retries it).", status=503)
        response["Retry-After"] = "60"
        return response
    return HttpResponse(status=202)
