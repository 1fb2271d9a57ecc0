"""``EncryptedSecretField``: a text column that only ever holds Fernet ciphertext.

On the model the attribute is a :class:`~oauth.encryption.Secret` (or ``None``); assigning a plain
string wraps it. The database sees ciphertext only; the plaintext exists only after ``reveal()``.
Lookups on the value are refused: ciphertext is randomised, so equality would silently never match.
"""
from __future__ import annotations

from typing import Any

from django.db import models

from .encryption import Secret


class _SecretDescriptor:
    """Wraps assigned strings in :class:`Secret` so the attribute has one type."""

    def __init__(self, field: EncryptedSecretField) -> None:
        self.field = field

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return instance.__dict__.get(self.field.attname)

    def __set__(self, instance, value) -> None:
        instance.__dict__[self.field.attname] = self.field.to_python(value)


class EncryptedSecretField(models.TextField):
    """A secret stored encrypted with ``OAUTH_ENCRYPTION_KEYS``; empty means ``None``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("null", True)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def contribute_to_class(self, cls, name, *args, **kwargs) -> None:
        super().contribute_to_class(cls, name, *args, **kwargs)
        setattr(cls, self.attname, _SecretDescriptor(self))

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return None
        return Secret.from_ciphertext(value, field=self.name)

    def to_python(self, value):
        if isinstance(value, Secret):
            return value
        if value is None or value == "":
            return None
        return Secret(str(value), field=self.name)

    def get_prep_value(self, value):
        value = self.to_python(value)
        return None if value is None else value.ciphertext

    def get_lookup(self, lookup_name):
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        return None

    def value_to_string(self, obj) -> str:
        # serializers (dumpdata) get ciphertext, never plaintext
        value = self.value_from_object(obj)
        return "" if value is None else value.ciphertext
