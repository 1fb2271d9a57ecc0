"""Google's side of Cross-Account Protection (RISC): the discovery document, its signing keys, the
checks a security event token must pass, and the RISC API that registers our receiver.

Everything here goes through :mod:`oauth.google.transport` (one session, one deadline per call).

Verification follows Google's receiver guide: the token's ``kid`` names a key of the JWKS that the
discovery document (GOOGLE_RISC_CONFIG_URI) points to; the signature is RS256; ``iss`` is the
document's ``issuer``; ``aud`` is one of our OAuth client ids. Security event tokens carry no
``exp``: instead ``iat`` must be neither too old (GOOGLE_RISC_MAX_AGE) nor in the future, and each
``jti`` is applied once (the caller's unique row).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests

from ..app_settings import oauth_settings, validate_endpoint_url
from . import transport

logger = logging.getLogger("oauth.google.risc")

#: Google's RISC API (used when the discovery document does not name its endpoints).
RISC_API = "https://risc.googleapis.com/v1beta"
#: The audience of the service-account JWT that authorises calls to the RISC API.
RISC_API_AUDIENCE = "https://risc.googleapis.com/google.identity.risc.v1beta.RiscManagementService"
PUSH_DELIVERY = "https://schemas.openid.net/secevent/risc/delivery-method/push"
#: Seconds an ``iat`` may lie in the future (clock skew).
FUTURE_SKEW = 300
#: Fewest seconds between two fetches of the JWKS for an unknown ``kid``: the receiver is open to
#: anyone, and made-up kids must not turn it into a stream of requests to Google.
REFETCH_INTERVAL = 5.0

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"
#: Event type URIs Google sends, by the short name this app uses.
EVENT_TYPES = {
    "sessions-revoked": RISC + "sessions-revoked",
    "tokens-revoked": OAUTH + "tokens-revoked",
    "token-revoked": OAUTH + "token-revoked",
    "account-disabled": RISC + "account-disabled",
    "account-enabled": RISC + "account-enabled",
    "account-credential-change-required": RISC + "account-credential-change-required",
    "verification": RISC + "verification",
}
SHORT_NAMES = {uri: name for name, uri in EVENT_TYPES.items()}


class RiscUnavailable(Exception):
    """Google's discovery document or keys could not be read (the event may be retried)."""


class RiscTokenRejected(Exception):
    """The token fails a check; ``reason`` says which (it is what the 400 answer carries)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class RiscConfiguration:
    issuer: str
    jwks_uri: str
    configuration_endpoint: str
    status_endpoint: str
    verification_endpoint: str


_lock = threading.Lock()
_config: tuple[float, str, RiscConfiguration] | None = None
_jwks: dict[str, tuple[float, dict[str, Any]]] = {}


def cache_clear() -> None:
    """Forget the discovery document and keys (tests; a changed GOOGLE_RISC_CONFIG_URI)."""
    global _config
    with _lock:
        _config = None
        _jwks.clear()


def _get_json(url: str, *, what: str) -> dict[str, Any]:
    try:
        response = transport.send("GET", url, headers={"Accept": "application/json"},
                                  allow_redirects=False)
    except requests.RequestException as exc:
        raise RiscUnavailable(
            f"Could not reach {what} at {transport.endpoint_host(url)} ({type(exc).__name__})."
        ) from None
    try:
        body = response.json() if response.status_code == 200 else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RiscUnavailable(f"{what} at {transport.endpoint_host(url)} answered HTTP "
                              f"{response.status_code} without a JSON object.")
    return body


def risc_configuration() -> RiscConfiguration:
    """The discovery document of GOOGLE_RISC_CONFIG_URI (cached GOOGLE_RISC_JWKS_TTL seconds)."""
    global _config
    uri = validate_endpoint_url("GOOGLE_RISC_CONFIG_URI", oauth_settings.GOOGLE_RISC_CONFIG_URI)
    ttl = float(oauth_settings.GOOGLE_RISC_JWKS_TTL)
    with _lock:
        if _config is not None and _config[1] == uri and time.monotonic() - _config[0] < ttl:
            return _config[2]
    body = _get_json(uri, what="Google's RISC discovery document (GOOGLE_RISC_CONFIG_URI)")
    issuer, jwks_uri = body.get("issuer"), body.get("jwks_uri")
    if not isinstance(issuer, str) or not isinstance(jwks_uri, str) or not issuer or not jwks_uri:
        raise RiscUnavailable("The RISC discovery document names no issuer or jwks_uri.")
    config = RiscConfiguration(
        issuer=issuer,
        jwks_uri=validate_endpoint_url("jwks_uri", jwks_uri),
        configuration_endpoint=str(body.get("configuration_endpoint") or f"{RISC_API}/stream"),
        status_endpoint=str(body.get("status_endpoint") or f"{RISC_API}/stream/status"),
        verification_endpoint=str(body.get("verification_endpoint") or f"{RISC_API}/stream:verify"),
    )
    with _lock:
        _config = (time.monotonic(), uri, config)
    return config


def _fetch_keys(jwks_uri: str) -> dict[str, Any]:
    body = _get_json(jwks_uri, what="Google's RISC signing keys (jwks_uri)")
    keys = body.get("keys")
    if not isinstance(keys, list):
        raise RiscUnavailable("Google's RISC JWKS holds no 'keys' list.")
    found = {}
    for key in keys:
        if isinstance(key, dict) and isinstance(key.get("kid"), str):
            found[key["kid"]] = key
    with _lock:
        _jwks[jwks_uri] = (time.monotonic(), found)
    return found


def signing_key(*, jwks_uri: str, kid: str) -> jwt.PyJWK:
    """The public key ``kid`` of the JWKS, fetched again once when it is not (or no longer) there."""
    ttl = float(oauth_settings.GOOGLE_RISC_JWKS_TTL)
    with _lock:
        cached = _jwks.get(jwks_uri)
    age = time.monotonic() - cached[0] if cached else None
    keys = cached[1] if cached and age < ttl else None
    if keys is None or (kid not in keys and age >= REFETCH_INTERVAL):
        # Google rotates its keys: an unknown kid is worth one fresh look, not more.
        keys = _fetch_keys(jwks_uri)
    if kid not in keys:
        raise RiscTokenRejected(f"unknown_key: no key '{kid[:64]}' in Google's RISC JWKS")
    try:
        return jwt.PyJWK(keys[kid], algorithm="RS256")
    except jwt.PyJWTError:
        raise RiscTokenRejected("unknown_key: the JWKS key is not a usable RS256 key") from None


def security_event_token_decode(
    token: str, *, audiences: list[str], now: float | None = None
) -> dict[str, Any]:
    """The verified claims of a security event token; raises :class:`RiscTokenRejected` (bad
    token) or :class:`RiscUnavailable` (Google's keys unreachable)."""
    if not audiences:
        raise RiscTokenRejected("no_audience: no OAuth client id is configured to accept events for")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise RiscTokenRejected("malformed: the body is not a signed JWT") from None
    if header.get("alg") != "RS256":
        raise RiscTokenRejected("bad_algorithm: only RS256 tokens are accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise RiscTokenRejected("malformed: the token header names no key (kid)")
    config = risc_configuration()
    key = signing_key(jwks_uri=config.jwks_uri, kid=kid)
    try:
        claims = jwt.decode(
            token, key=key, algorithms=["RS256"], audience=audiences, issuer=config.issuer,
            # Security event tokens have no exp: age is bounded by iat below.
            options={"verify_exp": False, "require": ["iss", "aud", "iat", "jti", "events"]},
        )
    except jwt.InvalidSignatureError:
        raise RiscTokenRejected("bad_signature: the signature does not match Google's key") from None
    except jwt.InvalidAudienceError:
        raise RiscTokenRejected("wrong_audience: the token is not addressed to our OAuth client") from None
    except jwt.InvalidIssuerError:
        raise RiscTokenRejected("wrong_issuer: the token was not issued by Google's RISC issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise RiscTokenRejected(f"malformed: the token has no '{exc.claim}' claim") from None
    except jwt.PyJWTError as exc:
        raise RiscTokenRejected(f"malformed: {type(exc).__name__}") from None
    iat = claims.get("iat")
    current = time.time() if now is None else now
    if not isinstance(iat, (int, float)):
        raise RiscTokenRejected("malformed: 'iat' is not a number")
    if iat > current + FUTURE_SKEW:
        raise RiscTokenRejected("issued_in_future: 'iat' is ahead of this server's clock")
    if iat < current - float(oauth_settings.GOOGLE_RISC_MAX_AGE):
        raise RiscTokenRejected("too_old: 'iat' is older than GOOGLE_RISC_MAX_AGE")
    if not isinstance(claims.get("events"), dict) or not claims["events"]:
        raise RiscTokenRejected("malformed: 'events' is not a non-empty object")
    if not isinstance(claims.get("jti"), str) or not claims["jti"] or len(claims["jti"]) > 255:
        raise RiscTokenRejected("malformed: 'jti' is not a string of at most 255 characters")
    return claims


# --- the RISC API (oauth_risc_register) ------------------------------------------------------------
class RiscApiError(Exception):
    """A call to the RISC API failed; the message says what to check."""


def service_account_token(*, key_file: str, now: float | None = None) -> str:
    """A JWT signed by the service account's key, the bearer credential of the RISC API."""
    path = Path(key_file)
    try:
        data = json.loads(path.read_text())
        email, key_id, private_key = data["client_email"], data["private_key_id"], data["private_key"]
    except FileNotFoundError:
        raise RiscApiError(
            f"GOOGLE_RISC_SERVICE_ACCOUNT_FILE={key_file!r} does not exist. Download the service "
            "account's JSON key (docs/risc.md) and point the variable at it."
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise RiscApiError(
            f"GOOGLE_RISC_SERVICE_ACCOUNT_FILE={key_file!r} is not a service-account JSON key "
            "(client_email, private_key_id, private_key). Create a JSON key for the service "
            "account in Google Cloud Console (docs/risc.md)."
        ) from None
    issued = int(time.time() if now is None else now)
    claims = {"iss": email, "sub": email, "aud": RISC_API_AUDIENCE, "iat": issued,
              "exp": issued + 3600}
    try:
        return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": key_id})
    except (ValueError, TypeError, jwt.PyJWTError):
        raise RiscApiError(
            f"The private key in GOOGLE_RISC_SERVICE_ACCOUNT_FILE={key_file!r} cannot sign "
            "(not an RSA key in PEM form)."
        ) from None


def _call(method: str, url: str, *, key_file: str, body: dict | None = None) -> dict[str, Any]:
    url = validate_endpoint_url("RISC API endpoint", url)
    headers = {"Authorization": f"Bearer {service_account_token(key_file=key_file)}",
               "Accept": "application/json"}
    try:
        response = transport.send(method, url, json=body, headers=headers, allow_redirects=False)
    except requests.RequestException as exc:
        raise RiscApiError(
            f"Could not reach the RISC API at {transport.endpoint_host(url)} "
            f"({type(exc).__name__}). Check this server's access to Google."
        ) from None
    if response.status_code >= 300:
        error = transport.parse_error(response)
        hint = {
            401: "The service-account key was refused: create a new JSON key.",
            403: "The service account lacks the 'RISC Configuration Admin' role, or the RISC API "
                 "is not enabled in the project (docs/risc.md).",
            404: "The RISC API does not know this stream yet: register first "
                 "(manage.py oauth_risc_register).",
        }.get(response.status_code, "See docs/risc.md.")
        raise RiscApiError(
            f"The RISC API refused {method} {url.rsplit('/', 1)[-1]} (HTTP {response.status_code}, "
            f"{error.error}: {error.description}). {hint}"
        )
    try:
        return response.json() if response.content else {}
    except ValueError:
        return {}


def stream_update(*, key_file: str, receiver_url: str, events: list[str]) -> dict[str, Any]:
    """Register (or update) our receiver and the events we want (``stream:update``)."""
    config = risc_configuration()
    body = {
        "delivery": {"delivery_method": PUSH_DELIVERY, "url": receiver_url},
        "events_requested": [EVENT_TYPES[name] for name in events],
    }
    return _call("POST", config.configuration_endpoint + ":update", key_file=key_file, body=body)


def stream_get(*, key_file: str) -> dict[str, Any]:
    return _call("GET", risc_configuration().configuration_endpoint, key_file=key_file)


def stream_status(*, key_file: str) -> dict[str, Any]:
    return _call("GET", risc_configuration().status_endpoint, key_file=key_file)


def stream_status_set(*, key_file: str, enabled: bool) -> dict[str, Any]:
    body = {"status": "enabled" if enabled else "disabled"}
    return _call("POST", risc_configuration().status_endpoint + ":update", key_file=key_file,
                 body=body)


def stream_verify(*, key_file: str, state: str) -> dict[str, Any]:
    """Ask Google to send a ``verification`` event carrying ``state`` to our receiver."""
    return _call("POST", risc_configuration().verification_endpoint, key_file=key_file,
                 body={"state": state})
