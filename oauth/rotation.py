"""Re-encrypting every stored secret under the newest key of OAUTH_ENCRYPTION_KEYS.

Key rotation: put a new key first in OAUTH_ENCRYPTION_KEYS (keep the old ones after it), restart,
run ``manage.py rotate_encryption_keys``, then remove the old keys. This module does the middle
step for every :class:`~oauth.fields.EncryptedSecretField` of every installed model.

It works in batches, each in its own transaction with the rows locked (a token refresh writing at
the same moment is neither lost nor overwritten), and skips values the newest key already opens, so
an interrupted run is simply run again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.apps import apps
from django.db import models, transaction

from .encryption import Secret, get_fernet, is_current, rotate
from .exceptions import DecryptionFailed
from .fields import EncryptedSecretField
from .models import AuditAction
from .services import audit_record

logger = logging.getLogger("oauth.rotation")


@dataclass
class RotationReport:
    """How many stored values were re-encrypted and how many were already under the newest key."""

    rotated: int = 0
    already_current: int = 0
    #: "app_label.Model.field" -> {"rotated": n, "already_current": n}
    per_field: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.rotated + self.already_current


def encrypted_fields() -> list[tuple[type[models.Model], list[str]]]:
    """Every installed model with EncryptedSecretField columns, and those columns' names."""
    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedSecretField)]
        if names:
            found.append((model, names))
    return found


def _rotate_batch(model, names: list[str], pks: list, report: RotationReport) -> None:
    with transaction.atomic():
        rows = model.objects.select_for_update().filter(pk__in=pks).only("pk", *names)
        for row in rows:
            changes = {}
            for name in names:
                secret = getattr(row, name)
                label = f"{model._meta.label}.{name}"
                counts = report.per_field.setdefault(label, {"rotated": 0, "already_current": 0})
                if secret is None:
                    continue
                ciphertext = secret.ciphertext
                if is_current(ciphertext):
                    counts["already_current"] += 1
                    report.already_current += 1
                    continue
                try:
                    changes[name] = Secret.from_ciphertext(rotate(ciphertext), field=name)
                except DecryptionFailed:
                    raise DecryptionFailed(
                        f"{label} of row {row.pk} cannot be decrypted with any key in "
                        "OAUTH_ENCRYPTION_KEYS: put back the key it was written with (after the "
                        "newest) and run 'manage.py rotate_encryption_keys' again. Rows rotated so "
                        "far stay rotated."
                    ) from None
                counts["rotated"] += 1
                report.rotated += 1
            if changes:
                # update() rather than save(): no auto_now bump, no other column touched.
                model.objects.filter(pk=row.pk).update(**changes)


def encryption_keys_rotate(*, actor: str, batch_size: int = 500) -> RotationReport:
    """Re-encrypt every stored secret under the newest key; returns the counts.

    Raises :class:`~oauth.exceptions.EncryptionError` for a malformed key list and
    :class:`~oauth.exceptions.DecryptionFailed` (naming the row) for a value no key opens.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    get_fernet()  # a missing or malformed key fails here, before anything is read
    report = RotationReport()
    for model, names in encrypted_fields():
        for name in names:
            report.per_field.setdefault(
                f"{model._meta.label}.{name}", {"rotated": 0, "already_current": 0}
            )
        last_pk = None
        while True:
            queryset = model.objects.order_by("pk")
            if last_pk is not None:
                queryset = queryset.filter(pk__gt=last_pk)
            pks = list(queryset.values_list("pk", flat=True)[:batch_size])
            if not pks:
                break
            _rotate_batch(model, names, pks, report)
            last_pk = pks[-1]
    _drop_cached_tokens()
    audit_record(
        action=AuditAction.ROTATED,
        actor=actor,
        outcome="ok",
        detail={"rotated": report.rotated, "already_current": report.already_current},
    )
    logger.info(
        "Re-encrypted %d stored secret(s) under the newest key (%d already current)",
        report.rotated,
        report.already_current,
    )
    return report


def encryption_keys_pending() -> int:
    """How many stored values the newest key alone cannot open yet (0 = old keys can go)."""
    pending = 0
    for model, names in encrypted_fields():
        for values in model.objects.values_list(*names).iterator():
            for secret in values:
                if secret is not None and not is_current(secret.ciphertext):
                    pending += 1
    return pending


def _drop_cached_tokens() -> None:
    """Cached access tokens may be encrypted under an old key too: let them be fetched again."""
    try:
        from .tokens import access_token_cache_invalidate
    except ImportError:
        return
    from .models import GoogleCredential

    for credential in GoogleCredential.objects.all():
        access_token_cache_invalidate(credential=credential)
