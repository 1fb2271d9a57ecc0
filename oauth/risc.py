"""Google's security events (Cross-Account Protection, RISC): what each one does to a grant.

``POST /api/oauth/google/risc`` hands the token to :func:`security_event_receive`, which verifies
it (:mod:`oauth.google.risc`), records it once by its ``jti`` and applies it in one transaction:

* ``tokens-revoked`` (the owner removed this app's access, or Google did), ``token-revoked`` (the
  refresh token whose SHA-512 Google sends) and ``account-disabled`` make the grant ``expired``
  with a remediation naming what Google reported; its cached access token is dropped;
* ``account-enabled`` brings a grant that ``account-disabled`` had stopped back to ``connected``;
* ``sessions-revoked`` and ``account-credential-change-required`` leave the grant as it is (the
  refresh token still works) but are recorded and told to a person;
* ``verification`` is recorded so the operator can see that the stream works.

A grant is found by Google's subject (``iss`` + ``sub`` from the id_token at consent). Each applied
event is audited with the event id (``jti``); ``oauth.notifications`` tells people about it.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .app_settings import oauth_settings
from .exceptions import SecurityEventRejected, SecurityEventUnavailable
from .google import risc as google_risc
from .models import (
    AuditAction,
    CredentialState,
    GoogleCredential,
    OAuthClient,
    SecurityEvent,
)
from .services import audit_record
from .tokens import access_token_cache_invalidate

logger = logging.getLogger("oauth.risc")

ACTOR = "process:google-risc"
#: RFC 8935 error codes for the reasons :mod:`oauth.google.risc` gives.
_ERR_BY_REASON = {
    "bad_signature": "invalid_key",
    "unknown_key": "invalid_key",
    "bad_algorithm": "invalid_key",
    "wrong_audience": "invalid_audience",
    "no_audience": "invalid_audience",
    "wrong_issuer": "invalid_issuer",
}

_RECONNECT = "Reconnect the account from the dashboard (/) with 'Connect a Google account'."
_DISABLED_REASONS = {
    "hijacking": "because it was hijacked",
    "bulk-account": "for bulk-account (spam) activity",
}


def _now() -> dt.datetime:
    return timezone.now()


def risc_audiences() -> list[str]:
    """The client ids events may be addressed to: the admin's, GOOGLE_OAUTH_CLIENT_ID's, and
    GOOGLE_RISC_CLIENT_IDS."""
    ids = list(OAuthClient.objects.exclude(client_id="").values_list("client_id", flat=True))
    ids.append(oauth_settings.GOOGLE_OAUTH_CLIENT_ID)
    ids.extend(oauth_settings.GOOGLE_RISC_CLIENT_IDS)
    return sorted({i.strip() for i in ids if i and i.strip()})


def _rejected(reason: str) -> SecurityEventRejected:
    code = reason.split(":", 1)[0]
    return SecurityEventRejected(reason, error=_ERR_BY_REASON.get(code, "invalid_request"))


def _same_issuer(a: str, b: str) -> bool:
    """Google writes its issuer 'https://accounts.google.com' in id_tokens and
    'https://accounts.google.com/' in security events (and 'accounts.google.com' in old tokens)."""

    def norm(value: str) -> str:
        value = (value or "").strip().rstrip("/")
        return value.split("://", 1)[-1]

    return norm(a) == norm(b)


def _decode_hash(value: str) -> bytes | None:
    """The 64 bytes of a SHA-512 as Google may write it: hex, base64 or base64url."""
    value = (value or "").strip()
    if len(value) == 128:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 64:
            return raw
    return None


def _find_credentials(event: str, subject: dict[str, Any]) -> list[GoogleCredential]:
    """The stored grants an event's subject names, locked for the update."""
    rows = GoogleCredential.objects.select_for_update()
    if event == "token-revoked":
        digest = _decode_hash(str(subject.get("token", "")))
        if digest is None:
            raise _rejected("malformed: token-revoked carries no SHA-512 token hash")
        return list(rows.filter(refresh_token_fingerprint=digest.hex()))
    sub = subject.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _rejected(f"malformed: the {event} event's subject has no 'sub'")
    issuer = str(subject.get("iss", ""))
    return [c for c in rows.filter(google_subject=sub) if _same_issuer(c.google_issuer, issuer)]


@dataclass
class EventEffect:
    """What an event does to a grant: the state it leaves, what the operator reads, a notice."""

    state: str | None
    code: str = ""
    detail: str = ""
    remediation: str = ""


def _effect(event: str, body: dict[str, Any], credential: GoogleCredential) -> EventEffect:
    if event in ("tokens-revoked", "token-revoked"):
        what = (
            "Google reports that this app's access to the account was revoked (by its owner, an "
            "administrator or Google; security event tokens-revoked)"
            if event == "tokens-revoked"
            else "Google reports that the stored refresh token was revoked (security event "
            "token-revoked)"
        )
        text = f"{what}. {_RECONNECT}"
        return EventEffect(CredentialState.EXPIRED, f"risc_{event}", text, text)
    if event == "account-disabled":
        reason = str(body.get("reason") or "")
        why = _DISABLED_REASONS.get(reason, f"(reason: {reason})" if reason else "")
        text = (
            f"Google disabled the account {why}".rstrip() + " (security event account-disabled). "
            "The account's owner must recover it at https://accounts.google.com; "
            "then reconnect it from the dashboard (/) if it does not recover by itself."
        )
        return EventEffect(CredentialState.EXPIRED, "risc_account-disabled", text[:500], text)
    if event == "account-enabled":
        if credential.last_error_code == "risc_account-disabled":
            return EventEffect(
                CredentialState.CONNECTED,
                remediation="Google enabled the account again (security event account-enabled); "
                "the grant is in use again.",
            )
        return EventEffect(None, remediation="Google reports the account is enabled.")
    if event == "sessions-revoked":
        return EventEffect(
            None,
            remediation="Google ended the account's sessions (security event sessions-revoked, "
            "e.g. after a password change). The grant still works; if its owner did not expect "
            "this, have them check https://myaccount.google.com/security.",
        )
    if event == "account-credential-change-required":
        return EventEffect(
            None,
            remediation="Google asks the account's owner to change the password (security event "
            "account-credential-change-required): suspicious activity was seen. The grant still "
            "works; have them change it at https://myaccount.google.com/security.",
        )
    return EventEffect(None)


@dataclass
class ReceiveResult:
    jti: str
    events: list[dict[str, Any]] = field(default_factory=list)


def _apply(
    *, event: str, body: dict[str, Any], jti: str, now: dt.datetime
) -> tuple[str, list[GoogleCredential]]:
    """Apply one event of an accepted token; returns its outcome and the grants it touched."""
    if event == "verification":
        logger.info("Google's RISC stream verification event received")
        return "verified", []
    subject = body.get("subject")
    if not isinstance(subject, dict):
        raise _rejected(f"malformed: the {event} event has no subject")
    credentials = _find_credentials(event, subject)
    if not credentials:
        logger.info("Security event %s names no stored account", event)
        return "no_matching_account", []
    for credential in credentials:
        effect = _effect(event, body, credential)
        before = credential.effective_state(client_configured=True)
        fields = credential.mark_security_event(
            now=now, event=event, state=effect.state, code=effect.code, detail=effect.detail
        )
        # oauth.notifications tells people once, with what Google reported.
        credential._security_event = {
            "event": event, "event_id": jti, "reason": str(body.get("reason") or ""),
            "remediation": effect.remediation,
        }
        credential.save(update_fields=fields)
        after = credential.effective_state(client_configured=True)
        audit_record(
            action=AuditAction.SECURITY_EVENT,
            actor=ACTOR,
            credential=credential,
            outcome=event,
            detail={"event_id": jti, "reason": body.get("reason") or "", "state_before": before,
                    "state": after},
        )
        if effect.state == CredentialState.EXPIRED:
            transaction.on_commit(lambda c=credential: access_token_cache_invalidate(credential=c))
        logger.warning("Security event %s from Google applied to %s (%s -> %s)",
                       event, credential, before, after)
    return ("expired" if any(c.state == CredentialState.EXPIRED for c in credentials)
            else "recorded"), credentials


def security_event_receive(*, token: str) -> ReceiveResult:
    """Verify a security event token and apply it once. Raises :class:`SecurityEventRejected`
    (nothing changed) or :class:`SecurityEventUnavailable` (Google's keys unreachable)."""
    try:
        claims = google_risc.security_event_token_decode(token, audiences=risc_audiences())
    except google_risc.RiscTokenRejected as exc:
        logger.warning("Security event token refused: %s", exc.reason)
        raise _rejected(exc.reason) from None
    except google_risc.RiscUnavailable as exc:
        logger.warning("Security event token could not be checked: %s", exc)
        raise SecurityEventUnavailable() from None
    jti = claims["jti"]
    now = _now()
    events = [(google_risc.SHORT_NAMES.get(uri, ""), uri, body) for uri, body in claims["events"].items()]
    result = ReceiveResult(jti=jti)
    try:
        with transaction.atomic():
            record = SecurityEvent.objects.create(
                jti=jti,
                event_type=(next((name for name, _, _ in events if name), events[0][1]))[:64],
                received_at=now,
                issued_at=dt.datetime.fromtimestamp(claims["iat"], tz=dt.timezone.utc),
            )
            first_subject: dict[str, Any] = {}
            for name, uri, body in events:
                if not isinstance(body, dict):
                    raise _rejected("malformed: an event's body is not an object")
                if not name:
                    result.events.append({"event": uri[:200], "outcome": "ignored"})
                    continue
                if name == "verification":
                    state = body.get("state")
                    result.events.append({"event": name, "outcome": "verified",
                                          "state": str(state)[:200] if state is not None else ""})
                    continue
                outcome, credentials = _apply(event=name, body=body, jti=jti, now=now)
                result.events.append({"event": name, "outcome": outcome,
                                      "accounts": [c.email for c in credentials]})
                if credentials and record.credential_id is None:
                    record.credential = credentials[0]
                subject = body.get("subject") or {}
                if not first_subject and isinstance(subject, dict):
                    first_subject = subject
            record.issuer = str(first_subject.get("iss", ""))[:255]
            record.subject = str(first_subject.get("sub", ""))[:255]
            record.outcome = ",".join(e["outcome"] for e in result.events)[:64]
            record.detail = {"events": result.events}
            record.save(update_fields=["issuer", "subject", "credential", "outcome", "detail"])
    except IntegrityError:
        logger.warning("Security event token replayed (jti already handled)")
        raise _rejected("replayed: this event (jti) was already handled") from None
    return result


def stream_verified() -> dict[str, Any]:
    """Whether Google's RISC stream has delivered a verification event, and when last."""
    last = (
        SecurityEvent.objects.filter(event_type="verification")
        .order_by("-received_at").values_list("received_at", flat=True).first()
    )
    return {"stream_verified": last is not None, "last_verification_at": last}


# --- registering the receiver with Google (manage.py oauth_risc_register) ------------------------
#: The events this app asks Google for (verification events always come).
EVENTS_REQUESTED = [
    "sessions-revoked", "tokens-revoked", "token-revoked", "account-disabled", "account-enabled",
    "account-credential-change-required", "verification",
]


def risc_receiver_url(*, url: str | None = None) -> str:
    """Where Google should push events: ``url``, else the dashboard's origin + the receiver path."""
    from .preflight import dashboard_url

    return url or dashboard_url().rstrip("/") + "/api/oauth/google/risc"


def _key_file() -> str:
    from .exceptions import NotConfigured

    key_file = (oauth_settings.GOOGLE_RISC_SERVICE_ACCOUNT_FILE or "").strip()
    if not key_file:
        raise NotConfigured(
            "GOOGLE_RISC_SERVICE_ACCOUNT_FILE is not set. Create a service account with the role "
            "'RISC Configuration Admin', download its JSON key and set the variable to its path "
            "(docs/risc.md)."
        )
    return key_file


def risc_stream_register(*, url: str | None = None) -> dict[str, Any]:
    """Register our receiver for EVENTS_REQUESTED and enable the stream."""
    receiver = risc_receiver_url(url=url)
    key_file = _key_file()
    google_risc.stream_update(key_file=key_file, receiver_url=receiver, events=EVENTS_REQUESTED)
    return {"receiver": receiver, **risc_stream_status()}


def risc_stream_status() -> dict[str, Any]:
    key_file = _key_file()
    stream = google_risc.stream_get(key_file=key_file)
    status = google_risc.stream_status(key_file=key_file)
    return {
        "receiver": ((stream.get("delivery") or {}).get("url") or ""),
        "events_requested": [
            google_risc.SHORT_NAMES.get(uri, uri) for uri in stream.get("events_requested") or []
        ],
        "status": status.get("status", ""),
        **stream_verified(),
    }


def risc_stream_disable() -> dict[str, Any]:
    return google_risc.stream_status_set(key_file=_key_file(), enabled=False)


def risc_stream_verify(*, state: str) -> None:
    google_risc.stream_verify(key_file=_key_file(), state=state)


def risc_verification_received(*, state: str) -> bool:
    """Whether a verification event carrying ``state`` has arrived."""
    return any(
        any(e.get("state") == state for e in (row.get("events") or []))
        for row in SecurityEvent.objects.filter(event_type="verification").values_list("detail", flat=True)
    )
