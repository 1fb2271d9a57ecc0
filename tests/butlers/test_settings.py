"""Start-up configuration: clear one-line stops, a clean deploy check, endpoint URL rules."""
import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from tests.factories import ROOT
from oauth.app_settings import oauth_settings


def _manage(*args, **env_overrides):
    env = {k: v for k, v in os.environ.items()
           if k not in ("SECRET_KEY", "OAUTH_ENCRYPTION_KEYS", "DEBUG", "DJANGO_SETTINGS_MODULE",
                        "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
                        # set for the browser tests only; a deployment never has it
                        "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update({"DJANGO_SETTINGS_MODULE": "butlers.settings", "BUTLERS_VAR_DIR": "/tmp/butlers-test-var"})
    env.update(env_overrides)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "OAUTH_ENCRYPTION_KEYS"])
def test_production_start_without_a_required_secret_stops_with_one_clear_line(missing):
    env = {"DEBUG": "0", "SECRET_KEY": "x" * 60, "OAUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode()}
    del env[missing]

    result = _manage("check", **env)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0] and "Generate" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name,value,kind", [
    ("OAUTH_HEARTBEAT_CONCURRENCY", "sixty-four", "a number"),
    ("OAUTH_HEARTBEAT_MAX_BATCH", "2.5", "a whole number"),
    ("SECURE_HSTS_SECONDS", "a year", "a whole number"),
    ("OAUTH_WEBHOOK_RETRY_SCHEDULE", "10,soon", "a comma-separated list, each a number"),
])
def test_a_setting_that_is_not_a_number_stops_start_up_naming_it(name, value, kind):
    env = {"DEBUG": "0", "SECRET_KEY": "x" * 60, "OAUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
           name: value}

    result = _manage("check", **env)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"butlers: configuration error: {name} must be {kind}: fix it or unset it."
    )


def test_the_heartbeats_counts_are_read_from_the_environment():
    shown = _manage(
        "shell", "-c", "from oauth.app_settings import oauth_settings as s; "
        "print(s.OAUTH_HEARTBEAT_TASKS_PER_SWEEP, s.OAUTH_HEARTBEAT_MAX_BATCH, "
        "s.OAUTH_HEARTBEAT_PROCESSES, s.OAUTH_REFRESH_RETRIES, s.OAUTH_REFRESH_BACKOFF)",
        DEBUG="1", OAUTH_HEARTBEAT_TASKS_PER_SWEEP="50", OAUTH_HEARTBEAT_MAX_BATCH="5",
        OAUTH_HEARTBEAT_PROCESSES="1", OAUTH_REFRESH_RETRIES="0", OAUTH_REFRESH_BACKOFF="0.25",
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "50 5 1 0 0.25"


def test_deploy_check_is_clean_with_the_documented_production_variables(tmp_path):
    production = dict(
        DEBUG="0",
        SECRET_KEY="kq8Zr2Yp5Lw9Xv3Tn6Bm1Hc4Jd7Fs0Ga2Qe5Rt8Uy1Io4Pa7Sd0Fg3Hj6Kl9Zx2Cv5Bn",
        OAUTH_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="butlers.example.com",
        CSRF_TRUSTED_ORIGINS="https://butlers.example.com",
        STATIC_ROOT=str(tmp_path / "static"),
    )
    # the documented deployment steps run collectstatic (tests/deploy: the check without it)
    assert _manage("collectstatic", "--noinput", **production).returncode == 0
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **production)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_plain_http_endpoints_are_refused_except_on_loopback(settings):
    settings.GOOGLE_OAUTH_TOKEN_URI = "http://127.0.0.1:8300/token"
    assert oauth_settings.GOOGLE_OAUTH_TOKEN_URI == "http://127.0.0.1:8300/token"
    settings.GOOGLE_OAUTH_TOKEN_URI = "http://evil.example.com/token"
    with pytest.raises(ImproperlyConfigured, match="GOOGLE_OAUTH_TOKEN_URI"):
        oauth_settings.GOOGLE_OAUTH_TOKEN_URI


def test_a_bad_endpoint_fails_the_system_check():
    result = _manage("check", DEBUG="1", GOOGLE_OAUTH_AUTH_URI="http://accounts.example.com/auth")
    assert result.returncode != 0
    assert "oauth.E001" in result.stderr and "GOOGLE_OAUTH_AUTH_URI" in result.stderr


def test_unknown_oauth_setting_names_raise():
    with pytest.raises(AttributeError, match="Unknown OAuth setting"):
        oauth_settings.GOOGLE_OAUTH_TOKEN_URL
