"""The dashboard above 100 accounts (oauth/account_views.py): problems first, counts per state that
filter, pages of 100 that the live region keeps while it polls, and as many queries for 250
accounts as for 150."""
from __future__ import annotations

import html as markup
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import credentials_bulk_create

pytestmark = pytest.mark.django_db

CARD = re.compile(
    r'<section class="card account" id="account-\d+" data-state="(\w+)" data-account="([^"]+)"'
)
FULL = ("openid", "email", "gmail.modify", "calendar")


def _cards(html: str) -> list[tuple[str, str]]:
    """(state, account) of each card, in the order the page shows them."""
    return CARD.findall(html)


def _text(html: str) -> str:
    """What a reader sees of the page: its text without tags, spaces collapsed."""
    return " ".join(markup.unescape(re.sub(r"<[^>]+>", "", html)).split())


def _link(html: str, rel: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)" rel="{rel}"', html)
    return match and match.group(1).replace("&amp;", "&")


@pytest.fixture
def household(credential_factory, oauth_client_factory):
    """250 accounts: the primary and 159 more connected, then (created later) 40 expired, 30
    lacking a scope, 15 whose refresh keeps failing and 5 connected with a passing error."""
    oauth_client_factory()
    credential_factory(email="primary@example.com", scopes=FULL)
    credentials_bulk_create(count=155, prefix="fine", scopes=FULL)
    credentials_bulk_create(count=40, prefix="dead", scopes=FULL, state="expired",
                            last_error_code="invalid_grant",
                            last_error_detail="Token has been expired or revoked.")
    credentials_bulk_create(count=30, prefix="partial", scopes=("openid", "email", "gmail.modify"))
    credentials_bulk_create(count=15, prefix="failing", scopes=FULL, state="refresh_failing",
                            consecutive_failures=3, last_error_code="temporarily_unavailable")
    credentials_bulk_create(count=5, prefix="blip", scopes=FULL, last_error_code="timeout",
                            last_error_detail="Google did not answer in time.")
    credentials_bulk_create(count=4, prefix="late", scopes=FULL)


def test_the_first_page_shows_the_problems_first_and_the_counts(staff_client, household):
    html = staff_client.get("/").content.decode()
    cards = _cards(html)
    assert len(cards) == 100
    states = [state for state, _ in cards]
    assert states == (["expired"] * 40 + ["missing_scope"] * 30 + ["refresh_failing"] * 15
                      + ["connected"] * 15)
    # within a state, the order they were connected in; a passing error before the healthy ones
    assert cards[0][1] == "dead0000@example.com" and cards[39][1] == "dead0039@example.com"
    assert [account for _, account in cards[85:91]] == [
        *(f"blip{n:04d}@example.com" for n in range(5)), "primary@example.com"]
    assert html.count('class="problem') == 90
    text = _text(html)
    assert ("250 accounts: 165 connected, 40 expired or revoked, 30 missing scope, "
            "15 refresh failing") in text
    assert "Accounts 1–100 of 250" in text
    assert _link(html, "prev") is None and _link(html, "next") == "/?page=2"


def test_the_next_page_links_walk_through_every_account(staff_client, household):
    seen = []
    url, ranges = "/", []
    while url:
        html = staff_client.get(url).content.decode()
        seen += [account for _, account in _cards(html)]
        ranges.append(re.search(r"Accounts [\d,]+–[\d,]+ of [\d,]+", _text(html)).group())
        url = _link(html, "next")
    assert ranges == ["Accounts 1–100 of 250", "Accounts 101–200 of 250", "Accounts 201–250 of 250"]
    assert len(seen) == len(set(seen)) == 250
    last = staff_client.get("/?page=3").content.decode()
    assert _link(last, "prev") == "/?page=2" and _link(last, "next") is None
    assert {state for state, _ in _cards(last)} == {"connected"}


def test_each_count_filters_to_its_state(staff_client, household):
    html = staff_client.get("/").content.decode()
    expired = re.search(r'<a href="([^"]+)" class="count expired"', html).group(1)
    assert expired == "/?state=expired"
    filtered = staff_client.get(expired).content.decode()
    cards = _cards(filtered)
    assert len(cards) == 40 and {state for state, _ in cards} == {"expired"}
    text = _text(filtered)
    assert "Accounts 1–40 of 40 expired or revoked" in text
    assert "250 accounts: 165 connected, 40 expired or revoked" in text  # the counts stay whole
    assert 'class="count expired" data-state="expired" aria-current="true"' in filtered
    assert '<a href="/" class="count all">all states</a>' in filtered

    connected = staff_client.get("/?state=connected&page=2").content.decode()
    assert "Accounts 101–165 of 165 connected" in _text(connected)
    assert _link(connected, "prev") == "/?state=connected"
    assert {state for state, _ in _cards(connected)} == {"connected"}


def test_an_unknown_or_empty_state_says_so(staff_client, household):
    response = staff_client.get("/?state=<b>bogus</b>")
    html = response.content.decode()
    assert response.status_code == 200 and len(_cards(html)) == 100
    assert "There is no account state '<b>bogus</b>' (the states are connected, " in _text(html)
    assert "showing every account." in _text(html) and "<b>bogus" not in html

    html = staff_client.get("/?state=misconfigured").content.decode()
    assert _cards(html) == []
    assert "No account is in the state 'client misconfigured' now." in _text(html)
    assert "No Google account is connected yet." not in html


@pytest.mark.parametrize(
    "page, shown",
    [("99", 3), ("abc", 1), ("0", 1), ("-2", 1), ("", 1), ("2.5", 1), ("9" * 5000, 1)],
)
def test_a_bad_page_number_shows_the_nearest_page(staff_client, household, page, shown):
    for path in ("/", "/accounts/live"):
        response = staff_client.get(path, {"page": page})
        assert response.status_code == 200
        expected = staff_client.get(path, {"page": shown}).content.decode()
        assert _cards(response.content.decode()) == _cards(expected)
        assert len(_cards(expected)) == (50 if shown == 3 else 100)


def test_the_live_region_polls_the_page_and_filter_it_came_from(staff_client, household):
    assert 'data-live-url="/accounts/live?page=2"' in staff_client.get("/?page=2").content.decode()
    assert ('data-live-url="/accounts/live?state=expired"'
            in staff_client.get("/?state=expired").content.decode())
    assert 'data-live-url="/accounts/live?page=3"' in staff_client.get("/?page=7").content.decode()

    fragment = staff_client.get("/accounts/live?page=2").content.decode()
    assert "<html" not in fragment
    cards = _cards(fragment)
    assert len(cards) == 100 and {state for state, _ in cards} == {"connected"}
    assert "Accounts 101–200 of 250" in _text(fragment)
    assert _link(fragment, "next") == "/?page=3"  # links lead to the dashboard, not the fragment
    expired = _cards(staff_client.get("/accounts/live?state=expired").content.decode())
    assert len(expired) == 40


def test_up_to_100_accounts_the_dashboard_is_one_list_as_before(staff_client, credential_factory,
                                                               oauth_client_factory):
    oauth_client_factory()
    credential_factory(email="primary@example.com", scopes=FULL)
    credentials_bulk_create(count=98, prefix="fine", scopes=FULL)
    credentials_bulk_create(count=1, prefix="dead", scopes=FULL, state="expired")
    html = staff_client.get("/").content.decode()
    cards = _cards(html)
    assert len(cards) == 100
    assert cards[0][1] == "primary@example.com" and cards[-1] == ("expired", "dead0000@example.com")
    assert "account-summary" not in html and "Accounts 1–100" not in html
    assert 'data-live-url="/accounts/live"' in html


def _queries(client, path: str) -> int:
    client.get(path)  # the session and the user are loaded the same way every time
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_the_queries_do_not_grow_with_the_accounts(staff_client, oauth_client_factory,
                                                  credential_factory):
    oauth_client_factory()
    credential_factory(email="primary@example.com", scopes=FULL)
    credentials_bulk_create(count=119, prefix="fine", scopes=FULL)
    credentials_bulk_create(count=30, prefix="dead", scopes=FULL, state="expired")
    paths = ("/", "/?page=2", "/?state=expired", "/accounts/live", "/accounts/live?page=2")
    at_150 = {path: _queries(staff_client, path) for path in paths}

    credentials_bulk_create(count=70, prefix="more", scopes=FULL)
    credentials_bulk_create(count=30, prefix="gone", scopes=FULL, state="expired")
    at_250 = {path: _queries(staff_client, path) for path in paths}

    assert "Accounts 1–100 of 250" in _text(staff_client.get("/").content.decode())
    assert at_250 == at_150
