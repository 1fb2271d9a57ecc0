"""HTTP Basic authentication for staff on the JSON API, so operators' ``curl`` checks work.

``curl -u operator ".../api/oauth/google/start?redirect=false"`` answers like a staff browser
session would. Only ``/api/`` paths accept it, only staff accounts pass, nothing is stored in a
session. Use it over HTTPS only.

Wrong passwords are counted by django-axes through ``authenticate(request, ...)``, exactly like the
admin login form: one policy (``AXES_*`` in settings: 10 failures for one username from one
address, then 15 minutes refused) and one lockout shared by both doors. It is kept in the
database, so it needs no cache: with Redis down, Basic logins still work and are still limited.
"""
from __future__ import annotations

import base64
import binascii
import logging
import math

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

logger = logging.getLogger("butlers.auth")


def client_address(request: HttpRequest) -> str | None:
    """The address lockouts are keyed on: the TCP peer, never a header a client could write."""
    return request.META.get("REMOTE_ADDR")


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' lockout answer (AXES_LOCKOUT_CALLABLE): 429, when to retry, Retry-After.

    Every failure during a lockout restarts the cool-off, so it ends AXES_COOLOFF_TIME from now.
    """
    cool_off = settings.AXES_COOLOFF_TIME
    retry_at = timezone.now() + cool_off
    minutes = max(1, math.ceil(cool_off.total_seconds() / 60))
    description = (
        "Too many failed logins for this username from this address. Try again after "
        f"{retry_at:%Y-%m-%d %H:%M} UTC (in {minutes} minutes); every further attempt before "
        "then restarts the wait. An administrator can lift it with "
        "'manage.py axes_reset_username <username>'."
    )
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": "locked_out", "description": description}, status=429)
    else:
        response = render(
            request, "registration/locked_out.html", {"description": description}, status=429
        )
    response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response


class AnonymousWhenDatabaseDownMiddleware:
    """Load the session's user now; with the database down, carry on as an anonymous user.

    Later middleware (the request logger binds the user id) would otherwise hit the database
    outside any view and answer a bare 500. This way each view decides: the probes report the
    outage per check, the status API answers 503 JSON, staff pages send to the login page.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            request.user.pk  # noqa: B018 - forces the lazy session and user lookup
        except DatabaseError as exc:
            logger.error("The session's user could not be loaded (%s): treated as anonymous",
                         type(exc).__name__)
            request.user = AnonymousUser()
        return self.get_response(request)


def _unauthorized(description: str, status: int = 401) -> JsonResponse:
    response = JsonResponse({"error": "invalid_credentials", "description": description}, status=status)
    response["WWW-Authenticate"] = 'Basic realm="butlers-oauth", charset="UTF-8"'
    return response


class StaffBasicAuthMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        header = request.headers.get("Authorization", "")
        if request.path.startswith("/api/") and header[:6].lower() == "basic ":
            failure = self._authenticate(request, header[6:].strip())
            if failure is not None:
                return failure
        return self.get_response(request)

    def _authenticate(self, request, encoded: str):
        try:
            username, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            username, password = "", ""
        # django-axes counts a failure here and refuses a locked-out username/address pair
        # (authenticate then returns None and marks the request).
        user = authenticate(request, username=username, password=password) if username else None
        if getattr(request, "axes_locked_out", False):
            return lockout_response(request)
        if user is None or not (user.is_active and user.is_staff):
            return _unauthorized("Wrong username or password, or not a staff account.")
        request.user = user
        request._dont_enforce_csrf_checks = True  # no cookie involved: nothing to forge
        return None
