"""A real browser (Debian's Chromium through Playwright) connects an account from the dashboard."""
from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from oauth.models import GoogleCredential

# Playwright's sync API runs an event loop in this thread; the ORM calls below are still plain
# synchronous calls, so Django's async-safety guard has to be told.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOT = "/tmp/butlers-dashboard-connected.png"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


def test_staff_connects_an_account_from_the_dashboard(page, live_server, fake_google, staff_user, settings):
    settings.GOOGLE_OAUTH_REDIRECT_URI = f"{live_server.url}/api/oauth/google/callback"
    fake_google.allowed_redirect_uris = {settings.GOOGLE_OAUTH_REDIRECT_URI}

    page.goto(f"{live_server.url}/")
    # Anonymous: the dashboard sends us to the admin login first.
    expect(page).to_have_url(f"{live_server.url}/admin/login/?next=/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pass-123")
    page.click("input[type=submit]")

    expect(page.get_by_role("heading", name="Google accounts")).to_be_visible()
    expect(page.get_by_text("No Google account is connected yet.")).to_be_visible()
    page.get_by_role("link", name="Connect a Google account").click()

    # The fake Google consents and redirects back; the dashboard shows the connected account.
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("status")).to_contain_text("Connected alice@example.com")
    card = page.locator("section.account")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-state", "connected")
    expect(card.locator(".badge")).to_have_text("Connected")
    expect(card).to_contain_text("gmail.modify")
    expect(card).to_contain_text("calendar")
    page.screenshot(path=SCREENSHOT, full_page=True)

    assert GoogleCredential.objects.get().credential_key == "google"
