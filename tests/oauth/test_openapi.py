"""The OpenAPI 3.1 document of ``/api/`` (``GET /api/schema``, kept in oauth/openapi.json) is valid,
covers every ``/api/`` route, and describes what the server really answers."""
from __future__ import annotations

import json

import pytest
import requests
from django.urls import URLPattern, URLResolver, get_resolver
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from oauth.models import CredentialState, GoogleCredential
from oauth.service_keys import service_key_create
from tests.factories import ROOT

DOC_URI = "urn:butlers:openapi"


def _document() -> dict:
    return json.loads((ROOT / "oauth" / "openapi.json").read_text())


def _api_routes(resolver=None, prefix="") -> set[str]:
    routes: set[str] = set()
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            routes |= _api_routes(entry, route)
        elif isinstance(entry, URLPattern) and route.startswith("api/"):
            routes.add("/" + route)
    return routes


def test_the_document_is_valid_openapi_3_1_and_served_as_kept_in_the_repo(client):
    document = _document()
    validate_spec(document)

    response = client.get("/api/schema")

    assert document["openapi"].startswith("3.1")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json() == document


def test_every_api_route_is_described():
    assert _api_routes() - set(_document()["paths"]) == set()


class Checker:
    """Validates a real response against the document: its status must be documented for that
    path and method, and a JSON body must match the documented schema."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self.registry = Registry().with_resource(DOC_URI, Resource(document, specification=DRAFT202012))
        self.seen: set[tuple[str, str, int]] = set()

    def check(self, path: str, method: str, response) -> None:
        operation = self.document["paths"][path][method]
        status = str(response.status_code)
        assert status in operation["responses"], f"{method.upper()} {path} answered undocumented {status}"
        self.seen.add((path, method, response.status_code))
        content = operation["responses"][status].get("content") or {}
        if "application/json" not in content:
            return
        pointer = "/".join(
            ["#", "paths", path.replace("~", "~0").replace("/", "~1"), method, "responses", status,
             "content", "application~1json", "schema"]
        )
        validator = Draft202012Validator(
            {"$ref": DOC_URI + pointer}, registry=self.registry, format_checker=FormatChecker()
        )
        body = response.json()
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{method.upper()} {path} {status}: {errors[0].message} in {body}"


@pytest.mark.django_db(transaction=True)
def test_real_responses_match_the_document(live_server, fake_google, credential_factory, staff_user, settings):
    checker = Checker(_document())
    url = live_server.url
    alice_token = fake_google.issue_grant("alice@example.com", scopes=["openid", "email", "gmail.modify", "calendar"])
    credential_factory(email="alice@example.com", refresh_token=alice_token, access_token=None, expires_in=None)
    carol_token = fake_google.issue_grant("carol@example.com", scopes=["openid", "email", "calendar"])
    credential_factory(email="carol@example.com", refresh_token=carol_token, access_token=None,
                       expires_in=None, scopes=("openid", "email", "calendar"))
    _, key = service_key_create(name="svc", all_accounts=True, scopes=["gmail.readonly"], actor="user:test")
    _, limited = service_key_create(name="alice-only", accounts=["alice@example.com"], actor="user:test")
    auth = {"Authorization": f"Bearer {key}"}
    staff = requests.Session()
    staff.auth = ("operator", "operator-pass-123")

    def token(body, headers=auth):
        return requests.post(f"{url}/api/oauth/token", json=body, headers=headers, timeout=30)

    calls = [
        ("/api/health", "get", requests.get(f"{url}/api/health", timeout=30)),
        ("/api/health/ready", "get", requests.get(f"{url}/api/health/ready", timeout=30)),
        ("/api/oauth/status", "get", requests.get(f"{url}/api/oauth/status", timeout=30)),
        ("/api/oauth/status", "get", staff.get(f"{url}/api/oauth/status", timeout=30)),
        ("/api/oauth/google/start", "get",
         requests.get(f"{url}/api/oauth/google/start?redirect=false", timeout=30)),
        ("/api/oauth/google/start", "get",
         staff.get(f"{url}/api/oauth/google/start?redirect=false", timeout=30)),
        ("/api/oauth/google/callback", "get",
         requests.get(f"{url}/api/oauth/google/callback?state=nope&code=x",
                      headers={"Accept": "application/json"}, timeout=30)),
        ("/api/oauth/token", "post", token({"account": "alice@example.com"})),
        ("/api/oauth/token", "post", token({})),
        ("/api/oauth/token", "post", token({"account": 3})),
        ("/api/oauth/token", "post", token({}, headers={"Authorization": "Bearer bk_nope"})),
        ("/api/oauth/token", "post", token({"account": "carol@example.com"})),
        ("/api/oauth/token", "post", token({"account": "bob@example.com"})),
        ("/api/oauth/token", "post", token({"account": "carol@example.com"},
                                           headers={"Authorization": f"Bearer {limited}"})),
        ("/api/oauth/accounts", "get", requests.get(f"{url}/api/oauth/accounts", headers=auth, timeout=30)),
        ("/api/oauth/accounts", "get", requests.get(f"{url}/api/oauth/accounts", timeout=30)),
        ("/api/schema", "get", requests.get(f"{url}/api/schema", timeout=30)),
    ]
    dave_token = fake_google.issue_grant("dave@example.com", scopes=["openid", "email", "gmail.modify"])
    credential_factory(email="dave@example.com", refresh_token=dave_token, access_token=None,
                       expires_in=None, scopes=("openid", "email", "gmail.modify"))
    settings.OAUTH_REFRESH_RETRIES = 0
    fake_google.fail_token(1)
    calls.append(("/api/oauth/token", "post", token({"account": "dave@example.com"})))  # 503
    fake_google.expire_grant("dave@example.com")
    calls.append(("/api/oauth/token", "post", token({"account": "dave@example.com"})))  # 409
    settings.SERVICE_KEY_RATE_LIMIT = "1/m"
    calls.append(("/api/oauth/token", "post", token({})))
    calls.append(("/api/oauth/token", "post", token({})))  # 429

    for path, method, response in calls:
        checker.check(path, method, response)

    token_statuses = {status for path, _, status in checker.seen if path == "/api/oauth/token"}
    assert token_statuses == {200, 400, 401, 403, 404, 409, 429, 503}
    assert GoogleCredential.objects.get(email="dave@example.com").state == CredentialState.EXPIRED


def test_the_check_fails_a_body_the_document_does_not_allow():
    class Response:
        status_code = 200

        @staticmethod
        def json():
            return {"access_token": "ya29.x", "expires_in": 10}  # no expires_at, account, scopes

    with pytest.raises(AssertionError, match="required property"):
        Checker(_document()).check("/api/oauth/token", "post", Response())
    Response.status_code = 418
    with pytest.raises(AssertionError, match="undocumented 418"):
        Checker(_document()).check("/api/oauth/token", "post", Response())
