"""HTTP views of the OAuth app: status API, consent start and callback, the dashboard.

Views are thin: parse the request, call one service, redirect or render. Every domain failure is an
:class:`~oauth.exceptions.OAuthError` turned into a response by :func:`error_response` (the one
place that maps errors to status codes, JSON for JSON clients and the dashboard's error panel for
browsers).
"""
from __future__ import annotations

import logging
import re

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_ratelimit.core import is_ratelimited
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from . import scopes as scope_catalogue
from .app_settings import oauth_settings
from .consent import consent_complete, consent_start, new_session_binding
from .exceptions import ConsentRateLimited, ConsentStorageFailed, NotConfigured, OAuthError
from .selectors import oauth_client_get_or_none
from .status import status_json

logger = logging.getLogger("oauth.views")

#: Session key of the random value consent states are bound to.
SESSION_BINDING_KEY = "oauth_consent_binding"
_RATE_RE = re.compile(r"^\d+/\d*[smhd]?$")
#: What a cache call raises when its server is unreachable (django-redis, redis-py, a file cache).
_CACHE_ERRORS = (ConnectionInterrupted, RedisError, OSError)
_DEFAULT_RATE = "30/m"
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _is_staff(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def wants_json(request: HttpRequest) -> bool:
    """JSON for ``?format=json``, ``Accept: application/json`` and non-browsers; HTML for browsers."""
    if request.GET.get("format", "").lower() == "json":
        return True
    accept = request.headers.get("Accept", "")
    if "application/json" in accept:
        return True
    return "text/html" not in accept


def _status_for(exc: OAuthError) -> int:
    if isinstance(exc, NotConfigured):
        return 503
    if isinstance(exc, ConsentRateLimited):
        return 429
    if isinstance(exc, ConsentStorageFailed):
        return 503
    return 400


def error_response(request: HttpRequest, exc: OAuthError, *, as_json: bool = False) -> HttpResponse:
    """The response for a domain error: its code and what to do, never a secret or raw body."""
    response = _error_body(request, exc, as_json=as_json)
    if response.status_code == 429:
        # The limit counts in fixed windows of the rate's period: by then the count has reset.
        response["Retry-After"] = str(_rate_window_seconds())
    return response


def _error_body(request: HttpRequest, exc: OAuthError, *, as_json: bool) -> HttpResponse:
    status = _status_for(exc)
    if as_json or wants_json(request):
        return JsonResponse({"error": exc.error, "description": exc.description}, status=status)
    error = {"code": exc.error, "description": exc.description}
    if _is_staff(request) and not isinstance(exc, ConsentStorageFailed):
        try:
            context = _dashboard_context(error=error)
        except DatabaseError:
            logger.exception("The dashboard could not be rendered around an error panel")
        else:
            from .account_views import consent_form_allowed  # its Reconnect buttons

            return consent_form_allowed(
                render(request, "oauth/dashboard.html", context, status=status)
            )
    # A plain page: it needs no database (the database may be what just failed).
    return render(request, "oauth/error.html", {"error": error}, status=status)


def _effective_rate() -> str | None:
    rate = oauth_settings.rate_limit
    if rate is not None and not _RATE_RE.match(rate):
        logger.error("OAUTH_RATE_LIMIT=%r is not a rate like '30/m'; using %s", rate, _DEFAULT_RATE)
        rate = _DEFAULT_RATE
    return rate


def _rate_window_seconds() -> int:
    """The period of OAUTH_RATE_LIMIT in seconds ('30/m' -> 60, '5/10s' -> 10)."""
    period = (_effective_rate() or _DEFAULT_RATE).partition("/")[2]
    unit = period[-1] if period and period[-1] in _PERIOD_SECONDS else "s"
    count = period.rstrip("smhd") or "1"
    return int(count) * _PERIOD_SECONDS[unit]


def _rate_limited(request: HttpRequest, *, group: str) -> bool:
    """OAUTH_RATE_LIMIT for consent starts and callbacks, counted in the cache.

    With the cache (Redis) down the limit is skipped with a warning (fail open), on purpose: only
    staff can start a consent and a callback needs a state bound to their session, so a flood
    gains nothing, while refusing would stop every reconnect until Redis is back.
    """
    rate = _effective_rate()
    if rate is None:
        return False
    try:
        return is_ratelimited(request, group=group, key="user_or_ip", rate=rate, increment=True)
    except _CACHE_ERRORS as exc:
        logger.warning(
            "Consent rate limit skipped: the cache (REDIS_URL) is unreachable (%s)",
            type(exc).__name__,
        )
        return False


def _session_binding(request: HttpRequest, *, create: bool) -> str | None:
    value = request.session.get(SESSION_BINDING_KEY)
    if value is None and create:
        value = new_session_binding()
        request.session[SESSION_BINDING_KEY] = value
    return value


# --- status API -------------------------------------------------------------------------------
@require_GET
@never_cache
def oauth_status(request: HttpRequest) -> JsonResponse:
    """``GET /api/oauth/status``: stored state only; private fields for staff.

    With the database down it answers 503 JSON (its reason and where to look), never a 500 page.
    """
    try:
        return HttpResponse(
            status_json(include_private=_is_staff(request)), content_type="application/json"
        )
    except DatabaseError as exc:
        logger.error("Status could not read the database: %s", type(exc).__name__)
        return JsonResponse(
            {
                "error": "database_unavailable",
                "description": "The database (DATABASE_URL) is unreachable, so the stored state "
                "cannot be read. GET /api/health/ready shows which store is down.",
            },
            status=503,
        )


# --- consent ---------------------------------------------------------------------------------
@require_GET
@never_cache
def google_start(request: HttpRequest) -> HttpResponse:
    """``GET /api/oauth/google/start``: 302 to Google, or ``?redirect=false`` for the URL as JSON."""
    as_json = request.GET.get("redirect", "").lower() in ("false", "0", "no")
    if not _is_staff(request):
        if as_json or "application/json" in request.headers.get("Accept", ""):
            if request.user.is_authenticated:
                return JsonResponse(
                    {
                        "error": "forbidden",
                        "description": "Only staff users can connect Google accounts.",
                    },
                    status=403,
                )
            return JsonResponse(
                {
                    "error": "authentication_required",
                    "description": "Log in as a staff user at /admin/login/ and try again.",
                },
                status=401,
            )
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if _rate_limited(request, group="oauth.consent.start"):
        return error_response(request, ConsentRateLimited(), as_json=as_json)
    try:
        url = consent_start(
            user=request.user,
            session_binding=_session_binding(request, create=True),
            default_redirect_uri=request.build_absolute_uri(reverse("oauth:google-callback")),
        )
    except OAuthError as exc:
        return error_response(request, exc, as_json=as_json)
    if as_json:
        return JsonResponse({"authorization_url": url})
    return redirect(url)


@require_GET
@never_cache
def google_callback(request: HttpRequest) -> HttpResponse:
    """``GET /api/oauth/google/callback``: store the grant and 302 to the dashboard, or 400."""
    if _rate_limited(request, group="oauth.consent.callback"):
        return error_response(request, ConsentRateLimited())
    try:
        result = consent_complete(
            user=request.user if request.user.is_authenticated else None,
            session_binding=_session_binding(request, create=False),
            state=request.GET.get("state"),
            code=request.GET.get("code"),
            error=request.GET.get("error"),
        )
    except OAuthError as exc:
        return error_response(request, exc)
    credential = result.credential
    verb = "Connected" if result.created else "Reconnected"
    if result.missing_scopes:
        names = ", ".join(scope_catalogue.short_name(uri) for uri in result.missing_scopes)
        messages.warning(
            request,
            f"{verb} {credential.email}, but it lacks {names}: reconnect and leave every "
            "permission ticked.",
        )
    else:
        messages.success(request, f"{verb} {credential.email}: every required permission is granted.")
    return redirect("oauth:dashboard")


# --- dashboard --------------------------------------------------------------------------------
def _dashboard_context(
    *, error: dict | None = None, page: str | None = None, state: str | None = None
) -> dict:
    from .account_views import live_context  # accounts (with their actions) and action runs

    return {
        **live_context(page=page, state=state),
        "client": oauth_client_get_or_none(),
        "error": error,
        "required_scopes": scope_catalogue.normalize_scopes(oauth_settings.OAUTH_REQUIRED_SCOPES),
    }


@staff_member_required
@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    """``/``: every account, its state, scopes and remediation, and the connect button; above 100
    accounts problems first, in pages (``?page=2``), filtered by ``?state=expired``."""
    from .account_views import consent_form_allowed, listing_query  # Reconnect goes to Google

    context = _dashboard_context(**listing_query(request))
    return consent_form_allowed(render(request, "oauth/dashboard.html", context))
