"""HTTP Basic authentication for staff on the JSON API, so operators' ``curl`` checks work.

``curl -u operator ".../api/oauth/google/start?redirect=false"`` answers like a staff browser
session would. Only ``/api/`` paths accept it, only staff accounts pass, nothing is stored in a
session, and failed attempts are rate-limited per client address. Use it over HTTPS only.
"""
from __future__ import annotations

import base64
import binascii

from django.contrib.auth import authenticate
from django.http import JsonResponse
from django_ratelimit.core import is_ratelimited

FAILED_ATTEMPTS_RATE = "10/m"


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
        if is_ratelimited(request, group="basic-auth", key="ip", rate=FAILED_ATTEMPTS_RATE,
                          increment=False):
            return _unauthorized("Too many failed logins; wait a minute.", status=429)
        try:
            username, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            username, password = "", ""
        user = authenticate(request, username=username, password=password) if username else None
        if user is None or not (user.is_active and user.is_staff):
            is_ratelimited(request, group="basic-auth", key="ip", rate=FAILED_ATTEMPTS_RATE,
                           increment=True)
            return _unauthorized("Wrong username or password, or not a staff account.")
        request.user = user
        request._dont_enforce_csrf_checks = True  # no cookie involved: nothing to forge
        return None
