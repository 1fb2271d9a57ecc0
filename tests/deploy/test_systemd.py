"""deploy/systemd: the units pass `systemd-analyze verify` and start what the docs say.

The units name /opt/butlers (docs/deploy.md); here they are verified with that path pointed at this
checkout, whose .venv holds the same executables. `systemd-analyze` reports unknown keys and
sections only as messages, so any message fails the test, not just a non-zero exit.
"""
from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

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
