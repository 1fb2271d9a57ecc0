"""The admin shows accounts, states and scopes, and never a secret."""
from tests.factories import ACCESS_TOKEN, CLIENT_SECRET, REFRESH_TOKEN
from oauth.models import AuditEvent, OAuthClient

SECRETS = (REFRESH_TOKEN, ACCESS_TOKEN, CLIENT_SECRET)


def _assert_no_secret(html: str) -> None:
    for secret in SECRETS:
        assert secret not in html
        assert secret[:12] not in html  # not even truncated
    assert "gAAAAA" not in html  # nor the ciphertext


def test_credential_list_and_change_pages_show_state_and_scopes_but_no_secret(
    staff_client, credential_factory
):
    credential = credential_factory(email="alice@example.com", scopes=("gmail.modify",))

    listing = staff_client.get("/admin/oauth/googlecredential/").content.decode()
    change = staff_client.get(f"/admin/oauth/googlecredential/{credential.pk}/change/").content.decode()

    assert "alice@example.com" in listing and "missing_scope" in listing
    assert "gmail.modify" in change and "calendar" in change  # granted, and missing
    assert "refresh token stored (encrypted)" in change
    assert "Days until Google" in change
    _assert_no_secret(listing)
    _assert_no_secret(change)


def test_client_secret_is_write_only(staff_client, oauth_client_factory, staff_user):
    client = oauth_client_factory()
    url = f"/admin/oauth/oauthclient/{client.pk}/change/"

    page = staff_client.get(url).content.decode()
    _assert_no_secret(page)
    assert "set (last change" in page

    # saving without typing a secret keeps it
    response = staff_client.post(url, {"client_id": "new-id", "redirect_uri": "", "new_client_secret": ""})
    assert response.status_code == 302
    client = OAuthClient.objects.get()
    assert client.client_id == "new-id" and client.client_secret.reveal() == CLIENT_SECRET

    # typing one replaces it, and the change is audited without the value
    staff_client.post(url, {"client_id": "new-id", "redirect_uri": "", "new_client_secret": "GOCSPX-replaced"})
    assert OAuthClient.objects.get().client_secret.reveal() == "GOCSPX-replaced"
    event = AuditEvent.objects.filter(action="client_changed").first()
    assert event.actor == f"user:{staff_user.username}" and event.detail["secret_replaced"] is True
    assert "GOCSPX-replaced" not in str(event.detail)


def test_a_new_client_needs_a_secret(staff_client, db):
    response = staff_client.post("/admin/oauth/oauthclient/add/", {"client_id": "x", "redirect_uri": ""})
    assert response.status_code == 200 and "needs its secret" in response.content.decode()
    assert not OAuthClient.objects.exists()


def test_audit_log_is_read_only(staff_client, credential_factory):
    from oauth.services import audit_record

    event = audit_record(action="refreshed", actor="process:test", credential=credential_factory(),
                         detail={"refresh_token": REFRESH_TOKEN, "note": f"Bearer {ACCESS_TOKEN}"})

    assert staff_client.get("/admin/oauth/auditevent/").status_code == 200
    assert staff_client.get("/admin/oauth/auditevent/add/").status_code == 403
    assert staff_client.post(f"/admin/oauth/auditevent/{event.pk}/delete/").status_code == 403
    page = staff_client.get(f"/admin/oauth/auditevent/{event.pk}/change/").content.decode()
    _assert_no_secret(page)
    assert AuditEvent.objects.get(pk=event.pk).detail["refresh_token"] == "[redacted]"


def test_lacks_scope_filter_answers_which_accounts_lack_calendar(staff_client, credential_factory):
    credential_factory(email="full@example.com")
    credential_factory(email="mailonly@example.com", scopes=("gmail.modify",))

    page = staff_client.get(
        "/admin/oauth/googlecredential/?lacks=https://www.googleapis.com/auth/calendar"
    ).content.decode()

    assert "mailonly@example.com" in page and "full@example.com" not in page
