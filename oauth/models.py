"""Models of the OAuth app: fields and pure checks only (no HTTP, no hidden work in ``save()``).

Secrets live only in :class:`~oauth.fields.EncryptedSecretField` columns; the ``credentials`` JSON
of ``google_oauth_credentials`` holds non-secret metadata (``client_id`` in clear, as the runbook's
``psql`` check expects).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT
from django.db.models.functions import MD5

from . import scopes as scope_catalogue
from .fields import EncryptedSecretField

PRIMARY_CREDENTIAL_KEY = "google"
#: Google revokes a refresh token left unused for six months.
GOOGLE_IDLE_LIMIT = dt.timedelta(days=183)


class Scope(models.Model):
    """A Google OAuth scope known to the project (seeded from ``oauth/scopes.py``)."""

    uri = models.CharField(max_length=255, unique=True)
    short_name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=255, blank=True)
    implies = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="implied_by",
        help_text="Scopes that holding this one also grants (gmail.modify grants gmail.readonly).",
    )

    class Meta:
        ordering = ["uri"]

    def __str__(self) -> str:
        return self.short_name


class Feature(models.Model):
    """Something a connector does, and the scopes any one of which allows it."""

    key = models.CharField(max_length=100, unique=True)
    connector = models.CharField(max_length=50)
    description = models.CharField(max_length=255, blank=True)
    satisfied_by = models.ManyToManyField(Scope, related_name="features")

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class OAuthClient(models.Model):
    """The Google OAuth client, editable in the admin; it wins over the GOOGLE_OAUTH_* env vars."""

    key = models.CharField(max_length=50, unique=True, default="google", editable=False)
    client_id = models.CharField(max_length=255)
    client_secret = EncryptedSecretField()
    redirect_uri = models.URLField(
        max_length=500, blank=True,
        help_text="Exactly as registered in Google Cloud Console; empty = this server's callback.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "OAuth client"
        verbose_name_plural = "OAuth client"

    def __str__(self) -> str:
        return self.client_id


class CredentialState(models.TextChoices):
    """The health of a stored grant as last observed ('not_configured' means no row at all)."""

    CONNECTED = "connected", "Connected"
    MISSING_SCOPE = "missing_scope", "Missing scope"
    EXPIRED = "expired", "Expired or revoked"
    REFRESH_FAILING = "refresh_failing", "Refresh failing"
    MISCONFIGURED = "misconfigured", "Client misconfigured"
    REDIRECT_URI_MISMATCH = "redirect_uri_mismatch", "Redirect URI mismatch"


class CredentialSource(models.TextChoices):
    CONSENT = "consent", "Consent flow"
    ENV_IMPORT = "env_import", "Imported from env"


def refresh_token_fingerprint(token: str | None) -> str:
    """SHA-512 (hex) of a refresh token: how a RISC ``token-revoked`` event is matched."""
    if not token:
        return ""
    return hashlib.sha512(token.encode("utf-8")).hexdigest()


#: States no refresh can leave: only a person (consent, a fixed client) can.
DEAD_STATES = (CredentialState.EXPIRED, CredentialState.MISCONFIGURED)


def primary_to_front(rows: list, *, primary: int = 0) -> list:
    """``rows`` (tuples read in pk order, column ``primary`` telling the primary's row) in the
    order of :meth:`GoogleCredentialQuerySet.primary_first`: the primary's row moved to the front."""
    for position, row in enumerate(rows):
        if row[primary]:
            if position:
                rows.insert(0, rows.pop(position))
            break
    return rows


#: scopes digest -> the scope list it names, parsed. A digest names one list for good, so the map
#: is never stale; it holds one entry per distinct list ever seen (a handful).
_scope_lists: dict[str, tuple[str, ...] | None] = {}


def recorded_scopes(raw: str | None) -> tuple[str, ...] | None:
    """The scopes a row's metadata lists (its JSON text), sorted; None when it lists none."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return tuple(sorted(value)) if isinstance(value, list) else None


def recorded_scope_lists(
    digests: Iterable[str | None],
) -> dict[str | None, tuple[str, ...] | None]:
    """The metadata's scope list (:func:`recorded_scopes`) of each
    :attr:`GoogleCredential.scopes_digest` in ``digests``: from memory, and in one query for those
    this process has not seen yet. None maps to None (a row whose metadata lists no scopes), as
    does a digest no row holds any more."""
    found: dict[str | None, tuple[str, ...] | None] = {None: None}
    missing = []
    for digest in digests:
        if digest is None:
            continue
        if digest in _scope_lists:
            found[digest] = _scope_lists[digest]
        else:
            missing.append(digest)
            found[digest] = None
    if missing:
        for digest, text in (
            GoogleCredential.objects.filter(scopes_digest__in=missing).order_by()
            .values_list("scopes_digest").annotate(text=models.Min(KT("credentials__scopes")))
        ):
            _scope_lists[digest] = found[digest] = recorded_scopes(text)
    return found


class GoogleCredentialQuerySet(models.QuerySet):
    def primary_first(self) -> GoogleCredentialQuerySet:
        """The order of every account list: the primary, then the others as they were connected
        (pk). Lists of thousands read their rows in pk order instead, with no sort, and move the
        primary up with :func:`primary_to_front` (:meth:`with_judged_columns`)."""
        is_primary = models.Case(
            models.When(credential_key=PRIMARY_CREDENTIAL_KEY, then=0),
            default=1,
            output_field=models.IntegerField(),
        )
        return self.annotate(_primary_order=is_primary).order_by("_primary_order", "pk")

    def with_judged_columns(self) -> GoogleCredentialQuerySet:
        """In pk order, with what :func:`operator_state` reads beside the stored state as plain
        columns (``scopes_digest`` for :func:`recorded_scope_lists`, ``revoked``, ``own_secret``)
        and ``primary`` for :func:`primary_to_front`. For lists that judge thousands of rows
        without a model instance each: PostgreSQL reads them along the primary key's index, where
        ordering them by an expression would sort them all (at 3,000 accounts, more than the rest
        of the query)."""
        return self.order_by("pk").annotate(
            primary=models.ExpressionWrapper(
                Q(credential_key=PRIMARY_CREDENTIAL_KEY), output_field=models.BooleanField()
            ),
            revoked=models.ExpressionWrapper(
                Q(revoked_at__isnull=False), output_field=models.BooleanField()
            ),
            own_secret=models.ExpressionWrapper(
                Q(client_secret__isnull=False), output_field=models.BooleanField()
            ),
        )

    def lacking_feature(self, feature_key: str) -> GoogleCredentialQuerySet:
        """Credentials holding none of the scopes that satisfy ``feature_key``."""
        return self.exclude(granted_scopes__features__key=feature_key)

    def lacking_scope(self, scope: str) -> GoogleCredentialQuerySet:
        """Credentials holding neither ``scope`` nor a scope that implies it."""
        uri = scope_catalogue.normalize_scope(scope)
        return self.exclude(
            Q(granted_scopes__uri=uri) | Q(granted_scopes__implies__uri=uri)
        )

    def due_for_heartbeat(self, *, now: dt.datetime) -> GoogleCredentialQuerySet:
        """The heartbeat due rule: live grants neither refreshed nor used within
        OAUTH_HEARTBEAT_WINDOW, least recently refreshed first."""
        from .app_settings import oauth_settings

        cutoff = now - dt.timedelta(seconds=float(oauth_settings.OAUTH_HEARTBEAT_WINDOW))
        return (
            self.exclude(state__in=DEAD_STATES)
            .filter(revoked_at__isnull=True)
            .filter(Q(last_refreshed_at__isnull=True) | Q(last_refreshed_at__lte=cutoff))
            .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=cutoff))
            .order_by("last_refreshed_at", "pk")
        )


def operator_state(
    *, stored: str, revoked: bool, own_client_secret: bool, client_configured: bool,
    lacks_required_scope: bool,
) -> str:
    """The rule behind :meth:`GoogleCredential.effective_state`, on plain values (so the status
    API can judge thousands of rows without building a model instance for each)."""
    if revoked:
        return CredentialState.EXPIRED
    if not own_client_secret and not client_configured:
        return CredentialState.MISCONFIGURED
    if stored == CredentialState.CONNECTED and lacks_required_scope:
        return CredentialState.MISSING_SCOPE
    return str(stored)


class GoogleCredential(models.Model):
    """One Google account's grant. The first connected account is the primary (key 'google')."""

    #: 'google' for the primary, 'google:<email>' for the others: an email may be 254 characters.
    credential_key = models.CharField(max_length=300, unique=True)
    credentials = models.JSONField(
        default=dict, blank=True,
        help_text="Non-secret metadata: client_id, token_uri, email, scopes. Never a secret.",
    )
    #: The md5 of the metadata's scope list (its JSON text; NULL without one), kept by the database
    #: on every write. Lists that judge thousands of rows read these 32 characters instead of taking
    #: each row's JSON apart, and each distinct list once (:func:`recorded_scope_lists`).
    scopes_digest = models.GeneratedField(
        expression=MD5(KT("credentials__scopes")), output_field=models.CharField(max_length=32),
        db_persist=True,
    )
    email = models.EmailField(blank=True, default="")
    source = models.CharField(
        max_length=20, choices=CredentialSource.choices, default=CredentialSource.CONSENT
    )
    client_secret = EncryptedSecretField(
        help_text="Only for a credential issued to another client than the configured one."
    )
    refresh_token = EncryptedSecretField()
    access_token = EncryptedSecretField()
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    granted_scopes = models.ManyToManyField(Scope, blank=True, related_name="credentials")
    state = models.CharField(
        max_length=32, choices=CredentialState.choices, default=CredentialState.CONNECTED
    )
    consented_at = models.DateTimeField(null=True, blank=True)
    refresh_token_issued_at = models.DateTimeField(null=True, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_probed_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error_code = models.CharField(max_length=64, blank=True, default="")
    last_error_detail = models.CharField(max_length=500, blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(default=0)
    #: Bumped whenever the grant's tokens change (refresh, re-consent, revoke): a cached access
    #: token is served only while the version it was cached under is still the stored one.
    token_version = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)
    #: Google's name for the account (the id_token's ``iss`` and ``sub`` at consent): how a
    #: security event (RISC) names it. Empty for a grant connected before it was recorded.
    google_issuer = models.CharField(max_length=255, blank=True, default="")
    google_subject = models.CharField(max_length=255, blank=True, default="", db_index=True)
    #: SHA-512 (hex) of the stored refresh token, never the token: a RISC ``token-revoked`` event
    #: names the token it revoked by this hash. Kept right by the transitions that store a token.
    refresh_token_fingerprint = models.CharField(
        max_length=128, blank=True, default="", db_index=True, editable=False
    )
    #: The last security event Google sent about the account (``tokens-revoked``, ...) and when.
    last_security_event = models.CharField(max_length=64, blank=True, default="")
    last_security_event_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GoogleCredentialQuerySet.as_manager()

    class Meta:
        db_table = "google_oauth_credentials"
        verbose_name = "Google credential"
        constraints = [
            models.UniqueConstraint(
                fields=["email"], condition=~Q(email=""), name="unique_credential_email"
            ),
        ]
        # No index on a column every refresh writes (last_refreshed_at, updated_at, the token
        # columns): PostgreSQL then updates the row in place on its page (a HOT update, with
        # room left by the table's fillfactor: migration 0008) instead of adding an entry to
        # every index of the table, on each refresh and each heartbeat. The due-for-heartbeat
        # selection reads the whole table once a sweep either way.
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return self.email or self.credential_key

    @classmethod
    def from_db(cls, db, field_names, values):
        """Remember what the row said when loaded, so that ``oauth.notifications`` can tell a
        transition (connected -> expired, ...) when it is saved, whichever code saved it."""
        instance = super().from_db(db, field_names, values)
        loaded = instance.__dict__
        instance._loaded_notice = (
            (loaded["state"], loaded["revoked_at"], (loaded["credentials"] or {}).get("scopes"))
            if all(name in loaded for name in ("state", "revoked_at", "credentials"))
            else None
        )
        return instance

    # --- pure checks --------------------------------------------------------------------------
    @property
    def is_primary(self) -> bool:
        return self.credential_key == PRIMARY_CREDENTIAL_KEY

    @property
    def client_id(self) -> str:
        return (self.credentials or {}).get("client_id", "")

    def granted_scope_uris(self) -> list[str]:
        """Granted scope URIs (uses the prefetch cache when there is one)."""
        return sorted(scope.uri for scope in self.granted_scopes.all())

    def missing_scopes(self, required: Iterable[str] | None = None) -> list[str]:
        """Required scopes this grant does not cover (implications counted)."""
        if required is None:
            from .app_settings import oauth_settings

            required = oauth_settings.OAUTH_REQUIRED_SCOPES
        return scope_catalogue.missing_scopes(granted=self.granted_scope_list(), required=required)

    def granted_scope_list(self) -> list[str]:
        """Granted scope URIs from the metadata kept beside them (no query), else the M2M."""
        recorded = (self.credentials or {}).get("scopes")
        if isinstance(recorded, list):
            return recorded
        return self.granted_scope_uris()

    def effective_state(
        self, *, client_configured: bool | None = None, required: Iterable[str] | None = None
    ) -> str:
        """The state an operator sees: the one rule behind the status API, the dashboard, the
        admin, ``/metrics`` and ``oauth_status``.

        * a revoked grant reads ``expired``;
        * a grant with no client secret of its own while no OAuth client is configured at all
          reads ``misconfigured`` (it cannot be refreshed until one is);
        * a healthy grant lacking a required scope reads ``missing_scope``;
        * otherwise the stored state.

        ``client_configured``: whether an OAuth client is configured (the admin's or the env's);
        looked up when not given (pass it when judging many credentials).
        """
        if client_configured is None and self.client_secret is None:
            from .selectors import oauth_client_get_or_none

            client_configured = oauth_client_get_or_none() is not None
        return operator_state(
            stored=self.state, revoked=self.revoked_at is not None,
            own_client_secret=self.client_secret is not None,
            client_configured=bool(client_configured),
            lacks_required_scope=self.state == CredentialState.CONNECTED
            and bool(self.missing_scopes(required)),
        )

    def testing_grant_days(self, *, died_at: dt.datetime | None = None) -> int | None:
        """The 'Testing' consent-screen rule: days the grant lived when it died (invalid_grant)
        about OAUTH_TESTING_GRANT_DAYS after it was issued, else None.

        Google kills such a grant at 7 days; we notice at the next refresh, up to a heartbeat
        window later, hence the window of a day before to two days after.
        """
        from .app_settings import oauth_settings

        died_at = died_at or self.last_error_at
        issued = self.refresh_token_issued_at or self.consented_at
        if died_at is None or issued is None:
            return None
        age = died_at - issued
        limit = dt.timedelta(days=float(oauth_settings.OAUTH_TESTING_GRANT_DAYS))
        if limit - dt.timedelta(days=1) <= age <= limit + dt.timedelta(days=2):
            return round(age.total_seconds() / 86400)
        return None

    def access_token_valid(self, *, now: dt.datetime, margin: dt.timedelta) -> bool:
        """True when the stored access token stays valid for at least ``margin``."""
        return bool(
            self.access_token
            and self.access_token_expires_at
            and self.access_token_expires_at - margin > now
        )

    def last_refresh_token_use(self) -> dt.datetime | None:
        """When Google last saw the refresh token used (its idle clock starts there)."""
        candidates = [
            t for t in (self.last_refreshed_at, self.refresh_token_issued_at, self.consented_at) if t
        ]
        return max(candidates, default=None)

    def days_until_idle_limit(self, *, now: dt.datetime) -> int | None:
        """Days left before Google's six-month idle limit would revoke the refresh token."""
        last = self.last_refresh_token_use()
        if last is None:
            return None
        return (last + GOOGLE_IDLE_LIMIT - now).days

    def refresh_token_age_days(self, *, now: dt.datetime) -> int | None:
        issued = self.refresh_token_issued_at or self.consented_at
        return None if issued is None else (now - issued).days

    # --- state transitions: each sets the fields that belong together, returns what changed ----
    # The caller saves with ``save(update_fields=...)`` inside its own transaction (it knows the
    # lock it holds) and writes the audit event.
    def _clear_error(self) -> list[str]:
        self.last_error_at = None
        self.last_error_code = ""
        self.last_error_detail = ""
        self.consecutive_failures = 0
        return ["last_error_at", "last_error_code", "last_error_detail", "consecutive_failures"]

    def _set_error(self, *, now: dt.datetime, code: str, detail: str) -> list[str]:
        self.last_error_at = now
        self.last_error_code = (code or "")[:64]
        self.last_error_detail = (detail or "")[:500]
        return ["last_error_at", "last_error_code", "last_error_detail"]

    def _tokens_replaced(self) -> list[str]:
        """A cached access token of this grant must not be served any more."""
        self.token_version += 1
        return ["token_version"]

    def mark_connected(
        self, *, now: dt.datetime, access_token: str, expires_in: int | None,
        refresh_token: str | None, client_id: str, email: str, client_secret: str | None = None,
        source: str = "consent", google_issuer: str = "", google_subject: str = "",
    ) -> list[str]:
        """A person granted access (consent, or a verified import): a clean, connected grant.

        ``google_issuer``/``google_subject``: the account's id_token ``iss``/``sub`` (how Google's
        security events name it), kept when not given."""
        if refresh_token is not None:
            self.refresh_token = refresh_token
            self.refresh_token_issued_at = now
            self.refresh_token_fingerprint = refresh_token_fingerprint(refresh_token)
        if google_subject:
            self.google_issuer = google_issuer
            self.google_subject = google_subject
        self.access_token = access_token
        self.access_token_expires_at = now + dt.timedelta(seconds=expires_in) if expires_in else None
        metadata = dict(self.credentials or {})
        metadata.update({"client_id": client_id, "email": email})
        self.credentials = metadata
        self.email = email
        self.client_secret = client_secret
        self.source = source
        self.state = CredentialState.CONNECTED
        self.consented_at = now
        self.revoked_at = None
        fields = [
            "refresh_token", "refresh_token_issued_at", "refresh_token_fingerprint",
            "google_issuer", "google_subject", "access_token", "access_token_expires_at",
            "credentials", "email", "client_secret", "source", "state", "consented_at",
            "revoked_at", *self._clear_error(), *self._tokens_replaced(), "updated_at",
        ]
        return fields

    def mark_imported(
        self, *, now: dt.datetime, refresh_token: str, client_id: str, client_secret: str | None,
        email: str, imported_from: str, access_token: str | None = None,
        expires_in: int | None = None,
    ) -> None:
        """The deprecated env credential moved in (verified when ``access_token`` is given)."""
        metadata = dict(self.credentials or {})
        metadata.update({"client_id": client_id, "imported_from": imported_from})
        if email:
            metadata["email"] = email
            self.email = email
        self.credentials = metadata
        self.refresh_token = refresh_token
        self.refresh_token_fingerprint = refresh_token_fingerprint(refresh_token)
        self.client_secret = client_secret
        self.state = CredentialState.CONNECTED
        self.revoked_at = None
        self.refresh_token_issued_at = self.refresh_token_issued_at or now
        if access_token is not None:
            self.access_token = access_token
            self.access_token_expires_at = now + dt.timedelta(seconds=expires_in or 3600)
            self.last_refreshed_at = now
        self._clear_error()
        self._tokens_replaced()

    def record_refresh_success(
        self, *, now: dt.datetime, access_token: str, expires_at: dt.datetime,
        refresh_token: str | None = None,
    ) -> list[str]:
        """Google gave a new access token (and maybe a rotated refresh token): healthy again."""
        self.access_token = access_token
        self.access_token_expires_at = expires_at
        self.last_refreshed_at = now
        fields = ["access_token", "access_token_expires_at", "last_refreshed_at"]
        if refresh_token:
            self.refresh_token = refresh_token
            self.refresh_token_issued_at = now
            self.refresh_token_fingerprint = refresh_token_fingerprint(refresh_token)
            fields += ["refresh_token", "refresh_token_issued_at", "refresh_token_fingerprint"]
        if self.state in (CredentialState.REFRESH_FAILING, CredentialState.MISCONFIGURED):
            self.state = CredentialState.CONNECTED
            fields.append("state")
        if self.last_error_code or self.consecutive_failures or self.last_error_at:
            fields += self._clear_error()
        return [*fields, "updated_at"]

    def record_refresh_failure(
        self, *, now: dt.datetime, state: str, code: str, detail: str
    ) -> list[str]:
        """A failure no retry fixes: the grant is dead (``expired``) or the client refused
        (``misconfigured``)."""
        self.state = state
        self.consecutive_failures += 1
        fields = ["state", "consecutive_failures", *self._set_error(now=now, code=code, detail=detail)]
        if state == CredentialState.EXPIRED:
            fields += self._tokens_replaced()
        return [*fields, "updated_at"]

    def record_transient_failure(
        self, *, now: dt.datetime, code: str, detail: str, failures_before_failing: int
    ) -> list[str]:
        """A failure that may pass: counted; only repeated ones show ``refresh_failing``."""
        self.consecutive_failures += 1
        fields = ["consecutive_failures", *self._set_error(now=now, code=code, detail=detail)]
        if self.consecutive_failures >= failures_before_failing and self.state in (
            CredentialState.CONNECTED, CredentialState.MISSING_SCOPE,
        ):
            self.state = CredentialState.REFRESH_FAILING
            fields.append("state")
        return [*fields, "updated_at"]

    def mark_revoked(self, *, now: dt.datetime, actor: str) -> list[str]:
        """Revoked at Google: the access token is forgotten; the refresh token's ciphertext stays
        so that every later use says "was revoked" and a retry can ask Google again."""
        self.access_token = None
        self.access_token_expires_at = None
        self.state = CredentialState.EXPIRED
        self.revoked_at = now
        fields = [
            "access_token", "access_token_expires_at", "state", "revoked_at",
            *self._set_error(
                now=now, code="revoked",
                detail=f"Revoked at Google by {actor}. Reconnect the account from the dashboard "
                "to use it again.",
            ),
            *self._tokens_replaced(),
        ]
        return [*fields, "updated_at"]

    def mark_security_event(
        self, *, now: dt.datetime, event: str, state: str | None = None, code: str = "",
        detail: str = "",
    ) -> list[str]:
        """Google reported a security event (RISC) about the account.

        ``state``: the state it leaves the grant in (None: unchanged); ``code``/``detail``: what
        the operator reads (last error and remediation). A grant that dies forgets its access
        token; one Google enabled again (``state`` connected) drops the event's error.
        """
        self.last_security_event = event[:64]
        self.last_security_event_at = now
        fields = ["last_security_event", "last_security_event_at"]
        if state is not None and state != self.state:
            self.state = state
            fields.append("state")
        if state == CredentialState.EXPIRED:
            self.access_token = None
            self.access_token_expires_at = None
            fields += ["access_token", "access_token_expires_at", *self._tokens_replaced()]
        if code:
            fields += self._set_error(now=now, code=code, detail=detail)
        elif state == CredentialState.CONNECTED:
            fields += self._clear_error()
        return [*fields, "updated_at"]

    def apply_probe_results(self, *, now: dt.datetime, results: dict[str, str]) -> list[str]:
        """API probe results (``{"gmail": "ok", "calendar": "missing_scope"}``): a 403 turns a
        connected grant ``missing_scope``; a clean probe of every product heals it."""
        self.last_probed_at = now
        fields = ["last_probed_at"]
        refused = sorted(api for api, outcome in results.items() if outcome == "missing_scope")
        all_ok = bool(results) and all(outcome == "ok" for outcome in results.values())
        if refused and self.state == CredentialState.CONNECTED:
            self.state = CredentialState.MISSING_SCOPE
            fields += ["state", *self._set_error(
                now=now, code="insufficient_scope",
                detail=f"Google refused the {', '.join(refused)} API with 403 (insufficient scope "
                "or API disabled). Reconnect the account from the dashboard (/) and grant every "
                "requested scope.",
            )]
        elif all_ok and self.state == CredentialState.MISSING_SCOPE:
            self.state = CredentialState.CONNECTED
            fields += ["state", *self._clear_error()]
        return [*fields, "updated_at"] if len(fields) > 1 else fields


class OAuthState(models.Model):
    """A pending consent: single use, bound to the staff session that started it.

    Only a digest of the state and of the session key is stored; the PKCE verifier is encrypted.
    """

    state_digest = models.CharField(max_length=64, unique=True)
    session_digest = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    code_verifier = EncryptedSecretField()
    redirect_uri = models.URLField(max_length=500)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def is_expired(self, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        return now - self.created_at > ttl


class AuditAction(models.TextChoices):
    CONNECTED = "connected", "Connected"
    RECONSENTED = "reconsented", "Re-consented"
    REFRESHED = "refreshed", "Refreshed"
    REFRESH_FAILED = "refresh_failed", "Refresh failed"
    PROBED = "probed", "API probe"
    REVOKED = "revoked", "Revoked"
    ROTATED = "rotated", "Keys rotated"
    IMPORTED = "imported", "Imported from env"
    CLIENT_CHANGED = "client_changed", "OAuth client changed"
    CONSENT_FAILED = "consent_failed", "Consent failed"
    TOKEN_API = "token_api", "Token API call"
    SERVICE_KEY_CREATED = "service_key_created", "Service key created"
    SERVICE_KEY_REVOKED = "service_key_revoked", "Service key revoked"
    DISCONNECTED = "disconnected", "Disconnected (revoked at Google and deleted)"
    SECURITY_EVENT = "security_event", "Security event from Google (RISC)"


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("The audit log is append-only: events cannot be updated.")

    def delete(self):
        raise TypeError("The audit log is append-only: events cannot be deleted.")


class AuditEvent(models.Model):
    """One thing that happened to a credential, by whom. Append-only; details are redacted."""

    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    credential = models.ForeignKey(
        GoogleCredential, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="audit_events",
    )
    #: As long as GoogleCredential.credential_key: 'google:' + an email of up to 254 characters.
    credential_key = models.CharField(max_length=300, blank=True, default="")
    account = models.CharField(max_length=254, blank=True, default="")
    actor = models.CharField(max_length=200, help_text="user:<name> or process:<name>")
    outcome = models.CharField(max_length=64, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.action} {self.account or self.credential_key} by {self.actor}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise TypeError("The audit log is append-only: events cannot be changed.")
        return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("The audit log is append-only: events cannot be deleted.")


class HeartbeatRunQuerySet(models.QuerySet):
    def last_started_at(self) -> dt.datetime | None:
        """When the latest sweep started (readiness, ``/metrics`` lag, beat's start-up sweep)."""
        return self.order_by("-started_at").values_list("started_at", flat=True).first()


class HeartbeatRun(models.Model):
    """One heartbeat sweep: when, how it was started, and how many credentials ended in each state."""

    objects = HeartbeatRunQuerySet.as_manager()

    trigger = models.CharField(max_length=32, default="beat")
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    selected = models.PositiveIntegerField(default=0)
    outcomes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"heartbeat {self.started_at:%Y-%m-%d %H:%M} ({self.trigger})"


class ServiceKey(models.Model):
    """A key another service presents to ``POST /api/oauth/token`` (``Authorization: Bearer bk_…``).

    Only the SHA-256 of the key is stored (the key is 32 random bytes, so a fast hash is enough:
    there is nothing to guess) plus its first characters for recognising it in lists. The key
    may use the accounts in ``accounts`` (or every account with ``all_accounts``), and only for an
    account whose grant covers every scope in ``scopes`` (none = no scope condition).
    """

    name = models.SlugField(
        max_length=100, unique=True,
        help_text="Who uses it (e.g. 'gmail-butler'); shown in the audit log and metrics.",
    )
    key_prefix = models.CharField(
        max_length=16, editable=False, help_text="The key's first characters, to recognise it."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    all_accounts = models.BooleanField(
        default=False, help_text="May use every stored account, including ones connected later."
    )
    accounts = models.ManyToManyField(
        GoogleCredential, blank=True, related_name="service_keys",
        help_text="The accounts this key may get tokens for (ignored with 'all accounts').",
    )
    scopes = models.ManyToManyField(
        Scope, blank=True, related_name="service_keys",
        help_text="A token is handed out only for an account whose grant covers all of these.",
    )
    allowed_networks = models.CharField(
        max_length=1000, blank=True, default="",
        help_text="Client addresses or networks allowed to use the key, comma-separated "
        "(e.g. 10.0.0.5, 192.168.1.0/24); empty = any.",
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty = never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    use_count = models.PositiveBigIntegerField(default=0, editable=False)
    created_by = models.CharField(max_length=200, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<ServiceKey {self.name} {self.key_prefix}…>"

    # --- pure checks --------------------------------------------------------------------------
    def is_active(self, *, now: dt.datetime) -> bool:
        """Neither revoked nor past its expiry."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def network_list(self) -> list[str]:
        return [part.strip() for part in self.allowed_networks.replace(" ", ",").split(",") if part.strip()]

    def allows_address(self, address: str | None) -> bool:
        """True when no network is configured or ``address`` lies in one of them."""
        import ipaddress

        networks = self.network_list()
        if not networks:
            return True
        try:
            ip = ipaddress.ip_address((address or "").strip())
        except ValueError:
            return False
        for network in networks:
            try:
                if ip in ipaddress.ip_network(network, strict=False):
                    return True
            except ValueError:
                continue
        return False


class ActionKind(models.TextChoices):
    """What an operator can do to an account from the dashboard or the admin."""

    REFRESH = "refresh", "Refresh now"
    TEST = "test", "Test"
    REVOKE = "revoke", "Revoke at Google"
    DISCONNECT = "disconnect", "Disconnect"


class ActionRun(models.Model):
    """One operator action on one or more accounts, run by a Celery worker
    (``oauth.tasks.action_run_execute``) so that no request waits on Google. Its items hold each
    account's progress (queued, running, then succeeded or failed) for the pages to show."""

    action = models.CharField(max_length=20, choices=ActionKind.choices)
    actor = models.CharField(max_length=200, help_text="user:<name> or process:<name>")
    created_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor} ({self.created_at:%Y-%m-%d %H:%M})"

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None


class ActionItemStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"


class ActionItem(models.Model):
    """One account of an :class:`ActionRun` and where it stands. ``account`` keeps the email so
    the result still reads after a Disconnect deleted the credential."""

    run = models.ForeignKey(ActionRun, on_delete=models.CASCADE, related_name="items")
    credential = models.ForeignKey(
        GoogleCredential, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    account = models.CharField(max_length=300)
    status = models.CharField(
        max_length=20, choices=ActionItemStatus.choices, default=ActionItemStatus.QUEUED
    )
    message = models.CharField(max_length=1000, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.account}: {self.status}"


# --- Google security events (RISC) and notifications ----------------------------------------------
class SecurityEvent(models.Model):
    """One security event token (SET) Google's Cross-Account Protection (RISC) sent, accepted.

    ``jti`` is unique: a token replayed (by Google's retry or by anyone) is refused, not applied
    twice. Only what the token said is kept (event type, subject, reason); never a token hash.
    """

    jti = models.CharField(max_length=255, unique=True)
    event_type = models.CharField(
        max_length=64, db_index=True,
        help_text="The event's short name (tokens-revoked, verification, ...).",
    )
    issuer = models.CharField(max_length=255, blank=True, default="")
    subject = models.CharField(max_length=255, blank=True, default="")
    credential = models.ForeignKey(
        GoogleCredential, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="security_events",
    )
    outcome = models.CharField(
        max_length=64, blank=True, default="",
        help_text="What this app did: expired, recorded, no_matching_account, verified, ...",
    )
    detail = models.JSONField(default=dict, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-received_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.jti}"


class NotificationPreference(models.Model):
    """Whether a staff user gets the notification emails (problems, recoveries, reminders)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oauth_notifications"
    )
    email = models.BooleanField(
        default=True,
        help_text="Email this staff user when an account needs a person and when it recovers.",
    )

    class Meta:
        verbose_name = "notification preference"

    def __str__(self) -> str:
        return f"{self.user} ({'email' if self.email else 'no email'})"


class NotificationEvent(models.TextChoices):
    """What a notification is about (the webhook ``type``)."""

    PROBLEM = "account.problem", "An account needs a person"
    RECOVERED = "account.recovered", "An account is connected again"
    SECURITY_EVENT = "account.security_event", "Google reported a security event"
    REMINDER = "account.reminder", "A problem is still open"
    TEST = "test", "Test event"


class Notification(models.Model):
    """One transition a person must hear about, once: emailed in a digest, sent to each webhook."""

    event_type = models.CharField(max_length=32, choices=NotificationEvent.choices, db_index=True)
    credential = models.ForeignKey(
        GoogleCredential, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="notifications",
    )
    account = models.CharField(max_length=254, blank=True, default="")
    old_state = models.CharField(max_length=32, blank=True, default="")
    new_state = models.CharField(max_length=32, blank=True, default="")
    remediation = models.TextField(blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(db_index=True)
    #: When it went out in a digest email (null: still waiting for the next digest).
    emailed_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-occurred_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.account} {self.old_state}->{self.new_state}"


class WebhookEndpoint(models.Model):
    """A URL told about notifications, signed per the Standard Webhooks specification.

    The signing secret (``whsec_...``) is stored encrypted and shown once, after 'Save'.
    """

    url = models.URLField(
        max_length=500,
        help_text="https:// (http:// only on a loopback host). Redirects are not followed.",
    )
    description = models.CharField(max_length=200, blank=True, default="")
    events = models.JSONField(
        default=list, blank=True,
        help_text="Event types to send (account.problem, account.recovered, "
        "account.security_event, account.reminder); empty = all.",
    )
    secret = EncryptedSecretField(editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["url"]

    def __str__(self) -> str:
        return self.description or self.url

    def __repr__(self) -> str:
        return f"<WebhookEndpoint {self.url}>"

    def wants(self, event_type: str) -> bool:
        return event_type == NotificationEvent.TEST or not self.events or event_type in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Failed (gave up)"


class WebhookDelivery(models.Model):
    """One message to one endpoint; retried with backoff until delivered or given up."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    notification = models.ForeignKey(
        Notification, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    msg_id = models.CharField(max_length=64, unique=True, help_text="The webhook-id header.")
    event_type = models.CharField(max_length=32, db_index=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.endpoint.url} ({self.status})"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: what the receiver answered and how long it took."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    response_snippet = models.CharField(max_length=500, blank=True, default="")
    error = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"
