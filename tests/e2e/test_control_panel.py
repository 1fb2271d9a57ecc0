"""The dashboard and the admin as an operator's control panel, in a real browser (Debian's
Chromium through Playwright): every action from the dashboard and the admin (with its
confirmation), the progress of a background action on 20 accounts while Google is slow (a real
Celery worker), a card that updates itself after a change made elsewhere, dark mode and a phone.

Screenshots land in var/screenshots/ (dashboard light, dark and phone; the admin list).
Every page is also watched for Content-Security-Policy violations.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from django.test import Client
from playwright.sync_api import expect

from butlers.celery import app as celery_app
from oauth.models import ActionRun, AuditEvent, GoogleCredential
from tests.e2e.test_browser import browser_type_launch_args  # noqa: F401 (Debian's Chromium)
from tests.factories import ROOT

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ROOT / "var" / "screenshots"
ALICE = "alice@example.com"
#: Neither the page nor the admin's list (which scrolls inside its own box) is wider than the window.
FITS = (
    "document.documentElement.scrollWidth <= window.innerWidth && "
    "[...document.querySelectorAll('.results')].every(e => e.scrollWidth <= e.clientWidth)"
)
#: Long enough for a slow grid of checks, short enough to fail a broken page quickly.
WAIT_MS = 30_000


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def google(fake_google, live_server, settings):
    """The fake Google, with this live server's callback registered."""
    settings.GOOGLE_OAUTH_REDIRECT_URI = f"{live_server.url}/api/oauth/google/callback"
    fake_google.allowed_redirect_uris = {settings.GOOGLE_OAUTH_REDIRECT_URI}
    return fake_google


@pytest.fixture
def grant(google, credential_factory):
    def make(email: str, scopes=("openid", "email", "gmail.modify", "calendar"), **fields):
        token = google.issue_grant(email, scopes=list(scopes))
        return credential_factory(
            email=email, refresh_token=token, access_token=None, expires_in=None,
            scopes=tuple(scopes), **fields,
        )

    return make


@pytest.fixture
def csp_violations():
    return []


def _watch(page, violations: list[str]) -> None:
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "console.error('Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )


def _login(context, live_server, user) -> None:
    """The operator's session in this browser context (the login form has its own test)."""
    client = Client()
    client.force_login(user)
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )


@pytest.fixture
def operator_page(page, live_server, staff_user, csp_violations):
    _login(page.context, live_server, staff_user)
    _watch(page, csp_violations)
    page.set_viewport_size({"width": 1280, "height": 900})
    yield page
    assert csp_violations == []


@pytest.fixture
def eager_tasks():
    """Background runs executed in the web process once their rows are committed (where a real
    worker is not the point of the test)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture
def worker(subprocess_env, google):
    """A real Celery worker (threads pool, as `make run` starts it) on this test's database and
    broker, pointed at the fake Google."""
    env = dict(subprocess_env)
    env.update(google.env())
    env.update({"GOOGLE_OAUTH_CLIENT_ID": google_client_id(google),
                "GOOGLE_OAUTH_CLIENT_SECRET": google.clients[google_client_id(google)]})
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "butlers", "worker", "--loglevel=INFO",
         "--pool=threads", "--concurrency=2", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-n", f"control-panel-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    deadline = time.monotonic() + 60
    while not any("ready." in line for line in lines):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.1)
    try:
        yield lines
    finally:
        process.terminate()
        process.wait(30)


def google_client_id(fake) -> str:
    return next(iter(fake.clients))


def _card(page, email: str):
    return page.locator(f'section.account[data-account="{email}"]')


def _item(page, email: str):
    return page.locator(f'.run li[data-account="{email}"]').first


# --- the dashboard's actions ----------------------------------------------------------------------
def test_each_dashboard_action_from_refresh_to_disconnect(operator_page, live_server, google, grant, worker):
    page = operator_page
    grant(ALICE)
    page.goto(f"{live_server.url}/")
    card = _card(page, ALICE)
    expect(card.locator(".badge")).to_have_text("Connected")

    # Refresh now: queued, then done by the worker; the page shows it without a reload.
    card.get_by_role("button", name="Refresh now").click()
    expect(page.get_by_role("status")).to_contain_text(f"Refresh now queued for {ALICE}")
    expect(_item(page, ALICE)).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(_item(page, ALICE)).to_contain_text("refreshed; the new access token is valid for")
    assert google.refreshes_for(ALICE) == 1

    # Test: every granted API answers.
    _card(page, ALICE).get_by_role("button", name="Test").click()
    expect(_item(page, ALICE)).to_contain_text("calendar: ok, gmail: ok", timeout=WAIT_MS)

    # Reconnect: Google is asked with the account preselected and the card says so afterwards.
    _card(page, ALICE).get_by_role("button", name="Reconnect").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Reconnected {ALICE}")
    assert google.stats["login_hints"][-1] == ALICE
    assert AuditEvent.objects.filter(action="reconsented", account=ALICE).exists()

    # Disconnect: a page says what will happen; nothing happens until it is confirmed.
    stored_grant = GoogleCredential.objects.get(email=ALICE).refresh_token.reveal()
    _card(page, ALICE).get_by_role("link", name="Disconnect…").click()
    expect(page.get_by_role("heading")).to_have_text("Disconnect 1 account?")
    expect(page.locator(".consequence")).to_contain_text("then the account is deleted here")
    page.get_by_role("link", name="No, go back").click()
    expect(_card(page, ALICE)).to_have_count(1)
    _card(page, ALICE).get_by_role("link", name="Disconnect…").click()
    page.get_by_role("button", name="Yes, disconnect").click()
    expect(_item(page, ALICE)).to_contain_text("revoked at Google (revoked) and deleted here", timeout=WAIT_MS)
    expect(_card(page, ALICE)).to_have_count(0, timeout=WAIT_MS)
    expect(page.get_by_text("No Google account is connected yet.")).to_be_visible()

    # Google reports the grant revoked, and the audit log says who did it.
    assert google.grants[stored_grant].revoked
    page.goto(f"{live_server.url}/admin/oauth/auditevent/?action=disconnected")
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("user:operator")
    expect(row).to_contain_text(ALICE)


# --- the admin's actions --------------------------------------------------------------------------
def test_each_admin_action_with_its_confirmation(
    operator_page, live_server, google, grant, eager_tasks, screenshots
):
    page = operator_page
    for email in (ALICE, "bob@example.com", "carol@example.com"):
        grant(email)
    grant("dave@example.com", scopes=("openid", "email", "gmail.modify"))
    google.expire_grant("carol@example.com")
    GoogleCredential.objects.filter(email="carol@example.com").update(
        state="expired", last_error_code="invalid_grant",
        last_error_detail="Token has been expired or revoked.",
    )

    page.goto(f"{live_server.url}/admin/oauth/googlecredential/")
    # coloured badges, the last error, and every column within 1280 px
    expect(page.locator(".state-badge.connected")).to_have_count(2)
    expect(page.locator(".state-badge.missing_scope")).to_have_text("Missing scope")
    expect(page.locator(".state-badge.expired")).to_have_count(1)
    expect(page.locator("td.field-last_error code")).to_have_text("invalid_grant")
    assert page.evaluate(FITS), "a column of the list is cut at 1280 px"
    page.screenshot(path=str(screenshots / "admin-list.png"), full_page=True)

    # Revoke at Google (list action): the confirmation first, Google only after "Yes".
    page.locator(f'tr:has-text("{ALICE}") input.action-select').check()
    page.select_option("select[name=action]", "revoke_at_google")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".confirm-action")).to_contain_text("Revoke at Google 1 account?")
    expect(page.locator(".confirm-action")).to_contain_text("stop working at once")
    assert google.stats["revokes"] == 0
    page.get_by_role("button", name="Yes, revoke at google").click()
    expect(page).to_have_url(f"{live_server.url}/#run-{ActionRun.objects.get().pk}")
    expect(_item(page, ALICE)).to_contain_text("revoked at Google (revoked)")
    expect(_card(page, ALICE).locator(".badge")).to_have_text("Expired or revoked")
    assert google.stats["revokes"] == 1

    # Object buttons on an account's page, which has no Save button.
    bob = GoogleCredential.objects.get(email="bob@example.com")
    change = f"{live_server.url}/admin/oauth/googlecredential/{bob.pk}/change/"
    page.goto(change)
    expect(page.locator("input[name=_save]")).to_have_count(0)
    page.screenshot(path=str(screenshots / "admin-credential.png"), full_page=True)
    expect(page.get_by_text("Delete", exact=True)).to_have_count(0)
    page.get_by_role("button", name="Refresh now").click()
    expect(_item(page, "bob@example.com")).to_contain_text("refreshed;")
    page.goto(change)
    page.get_by_role("button", name="Test").click()
    expect(_item(page, "bob@example.com")).to_contain_text("calendar: ok, gmail: ok")
    page.goto(change)
    page.get_by_role("button", name="Reconnect").click()
    expect(page.get_by_role("status").first).to_contain_text("Reconnected bob@example.com")
    assert google.stats["login_hints"][-1] == "bob@example.com"

    # Test on a grant lacking a required scope is a failure, not a green "ok".
    dave = GoogleCredential.objects.get(email="dave@example.com")
    page.goto(f"{live_server.url}/admin/oauth/googlecredential/{dave.pk}/change/")
    page.get_by_role("button", name="Test").click()
    expect(_item(page, "dave@example.com")).to_have_attribute("data-status", "failed")
    expect(_item(page, "dave@example.com")).to_contain_text("missing required scope calendar")

    # Disconnect (object button): confirmation, then revoked at Google and deleted.
    page.goto(change)
    page.get_by_role("link", name="Disconnect…").click()
    expect(page.locator(".confirm-action")).to_contain_text("Disconnect 1 account?")
    page.get_by_role("link", name="No, take me back").click()
    assert GoogleCredential.objects.filter(pk=bob.pk).exists()
    page.goto(change)
    page.get_by_role("link", name="Disconnect…").click()
    page.get_by_role("button", name="Yes, disconnect").click()
    expect(_item(page, "bob@example.com")).to_contain_text("deleted here")
    assert not GoogleCredential.objects.filter(pk=bob.pk).exists()
    event = AuditEvent.objects.get(action="disconnected")
    assert (event.actor, event.account) == ("user:operator", "bob@example.com")

    # Disconnect (list action) on the dead grant: Google no longer knows it; deleted all the same.
    page.goto(f"{live_server.url}/admin/oauth/googlecredential/")
    page.locator('tr:has-text("carol@example.com") input.action-select').check()
    page.select_option("select[name=action]", "disconnect")
    page.get_by_role("button", name="Go").click()
    page.get_by_role("button", name="Yes, disconnect").click()
    expect(_item(page, "carol@example.com")).to_contain_text("deleted here")

    # the audit list's columns fit too, with relative and absolute times
    page.goto(f"{live_server.url}/admin/oauth/auditevent/")
    expect(page.locator(".field-created time").first).to_be_visible()
    assert page.evaluate(FITS), "a column of the audit list is cut at 1280 px"


# --- a background action on many accounts ---------------------------------------------------------
def test_progress_of_a_refresh_of_20_accounts_while_google_is_slow(
    operator_page, live_server, google, grant, worker
):
    page = operator_page
    emails = [f"user{n:02d}@example.com" for n in range(20)]
    for email in emails:
        grant(email)
    google.token_latency = 0.4  # each refresh takes 0.4 s at Google

    page.goto(f"{live_server.url}/admin/oauth/googlecredential/")
    page.locator("#action-toggle").check()
    page.select_option("select[name=action]", "refresh_now")
    page.get_by_role("button", name="Go").click()
    # Answered at once (nothing waited on Google), on the dashboard with the run's progress.
    expect(page.get_by_role("status").first).to_contain_text("Refresh now queued for 20 accounts")
    page.evaluate("window.__sameDocument = true")
    items = page.locator(".run li")
    expect(items).to_have_count(20)
    expect(page.locator('.run li[data-status="queued"]').first).to_be_visible()
    expect(page.locator('.run li[data-status="running"]').first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator('.run li[data-status="succeeded"]')).to_have_count(20, timeout=60_000)
    expect(page.locator(".run").first).to_contain_text("finished")
    assert page.evaluate("window.__sameDocument === true")  # updated in place, never reloaded
    assert all(google.refreshes_for(email) == 1 for email in emails)

    # the result stays afterwards
    page.reload()
    expect(page.locator('.run li[data-status="succeeded"]')).to_have_count(20)


# --- a card that updates itself -------------------------------------------------------------------
def test_a_card_follows_a_state_change_made_elsewhere_without_a_reload(
    operator_page, live_server, google, grant
):
    from oauth.revocation import credential_revoke

    page = operator_page
    alice = grant(ALICE)
    page.goto(f"{live_server.url}/")
    card = _card(page, ALICE)
    expect(card).to_have_attribute("data-state", "connected")
    page.evaluate("window.__sameDocument = true")

    credential_revoke(credential=alice, actor="process:oauth_revoke")  # as `manage.py oauth_revoke`

    expect(card).to_have_attribute("data-state", "expired", timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument === true")
    expect(card.locator(".badge")).to_have_text("Expired or revoked")
    # one block for the problem: what happened, then what to do, each said once
    expect(card.locator(".problem")).to_have_count(1)
    text = card.inner_text()
    assert text.count("Revoked at Google by process:oauth_revoke") == 1
    assert text.count("Reconnect") == 2  # the remediation sentence and the button
    # the dead grant's scopes are not shown as granted
    expect(card.get_by_text("Granted scopes")).to_have_count(0)
    expect(card.get_by_text("Scopes (grant no longer valid)")).to_be_visible()
    expect(card.locator(".scope.dead")).to_have_count(4)


# --- looks: light, dark, phone, empty, 404 ----------------------------------------------------------
def _household(grant, google):
    grant(ALICE)
    grant("bob.with.a.rather.long.address@household-example.com", scopes=("openid", "email", "gmail.modify"))
    failing = grant("carol@example.com")
    GoogleCredential.objects.filter(pk=failing.pk).update(
        state="refresh_failing", consecutive_failures=3, last_error_code="temporarily_unavailable",
        last_error_detail="Google answered 503. The refresh will be retried.",
    )
    dead = grant("dave@example.com")
    from oauth.revocation import credential_revoke

    credential_revoke(credential=dead, actor="user:operator")


def test_dashboard_light_dark_and_phone(browser, live_server, staff_user, google, grant, screenshots):
    _household(grant, google)
    violations: list[str] = []

    light = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    _login(light, live_server, staff_user)
    page = light.new_page()
    _watch(page, violations)
    page.goto(f"{live_server.url}/")
    expect(page.locator("section.account")).to_have_count(4)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(245, 247, 250)"
    page.screenshot(path=str(screenshots / "dashboard-light.png"), full_page=True)
    light.close()

    dark = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    _login(dark, live_server, staff_user)
    page = dark.new_page()
    _watch(page, violations)
    page.goto(f"{live_server.url}/")
    expect(page.locator("section.account")).to_have_count(4)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(18, 24, 32)"
    assert page.evaluate(
        "getComputedStyle(document.querySelector('section.account')).backgroundColor"
    ) == "rgb(27, 36, 48)"
    page.screenshot(path=str(screenshots / "dashboard-dark.png"), full_page=True)
    # the admin follows the same system setting
    page.goto(f"{live_server.url}/admin/oauth/googlecredential/")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(255, 255, 255)"
    dark.close()

    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    _login(phone, live_server, staff_user)
    page = phone.new_page()
    _watch(page, violations)
    page.goto(f"{live_server.url}/")
    expect(page.locator("section.account")).to_have_count(4)
    assert page.evaluate("window.innerWidth") == 390
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # labels above their values
    label = page.locator("dl.facts dt").first.bounding_box()
    value = page.locator("dl.facts dd").first.bounding_box()
    assert value["y"] >= label["y"] + label["height"] - 1
    page.screenshot(path=str(screenshots / "dashboard-phone.png"), full_page=True)
    phone.close()

    assert violations == []


def test_empty_dashboard_and_404_page(operator_page, live_server, google):
    page = operator_page
    page.goto(f"{live_server.url}/")
    empty = page.locator("section.empty")
    expect(empty.get_by_role("link", name="Connect the first account")).to_have_attribute(
        "href", "/api/oauth/google/start"
    )
    expect(empty.get_by_role("link", name="admin")).to_have_attribute("href", "/admin/oauth/oauthclient/")

    response = page.goto(f"{live_server.url}/no/such/page")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_role("main").get_by_role("link", name="the dashboard")).to_be_visible()
    assert page.locator("header.topbar").evaluate("e => getComputedStyle(e).display") == "flex"


# --- many accounts --------------------------------------------------------------------------------
def test_a_page_of_many_accounts_stays_on_its_page_while_it_polls(
    operator_page, live_server, oauth_client_factory, screenshots
):
    from tests.factories import credentials_bulk_create

    page = operator_page
    oauth_client_factory()
    credentials_bulk_create(count=160, prefix="fine")
    credentials_bulk_create(count=40, prefix="dead", state="expired")
    credentials_bulk_create(count=50, prefix="partial", scopes=("openid", "email", "gmail.modify"))

    page.goto(f"{live_server.url}/")
    summary = page.locator("#account-summary")
    expect(summary).to_have_text(
        "250 accounts: 160 connected, 40 expired or revoked, 50 missing scope"
    )
    expect(page.locator("section.account")).to_have_count(100)
    expect(page.locator("section.account").first).to_have_attribute("data-state", "expired")
    page.screenshot(path=str(screenshots / "dashboard-many.png"))

    page.get_by_role("link", name="Next →").first.click()
    expect(page).to_have_url(f"{live_server.url}/?page=2")
    expect(page.locator(".pages .range").first).to_have_text("Accounts 101–200 of 250")
    last_used = _card(page, "fine0100@example.com").locator("dt:text-is('Last used') + dd")
    expect(last_used).to_have_text("never")
    page.evaluate("window.__sameDocument = true")

    # a change made elsewhere shows on this page at the next poll: it polled page 2, not page 1
    GoogleCredential.objects.filter(email="fine0100@example.com").update(
        last_used_at=GoogleCredential.objects.get(email="fine0100@example.com").created_at
    )
    expect(last_used).to_contain_text("UTC", timeout=WAIT_MS)
    expect(page.locator("section.account")).to_have_count(100)
    assert page.evaluate("window.__sameDocument === true")

    summary.get_by_role("link", name="40 expired or revoked").click()
    expect(page).to_have_url(f"{live_server.url}/?state=expired")
    expect(page.locator('section.account[data-state="expired"]')).to_have_count(40)
    expect(page.locator("section.account")).to_have_count(40)
