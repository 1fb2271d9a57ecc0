"""var/dev.env: what `make run` records is read by manage.py on that checkout, never in production.

The file is written by the supervisor's own function (scripts/supervise.py `write_dev_env`); each
case runs a real `manage.py` in a clean environment with its own BUTLERS_VAR_DIR.
"""
from __future__ import annotations

import subprocess
import sys

from cryptography.fernet import Fernet

from scripts import supervise
from tests.deploy.processes import newcomer_env
from tests.factories import ROOT

SHOW = "from django.conf import settings as s; print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.GOOGLE_OAUTH_CLIENT_ID or '-')"


def manage(var_dir, *args, **env):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=newcomer_env(BUTLERS_VAR_DIR=str(var_dir), **env),
    )


def record(var_dir):
    supervise.write_dev_env(var_dir / "dev.env", {
        "DEBUG": "1", "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0",
        "GOOGLE_OAUTH_CLIENT_ID": "recorded-by-make-run",
    })


def test_manage_py_on_a_dev_checkout_uses_what_make_run_recorded(tmp_path):
    record(tmp_path)
    assert (tmp_path / "dev.env").stat().st_mode & 0o077 == 0  # it may hold a database password

    result = manage(tmp_path, "shell", "-c", SHOW)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["True", "False", "recorded-by-make-run"]


def test_a_variable_that_is_set_wins_over_the_recorded_one(tmp_path):
    record(tmp_path)

    result = manage(tmp_path, "shell", "-c", SHOW, GOOGLE_OAUTH_CLIENT_ID="from-the-shell")
    assert result.stdout.splitlines()[-1].split() == ["True", "False", "from-the-shell"], result.stderr

    # DEBUG=0 asked for explicitly: a production start, whose message names both ways out
    stopped = manage(tmp_path, "check", DEBUG="0")
    assert stopped.returncode == 2
    [line] = stopped.stderr.strip().splitlines()
    assert "SECRET_KEY is not set" in line and "secrets.token_urlsafe" in line
    assert "make run" in line and "dev.env" in line


def test_production_never_reads_it(tmp_path):
    record(tmp_path)

    result = manage(tmp_path, "shell", "-c", SHOW, SECRET_KEY="p" * 60,
                    OAUTH_ENCRYPTION_KEYS=Fernet.generate_key().decode())

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["False", "True", "-"]


def test_without_make_run_a_dev_checkout_is_told_what_to_do(tmp_path):
    result = manage(tmp_path, "createsuperuser", "--noinput")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "make run" in result.stderr
