"""deploy/systemd: the units pass `systemd-analyze verify` and start what the docs say.

The units name /opt/butlers (docs/deploy.md); here they are verified with that path pointed at this
checkout, whose .venv holds the same executables. `systemd-analyze` reports unknown keys and
sections only as messages, so any message fails the test, not just a non-zero exit.
"""
from __future__ import annotations

import configparser
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from tests.deploy.processes import Running, free_port, stop_all, wait_http
from tests.factories import ROOT

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def test_web_worker_and_beat_units_share_one_environment_file_and_metrics_folder():
    assert [p.name for p in UNITS] == ["butlers-beat.service", "butlers-web.service", "butlers-worker.service"]
    for path in UNITS:
        service = unit(path)["Service"]
        assert service["User"] == "butlers" and service["WorkingDirectory"] == "/opt/butlers"
        assert service["EnvironmentFile"] == "/etc/butlers/butlers.env"
        assert "PROMETHEUS_MULTIPROC_DIR=/run/butlers/metrics" in service["Environment"]
        assert service["RuntimeDirectoryPreserve"] == "yes"  # one unit's restart keeps the others' files
        assert service["Restart"] in ("on-failure", "always")
        assert shlex.split(service["ExecStart"])[0].startswith("/opt/butlers/.venv/bin/")
    # the environment file template names every variable production must set
    template = (ROOT / "deploy" / "systemd" / "butlers.env.example").read_text()
    for name in ("SECRET_KEY=", "OAUTH_ENCRYPTION_KEYS=", "DATABASE_URL=", "REDIS_URL=", "ALLOWED_HOSTS=", "DEBUG=0"):
        assert name in template


def test_systemd_analyze_verifies_the_units(tmp_path):
    """.ci/run installs systemd when it is missing; elsewhere without it, the parse above stands."""
    if shutil.which("systemd-analyze") is None:
        assert all(unit(path).has_section("Install") for path in UNITS)
        return
    for path in UNITS:
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/butlers", str(ROOT)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *[str(tmp_path / p.name) for p in UNITS]],
        capture_output=True, text=True, timeout=60,
    )
    messages = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line or "butlers" in line]
    assert result.returncode == 0 and not messages, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_units_command_lines_serve_with_the_environment_file(tmp_path):
    """docs/deploy.md's steps, here: the environment file (the template, filled in), collectstatic,
    then each unit's ExecStart with its Environment= lines; web gets ready, worker and beat stay up.
    /opt/butlers is this checkout; /var/lib/butlers and /run/butlers are temporary folders."""
    db = connection.settings_dict
    filled = {
        "SECRET_KEY": "systemd-unit-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "OAUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "WEB_WORKERS": "1",
    }
    paths = {"/opt/butlers": str(ROOT), "/var/lib/butlers": str(tmp_path / "state"),
             "/run/butlers": str(tmp_path / "run"), "%H": socket.gethostname()}

    def localise(text: str) -> str:
        for path, local in paths.items():
            text = text.replace(path, local)
        return text

    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env_file = dict(line.split("=", 1) for line in (ROOT / "deploy" / "systemd" / "butlers.env.example")
                    .read_text().splitlines() if line and not line.startswith("#"))
    base.update({**env_file, **{k: v for k, v in filled.items() if k in env_file or k == "WEB_WORKERS"}})
    base["STATIC_ROOT"] = str(tmp_path / "static")  # /opt/butlers/staticfiles, collected in step 6

    # step 6: collectstatic and check --deploy with that environment
    collect = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT,
                             env=base, capture_output=True, text=True, check=False)
    assert collect.returncode == 0, collect.stderr

    running: dict[str, Running] = {}
    try:
        for path in UNITS:
            service = unit(path)["Service"]
            env = dict(base)
            env.update(dict(pair.split("=", 1) for pair in shlex.split(localise(service["Environment"]))))
            running[path.stem] = Running(shlex.split(localise(service["ExecStart"])),
                                         cwd=Path(localise(service["WorkingDirectory"])), env=env)
        status, body = wait_http(f"http://{filled['GUNICORN_BIND']}/api/health/ready")
        assert status == 200, (body, running["butlers-web"].output)
        assert running["butlers-worker"].wait_for(" ready.", timeout=60), running["butlers-worker"].output
        for name, run in running.items():
            assert run.popen.poll() is None, f"{name} exited:\n{run.output}"
            assert "Traceback" not in run.output, run.output
        assert list((tmp_path / "run" / "metrics").glob("*.db"))  # the shared metrics folder
    finally:
        stop_all(running.values())
