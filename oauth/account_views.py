"""The dashboard's per-account actions and its live region.

* ``POST /accounts/<id>/refresh`` and ``/test``: queued as a background run (a Celery worker does
  the Google calls), then back to the dashboard, where the run's progress shows and updates.
* ``GET /accounts/<id>/disconnect``: a page saying exactly what will happen; ``POST`` does it
  (revoke at Google, then delete here, audited).
* ``POST /accounts/<id>/reconnect``: a consent with ``login_hint`` = that account, so Google
  preselects it.
* ``GET /accounts/live``: the runs and account cards as an HTML fragment, polled by
  ``oauth/static/oauth/live.js`` (faster while a run is in progress), for the same page and state
  filter as the dashboard it is polled from.

Above :data:`PAGE_SIZE` accounts the cards are grouped and paged: problems first (by
:data:`SEVERITY`), a line of counts per state, each a link to that state alone (``?state=expired``),
and pages of :data:`PAGE_SIZE` (``?page=2``). Only the page shown is loaded and becomes cards: the
rest is counted and ordered from :func:`~oauth.selectors.credential_standings`.

Staff only; every change is a POST with the CSRF token.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .account_actions import CONSEQUENCES, action_run_start, action_runs_recent
from .app_settings import oauth_settings
from .consent import consent_start
from .exceptions import ConsentRateLimited, OAuthError
from .models import ActionKind, CredentialState, GoogleCredential
from .selectors import CredentialStanding, credential_standings
from .services import actor_for_user
from .status import account_payload  # the status API's account entry: one wording for both

#: Milliseconds between refreshes of the live region: while a run is in progress, and otherwise.
POLL_FAST_MS = 1000
POLL_SLOW_MS = 5000
#: Up to this many accounts the dashboard shows them all, the primary first; above it, problems
#: first in pages of this many.
PAGE_SIZE = 100
#: The order problems are listed in above PAGE_SIZE accounts: what only a person can fix (the
#: client, a consent) first, then what retries may fix; connected accounts last, those with an
#: error the grant recovers from before the healthy ones.
SEVERITY = (
    CredentialState.MISCONFIGURED,
    CredentialState.REDIRECT_URI_MISMATCH,
    CredentialState.EXPIRED,
    CredentialState.MISSING_SCOPE,
    CredentialState.REFRESH_FAILING,
    CredentialState.CONNECTED,
)
_RANK = {state.value: rank for rank, state in enumerate(SEVERITY)}


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


@dataclass
class AccountListing:
    """Which accounts the dashboard shows and the line that says so (``oauth/_listing.html``).

    ``grouped`` above PAGE_SIZE accounts or with a state filter: then the counts per state, the
    range shown and the links to the other pages are on the page.
    """

    total: int
    grouped: bool
    state: str = ""
    counts: list[dict] = field(default_factory=list)
    notice: str = ""
    first: int = 0
    last: int = 0
    of: int = 0
    previous_url: str = ""
    next_url: str = ""
    all_url: str = ""
    #: ``/accounts/live`` with this page and filter, for live.js to poll.
    live_url: str = ""

    @property
    def state_label(self) -> str:
        return _lower_label(self.state) if self.state else ""


def _lower_label(state: str) -> str:
    label = CredentialState(state).label if state in CredentialState.values else state
    return label[:1].lower() + label[1:]


def _dashboard_url(*, state: str = "", page: int = 1, base: str = "oauth:dashboard") -> str:
    query = urlencode({k: v for k, v in (("state", state), ("page", page)) if v and v != 1})
    return reverse(base) + (f"?{query}" if query else "")


def _page_number(raw: str | None) -> int:
    """``?page=`` as a page number: anything but a positive integer is the first page."""
    try:
        return max(1, int(raw or 1))
    except ValueError:
        return 1


def _severity(standing: CredentialStanding) -> tuple[int, bool]:
    healthy = standing.state == CredentialState.CONNECTED and not standing.last_error_code
    return _RANK.get(standing.state, -1), healthy  # an unknown state is a problem: first


def account_listing(
    standings: list[CredentialStanding], *, page: str | None = None, state: str | None = None
) -> tuple[AccountListing, list[CredentialStanding]]:
    """The page of ``standings`` to show (``?page=``, ``?state=``) and what the page says of it.

    Up to PAGE_SIZE accounts and no filter: all of them, the primary first, as ever. Above it, or
    filtered: problems first, in pages of PAGE_SIZE. A page number out of range shows the nearest
    page; an unknown state shows every account with a notice saying so.
    """
    counts = Counter(standing.state for standing in standings)
    listing = AccountListing(total=len(standings), grouped=len(standings) > PAGE_SIZE)
    asked = state = (state or "").strip()[:40]
    if state and state not in CredentialState.values:
        listing.notice = (
            f"There is no account state '{state}' (the states are "
            f"{', '.join(CredentialState.values)}): showing every account."
        )
        state = ""
    if state:
        listing.grouped, listing.state = True, state
        standings = [standing for standing in standings if standing.state == state]
        if not standings:
            listing.notice = f"No account is in the state '{_lower_label(state)}' now."
    if listing.grouped:
        standings = sorted(standings, key=_severity)  # stable: the primary first within each
    paginator = Paginator(standings, PAGE_SIZE)
    shown = paginator.page(min(_page_number(page), paginator.num_pages))
    # polled with what was asked, so the page keeps its notice too
    listing.live_url = _dashboard_url(state=asked, page=shown.number, base="oauth:dashboard-live")
    if listing.grouped:
        listing.counts = [
            {"state": name, "label": _lower_label(name), "count": counts[name],
             "url": _dashboard_url(state=name), "current": name == state}
            for name in sorted(counts, key=_summary_order)
        ]
        listing.first, listing.last = shown.start_index(), shown.end_index()
        listing.of = paginator.count
        if shown.has_previous():
            listing.previous_url = _dashboard_url(state=state, page=shown.previous_page_number())
        if shown.has_next():
            listing.next_url = _dashboard_url(state=state, page=shown.next_page_number())
        listing.all_url = _dashboard_url()
    return listing, list(shown.object_list)


def _summary_order(state: str) -> tuple[bool, int]:
    return state != CredentialState.CONNECTED, _RANK.get(state, -1)  # connected, then problems


def _cards(standings: list[CredentialStanding]) -> list[dict]:
    """The accounts of ``standings`` as cards: their rows in one query, each worded as the status
    API words it, with its row id for the action URLs and its problem block."""
    now = timezone.now()
    rows = GoogleCredential.objects.filter(pk__in=[s.pk for s in standings])
    if not all(s.scopes_recorded for s in standings):
        rows = rows.prefetch_related("granted_scopes")  # one query, not one per such row
    credentials = {credential.pk: credential for credential in rows}
    cards = []
    for standing in standings:
        credential = credentials.get(standing.pk)
        if credential is None:
            continue  # deleted since it was counted
        account = account_payload(credential, state=standing.state, include_private=True, now=now)
        cards.append(
            {
                **account,
                "pk": credential.pk,
                "dead": standing.state == CredentialState.EXPIRED,
                "problem": _problem(account),
            }
        )
    return cards


def live_context(*, page: str | None = None, state: str | None = None) -> dict:
    """The live region: the accounts of this page and filter as cards (the status API's wording,
    with their row id for the action URLs), what the listing says of them, and the latest action
    runs. Constant queries whatever the number of accounts."""
    listing, shown = account_listing(credential_standings(), page=page, state=state)
    runs = action_runs_recent()
    busy = any(not run.is_finished for run in runs)
    return {
        "accounts": _cards(shown),
        "listing": listing,
        "runs": runs,
        "poll_ms": POLL_FAST_MS if busy else POLL_SLOW_MS,
    }


def listing_query(request: HttpRequest) -> dict:
    """The page and state filter a dashboard request asks for (``?page=2&state=expired``)."""
    return {"page": request.GET.get("page"), "state": request.GET.get("state")}


@require_GET
@never_cache
@staff_member_required
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """``GET /accounts/live``: the live region of the dashboard (runs and cards) alone."""
    return render(request, "oauth/_live.html", live_context(**listing_query(request)))


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
