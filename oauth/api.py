"""The token API for services elsewhere: ``POST /api/oauth/token``, ``GET /api/oauth/accounts``,
and the OpenAPI document of ``/api/`` at ``GET /api/schema``.

A service authenticates with a service key (``Authorization: Bearer bk_…``, see
:mod:`oauth.service_keys`). Every call is rate-limited per key (SERVICE_KEY_RATE_LIMIT; calls without
a valid key per client address), audited (key name, account, outcome; never a key or a token) and
counted in ``/metrics`` by key and outcome. Every failure is an :class:`~oauth.exceptions.OAuthError`
turned into ``{"error", "description"[, "remediation"]}`` by :func:`_error_response`, the one
place that maps errors to statuses. Responses are never cached (``Cache-Control: no-store``).
"""
from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from django_ratelimit.core import get_usage

from . import metrics
from .app_settings import oauth_settings
from .exceptions import (
    ClientMisconfigured,
    OAuthError,
    ReconsentRequired,
    ServiceKeyInvalid,
    TokenApiError,
    TokenApiRateLimited,
    TransientGoogleError,
)
from .models import AuditAction, CredentialState, GoogleCredential, ServiceKey
from .selectors import oauth_client_get_or_none
from .service_keys import (
    scope_forbidden,
    service_key_accounts,
    service_key_actor,
    service_key_authenticate,
    service_key_credential,
)
from .services import audit_record
from .status import credential_state, remediation
from .tokens import access_token_get

logger = logging.getLogger("oauth.api")

SCHEMA_PATH = Path(__file__).with_name("openapi.json")
#: Seconds a caller is asked to wait after a transient Google failure (the token service has
#: already retried with backoff inside the call).
TRANSIENT_RETRY_AFTER = 10
_RATE_RE = re.compile(r"^\d+/\d*[smhd]?$")
_DEFAULT_RATE = "600/m"
#: error class -> (status, error code) for the token service's own errors.
_TOKEN_SERVICE_ERRORS: dict[type[OAuthError], tuple[int, str]] = {
    ReconsentRequired: (409, "reconsent_required"),
    ClientMisconfigured: (409, "misconfigured"),
    TransientGoogleError: (503, "temporarily_unavailable"),
}


# --- plumbing: rate limit, errors, audit, metrics -------------------------------------------------
def _rate() -> str | None:
    rate = str(oauth_settings.SERVICE_KEY_RATE_LIMIT).strip()
    if rate in ("", "0"):
        return None
    if not _RATE_RE.match(rate):
        logger.error("SERVICE_KEY_RATE_LIMIT=%r is not a rate like '600/m'; using %s", rate, _DEFAULT_RATE)
        return _DEFAULT_RATE
    return rate


def _limit(request: HttpRequest, *, group: str, key, increment: bool = True) -> None:
    """Raise :class:`TokenApiRateLimited` (with the seconds left) when ``key`` is over the rate.

    With the cache (Redis) down the limit is skipped with a warning (fail open), as for consent:
    every call still needs a valid key, and refusing would stop every butler until Redis is back.
    """
    rate = _rate()
    if rate is None:
        return
    try:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=increment)
    except Exception as exc:  # noqa: BLE001 - any cache failure: no limit this call
        logger.warning("Token API rate limit skipped: the cache is unreachable (%s)", type(exc).__name__)
        return
    if usage is not None and usage["should_limit"]:
        error = TokenApiRateLimited()
        error.retry_after = max(1, int(usage["time_left"]))
        raise error


def _address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


def _authenticate(request: HttpRequest) -> ServiceKey:
    """The calling key; calls without a valid key are rate-limited per client address."""
    _limit(request, group="oauth.token-api.invalid-key", key="ip", increment=False)
    try:
        key = service_key_authenticate(
            authorization=request.headers.get("Authorization", ""), address=_address(request)
        )
    except ServiceKeyInvalid:
        _limit(request, group="oauth.token-api.invalid-key", key="ip", increment=True)
        raise
    _limit(request, group="oauth.token-api", key=lambda _group, _request: f"service-key:{key.pk}")
    return key


def _error_payload(exc: OAuthError, credential: GoogleCredential | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers: dict[str, str] = {}
    for cls, (status, code) in _TOKEN_SERVICE_ERRORS.items():
        if isinstance(exc, cls):
            break
    else:
        status = getattr(exc, "status_code", 503)
        code = exc.error
    body: dict[str, Any] = {"error": code, "description": exc.description}
    if isinstance(exc, (ReconsentRequired, ClientMisconfigured)) and credential is not None:
        fresh = GoogleCredential.objects.prefetch_related("granted_scopes").get(pk=credential.pk)
        state = credential_state(fresh, client=oauth_client_get_or_none())
        if state == CredentialState.CONNECTED:  # revoked at this instant: say what revoked means
            state = CredentialState.EXPIRED if isinstance(exc, ReconsentRequired) else CredentialState.MISCONFIGURED
        body["remediation"] = remediation(fresh, state=state, missing=fresh.missing_scopes())
    if isinstance(exc, TransientGoogleError):
        headers["Retry-After"] = str(TRANSIENT_RETRY_AFTER)
    if isinstance(exc, TokenApiRateLimited):
        headers["Retry-After"] = str(getattr(exc, "retry_after", 60))
    if isinstance(exc, ServiceKeyInvalid):
        headers["WWW-Authenticate"] = 'Bearer realm="butlers-oauth"'
    return status, body, headers


def _json(payload: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(payload, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    response["Pragma"] = "no-cache"
    return response


def _record(
    request: HttpRequest, *, endpoint: str, key: ServiceKey | None, credential: GoogleCredential | None,
    outcome: str, status: int, account: str | None = None,
) -> None:
    """Audit and count one call: key name, account, outcome; never a key or a token."""
    metrics.TOKEN_API_CALLS.labels(key.name if key else "unknown", endpoint, outcome).inc()
    detail: dict[str, Any] = {"endpoint": endpoint, "status": status, "address": _address(request)}
    if credential is None and account:
        detail["requested_account"] = str(account)[:254]
    try:
        audit_record(
            action=AuditAction.TOKEN_API,
            actor=service_key_actor(key) if key else "service-key:unknown",
            credential=credential,
            outcome=outcome,
            detail=detail,
        )
    except Exception as exc:  # noqa: BLE001 - the audit's failure is logged, the answer stands
        logger.error("Could not audit a token API call (%s)", type(exc).__name__)


def _database_unavailable(request: HttpRequest, *, endpoint: str, exc: DatabaseError) -> JsonResponse:
    """PostgreSQL is down: say so (503), never a 500. Nothing can be checked or audited."""
    logger.error("Token API call answered 503: the database is unreachable (%s)", type(exc).__name__)
    metrics.TOKEN_API_CALLS.labels("unknown", endpoint, "database_unavailable").inc()
    return _json(
        {
            "error": "database_unavailable",
            "description": "The database is unreachable, so the key cannot be checked; try again "
            "later. Operators: see GET /api/health/ready.",
        },
        status=503,
        headers={"Retry-After": str(TRANSIENT_RETRY_AFTER)},
    )


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise TokenApiError() from None
    if not isinstance(body, dict):
        raise TokenApiError()
    account = body.get("account")
    if account is not None and (not isinstance(account, str) or len(account) > 320):
        raise TokenApiError(
            "'account' must be an account's email address (a string), or left out for the "
            "primary account."
        )
    if not isinstance(body.get("force_refresh", False), bool):
        raise TokenApiError("'force_refresh' must be true or false (true only after Google refused a token).")
    return body


# --- views ----------------------------------------------------------------------------------------
@csrf_exempt
@require_POST
@never_cache
def token(request: HttpRequest) -> HttpResponse:
    """``POST /api/oauth/token``: a fresh access token for an account the key may use."""
    key = credential = None
    account = None
    try:
        key = _authenticate(request)
        body = _body(request)
        account = (body.get("account") or "").strip() or None
        chosen = service_key_credential(key=key, account=account)
        credential = chosen.credential
        if chosen.lacking_scopes:
            raise scope_forbidden(key, credential, chosen.lacking_scopes)
        # force_refresh: Google refused the token the caller has (401). The token service refreshes
        # once however many callers ask at once, and the key's rate limit bounds how often.
        access = access_token_get(
            account=credential.email or credential.credential_key, actor=service_key_actor(key),
            force_refresh=bool(body.get("force_refresh")),
        )
    except OAuthError as exc:
        try:
            status, body, headers = _error_payload(exc, credential)
        except DatabaseError as db_exc:
            return _database_unavailable(request, endpoint="token", exc=db_exc)
        _record(request, endpoint="token", key=key, credential=credential, outcome=body["error"],
                status=status, account=account)
        return _json(body, status=status, headers=headers)
    except DatabaseError as exc:
        return _database_unavailable(request, endpoint="token", exc=exc)
    _record(request, endpoint="token", key=key, credential=credential, outcome="issued", status=200)
    return _json(
        {
            "access_token": access.value,
            "token_type": "Bearer",
            "expires_at": access.expires_at.isoformat(),
            "expires_in": max(0, access.expires_in()),
            "account": credential.email or credential.credential_key,
            "scopes": sorted(credential.granted_scope_list()),
        }
    )


@require_GET
@never_cache
def accounts(request: HttpRequest) -> HttpResponse:
    """``GET /api/oauth/accounts``: the accounts the key may use, with state and scopes."""
    key = None
    try:
        key = _authenticate(request)
        entries = service_key_accounts(key=key)
        client = oauth_client_get_or_none()
    except OAuthError as exc:
        status, body, headers = _error_payload(exc, None)
        _record(request, endpoint="accounts", key=key, credential=None, outcome=body["error"], status=status)
        return _json(body, status=status, headers=headers)
    except DatabaseError as exc:
        return _database_unavailable(request, endpoint="accounts", exc=exc)
    payload = []
    for entry in entries:
        credential = entry.credential
        state = credential_state(credential, client=client)
        item: dict[str, Any] = {
            "account": credential.email or credential.credential_key,
            "primary": credential.is_primary,
            "state": state,
            "scopes": credential.granted_scope_uris(),
            "lacking_scopes": entry.lacking_scopes,
            "token_available": not entry.lacking_scopes
            and state not in (CredentialState.EXPIRED, CredentialState.MISCONFIGURED),
        }
        if state != CredentialState.CONNECTED:
            item["remediation"] = remediation(credential, state=state, missing=credential.missing_scopes())
        payload.append(item)
    _record(request, endpoint="accounts", key=key, credential=None, outcome="listed", status=200)
    return _json({"accounts": payload})


@functools.cache
def _schema_bytes() -> bytes:
    return SCHEMA_PATH.read_bytes()


@require_GET
def schema(request: HttpRequest) -> HttpResponse:
    """``GET /api/schema``: the OpenAPI 3.1 document of ``/api/`` (kept in oauth/openapi.json)."""
    return HttpResponse(_schema_bytes(), content_type="application/json")
