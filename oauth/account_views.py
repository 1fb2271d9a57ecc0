"""The dashboard's per-account actions and its live region.

* ``POST /accounts/<id>/refresh`` and ``/test``: queued as a background run (a Celery worker does
  the Google calls), then back to the dashboard, where the run's progress shows and updates.
* ``GET /accounts/<id>/disconnect``: a page saying exactly what will happen; ``POST`` does it
  (revoke at Google, then delete here, audited).
* ``POST /accounts/<id>/reconnect``: a consent with ``login_hint`` = that account, so Google
  preselects it.
* ``GET /accounts/live``: the runs and account cards as an HTML fragment, polled by
  ``oauth/static/oauth/live.js`` (faster while a run is in progress).

Staff only; every change is a POST with the CSRF token.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .account_actions import CONSEQUENCES, action_run_start, action_runs_recent
from .app_settings import oauth_settings
from .consent import consent_start
from .exceptions import ConsentRateLimited, OAuthError
from .models import ActionKind, CredentialState, GoogleCredential
from .services import actor_for_user
from .status import status_payload

#: Milliseconds between refreshes of the live region: while a run is in progress, and otherwise.
POLL_FAST_MS = 1000
POLL_SLOW_MS = 5000


def consent_form_allowed(response: HttpResponse) -> HttpResponse:
    """Let this page's Reconnect forms (POST, then 302 to Google's consent page) leave the site.

    The Content-Security-Policy's ``form-action 'self'`` also covers where a form submission is
    redirected, so a page with a Reconnect button adds the origin of GOOGLE_OAUTH_AUTH_URI (only
    that origin, only on these pages).
    """
    parts = urlsplit(oauth_settings.GOOGLE_OAUTH_AUTH_URI)
    response._csp_update = {"form-action": [f"{parts.scheme}://{parts.netloc}"]}
    return response


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + ("." if dot or not head.endswith(".") else "")


def _problem(account: dict) -> dict | None:
    """One block per problem: what happened (Google's code and first sentence, when) and what to
    do (the remediation), never the same sentence twice."""
    code = account.get("last_error_code") or ""
    detail = account.get("last_error_detail") or ""
    remediation = account.get("remediation") or ""
    if not code and not remediation:
        return None
    return {
        "code": code if code != "revoked" else "",
        "what": _first_sentence(detail) if detail else "",
        "at": account.get("last_error_at"),
        "remediation": remediation,
        # an error the grant recovers from on its own (a transient failure below the threshold)
        "transient": account["state"] == CredentialState.CONNECTED,
    }


def live_context() -> dict:
    """Accounts (as the status API sees them, with their row id for the action URLs) and the
    latest action runs."""
    payload = status_payload(include_private=True)
    ids = dict(GoogleCredential.objects.values_list("credential_key", "pk"))
    accounts = []
    for account in payload["accounts"]:
        accounts.append(
            {
                **account,
                "pk": ids.get(account["credential_key"]),
                "dead": account["state"] == CredentialState.EXPIRED,
                "problem": _problem(account),
            }
        )
    runs = action_runs_recent()
    busy = any(not run.is_finished for run in runs)
    return {
        "status": payload,
        "accounts": accounts,
        "runs": runs,
        "poll_ms": POLL_FAST_MS if busy else POLL_SLOW_MS,
    }


@require_GET
@never_cache
@staff_member_required
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """``GET /accounts/live``: the live region of the dashboard (runs and cards) alone."""
    return render(request, "oauth/_live.html", live_context())


def _start(request: HttpRequest, *, pk: int, action: str) -> HttpResponse:
    credential = get_object_or_404(GoogleCredential, pk=pk)
    run = action_run_start(
        action=action, credentials=[credential], actor=actor_for_user(request.user)
    )
    messages.info(
        request,
        f"{ActionKind(action).label} queued for {credential}: its progress shows below.",
    )
    return redirect(f"{reverse('oauth:dashboard')}#run-{run.pk}")


@require_POST
@staff_member_required
def account_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    return _start(request, pk=pk, action=ActionKind.REFRESH)


@require_POST
@staff_member_required
def account_test(request: HttpRequest, pk: int) -> HttpResponse:
    return _start(request, pk=pk, action=ActionKind.TEST)


def confirmation_context(*, action: str, credentials: list[GoogleCredential]) -> dict:
    """What the confirmation pages (dashboard and admin) say before a destructive action."""
    kind = ActionKind(action)
    return {"action": kind, "label": kind.label, "consequence": CONSEQUENCES[kind],
            "credentials": credentials}


def _confirmed(request: HttpRequest, *, pk: int, action: str) -> HttpResponse:
    credential = get_object_or_404(GoogleCredential, pk=pk)
    if request.method == "POST":
        return _start(request, pk=pk, action=action)
    context = confirmation_context(action=action, credentials=[credential])
    return render(request, "oauth/confirm.html", context)


@require_http_methods(["GET", "POST"])
@never_cache
@staff_member_required
def account_disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirmed(request, pk=pk, action=ActionKind.DISCONNECT)


@require_http_methods(["GET", "POST"])
@never_cache
@staff_member_required
def account_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirmed(request, pk=pk, action=ActionKind.REVOKE)


@require_POST
@never_cache
@staff_member_required
def account_reconnect(request: HttpRequest, pk: int) -> HttpResponse:
    """A consent for this account: Google preselects it (``login_hint``)."""
    from .views import _rate_limited, _session_binding, error_response

    credential = get_object_or_404(GoogleCredential, pk=pk)
    if _rate_limited(request, group="oauth.consent.start"):
        return error_response(request, ConsentRateLimited())
    try:
        url = consent_start(
            user=request.user,
            session_binding=_session_binding(request, create=True),
            default_redirect_uri=request.build_absolute_uri(reverse("oauth:google-callback")),
            login_hint=credential.email or None,
        )
    except OAuthError as exc:
        return error_response(request, exc)
    return redirect(url)
