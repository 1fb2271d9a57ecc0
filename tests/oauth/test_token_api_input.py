"""Whatever a caller sends to the token API, the answer is on purpose: never a 500, never a secret."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from oauth.service_keys import service_key_create

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {}, optional={"account": json_values | st.emails(), "force_refresh": json_values}
    ).map(lambda v: json.dumps(v).encode()),
)
headers = st.one_of(
    st.none(),
    st.text(max_size=80).filter(lambda v: "\n" not in v and "\r" not in v),
    st.text(max_size=60).map(lambda v: "Bearer bk_" + v.replace("\n", "").replace("\r", "")),
)


@pytest.fixture
def fuzz_key(credential_factory):
    """A key for every account, and Alice with a valid stored token (no call to Google)."""
    credential_factory(email="alice@example.com")
    return service_key_create(name="fuzz", all_accounts=True, actor="user:test")[1]


@hypothesis_settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, authorization=headers, use_real_key=st.booleans())
def test_any_body_and_authorization_is_answered_on_purpose(
    client, fuzz_key, settings, body, authorization, use_real_key
):
    settings.SERVICE_KEY_RATE_LIMIT = "0"
    extra = {}
    if use_real_key:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {fuzz_key}"
    elif authorization is not None:
        extra["HTTP_AUTHORIZATION"] = authorization

    response = client.post("/api/oauth/token", body, content_type="application/json", **extra)

    assert response.status_code in (200, 400, 401, 404), response.content[:300]
    payload = response.json()
    if response.status_code == 200:
        assert use_real_key and payload["account"] == "alice@example.com"
    else:
        assert payload["error"] and payload["description"]
        assert fuzz_key not in response.content.decode()
