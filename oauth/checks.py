"""System checks: misconfiguration is reported by ``manage.py check`` before anything runs."""
from __future__ import annotations

import ipaddress

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
def check_metrics_access(app_configs=None, **kwargs):
    errors = []
    for entry in oauth_settings.METRICS_ALLOWED_IPS:
        try:
            ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            errors.append(
                checks.Error(
                    f"METRICS_ALLOWED_IPS holds {entry!r}, which is not an address or a network.",
                    hint="List addresses or CIDR networks separated by commas, e.g. "
                    "METRICS_ALLOWED_IPS=10.0.0.0/8,192.0.2.7 (unset = loopback only).",
                    id="oauth.E003",
                )
            )
    return errors


@checks.register(checks.Tags.security)
def check_encryption_keys(app_configs=None, **kwargs):
    try:
        get_fernet()
    except EncryptionError as exc:
        return [checks.Error(str(exc), id="oauth.E002")]
    return []
