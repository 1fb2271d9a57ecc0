"""System checks: misconfiguration is reported by ``manage.py check`` before anything runs."""
from __future__ import annotations

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .app_settings import _URL_SETTINGS, oauth_settings
from .encryption import get_fernet
from .exceptions import EncryptionError


@checks.register(checks.Tags.security)
def check_endpoint_urls(app_configs=None, **kwargs):
    errors = []
    for name in _URL_SETTINGS:
        try:
            getattr(oauth_settings, name)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="oauth.E001"))
    return errors


@checks.register(checks.Tags.security)
def check_encryption_keys(app_configs=None, **kwargs):
    try:
        get_fernet()
    except EncryptionError as exc:
        return [checks.Error(str(exc), id="oauth.E002")]
    return []
