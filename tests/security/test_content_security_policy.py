"""Finding 15: every page carries a Content-Security-Policy (django-csp), and the dashboard and
the admin still work under it in a real browser (Chromium through Playwright): styles applied,
login, lists and forms, and not one CSP violation reported."""
from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.e2e.test_browser import browser_type_launch_args  # noqa: F401 (Debian's Chromium)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _directives(header: str) -> dict[str, str]:
    return {
        part.strip().split(" ", 1)[0]: part.strip().partition(" ")[2]
        for part in header.split(";") if part.strip()
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/admin/", "/admin/login/", "/api/oauth/status", "/api/health"])
def test_finding_15_every_answer_carries_a_strict_content_security_policy(staff_client, path):
    response = staff_client.get(path)
    policy = _directives(response["Content-Security-Policy"])
    assert policy["default-src"] == "'self'"
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert "'unsafe-eval'" not in response["Content-Security-Policy"]
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_finding_15_dashboard_and_admin_work_under_the_content_security_policy(
    page, live_server, staff_user, credential_factory, settings
):
    settings.GOOGLE_OAUTH_CLIENT_ID = "1234567890-test.apps.googleusercontent.com"
    credential_factory(email="alice@example.com")
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "console.error('Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )

    page.goto(f"{live_server.url}/admin/login/?next=/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pass-123")
    page.click("input[type=submit]")
    expect(page.get_by_role("heading", name="Google accounts")).to_be_visible()
    # The dashboard's own stylesheet (static/oauth/site.css, from 'self') is applied: waited for,
    # as the heading can be laid out before the stylesheet has arrived.
    expect(page.locator("header.topbar")).to_have_css("display", "flex")
    expect(page.locator("section.account")).to_have_count(1)

    page.goto(f"{live_server.url}/admin/")
    expect(page.get_by_role("link", name="Google credentials")).to_be_visible()
    # Django admin's own CSS and JS load (from 'self').
    expect(page.locator("#header")).to_have_css("display", "flex")
    page.goto(f"{live_server.url}/admin/oauth/googlecredential/")
    expect(page.get_by_text("alice@example.com")).to_be_visible()
    page.locator("#action-toggle").check()  # admin's actions.js ran: it ticks every row
    assert page.locator("input.action-select").first.is_checked()
    page.goto(f"{live_server.url}/admin/oauth/oauthclient/add/")
    page.fill("#id_client_id", "1-x.apps.googleusercontent.com")
    page.fill("#id_new_client_secret", "GOCSPX-csp-test")
    page.fill("#id_redirect_uri", "https://butlers.example.com/api/oauth/google/callback")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    assert violations == []
