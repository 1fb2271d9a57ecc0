"""A newcomer on a fresh clone, following the README word for word, then the runbook.

The clone reuses the suite's installed virtualenv through a `.venv` symlink (the Makefile uses an
existing `.venv` as it is): a fresh venv with a full `pip install` would cost minutes of CI and
prove only that pip works. Everything else is the newcomer's: no project variable in the
environment, `make run` on embedded defaults, commands copied from README.md and docs/runbook.md.
"""
from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.deploy.processes import Running, free_port, newcomer_env
from tests.factories import ROOT

pytestmark = [pytest.mark.slow]

#: Runbook commands that need a Google account (or Google's deprecated env credentials) to succeed.
NEEDS_GOOGLE = {
    "oauth_check": "resolves a connected account's credential",
    "oauth_token": "hands out an access token of a connected account",
    "oauth_revoke": "revokes a grant at Google",
    "run_gmail_connector": "polls Gmail",
    "oauth_import_env": "imports the deprecated env credentials (none on a fresh checkout)",
    "service_key_create": "names the connected accounts the key may use",
    "service_key_revoke": "revokes a key, made for a connected account by service_key_create",
    "oauth_risc_register": "registers the receiver with Google's RISC API",
}


def readme_command(pattern: str) -> str:
    """The one line of a README code block matching ``pattern``."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, (pattern, lines)
    return lines[0].split("  #")[0].strip()


def runbook_commands() -> list[str]:
    """Every `manage.py ...` command written in docs/runbook.md (code spans and code blocks)."""
    text = (ROOT / "docs" / "runbook.md").read_text()
    found: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            match = re.match(r"\s*(?:\.venv/bin/python )?manage\.py ([a-z_]+[^#]*)", line)
            if match:
                found.append(match.group(1).strip())
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for span in re.findall(r"`([^`]+)`", prose):
        match = re.match(r"(?:\.venv/bin/python )?manage\.py ([a-z_]+.*)", span)
        if match:
            found.append(match.group(1).strip())
    return list(dict.fromkeys(found))


def needs_google(command: str) -> bool:
    name = command.split()[0]
    return name in NEEDS_GOOGLE or "--account" in command


def run_in_pty(argv: list[str], *, cwd: Path, env: dict[str, str], answers: dict[str, str]) -> tuple[int, str]:
    """Run an interactive command on a terminal, answering each prompt that appears."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the command on the terminal
        os.chdir(cwd)
        os.execvpe(argv[0], argv, env)
    seen, pending = "", dict(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096).decode(errors="replace")
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        for prompt in list(pending):
            if seen.rstrip().endswith(prompt):
                os.write(fd, (pending.pop(prompt) + "\n").encode())
                break
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen


def login(base: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=10)
    response = session.post(
        f"{base}/admin/login/?next=/",
        data={"username": username, "password": password, "next": "/",
              "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{base}/admin/login/"}, timeout=10,
    )
    assert response.status_code == 200 and response.url == f"{base}/", response.url
    return session


def test_a_newcomer_follows_the_readme_and_the_runbook_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "butlers-oauth"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    port = free_port()
    env = newcomer_env(BUTLERS_PORT=str(port))
    base = f"http://127.0.0.1:{port}"

    run = Running(["make", "run"], cwd=clone, env=env)
    try:
        assert run.wait_for("Butlers OAuth is ready on"), run.output
        start = next(i for i, line in enumerate(run.lines) if "Butlers OAuth is ready on" in line)
        startup = "\n".join(run.lines[: start + 12])
        # quiet: no Celery banner, no kombu/redbeat warning, no traceback; the banner says what to do
        for noise in ("-------------- ", "[tasks]", "No hostname was supplied", "redbeat_redis_url",
                      "Traceback", "SecurityWarning", "Booting worker"):
            assert noise not in startup, startup
        assert f"{base}/" in startup and "createsuperuser" in startup
        assert f"SQLite {clone / 'var' / 'butlers.sqlite3'}" in startup

        # README: the interactive line, verbatim, on a terminal ...
        interactive = readme_command(r"^\.venv/bin/python manage\.py createsuperuser$")
        code, screen = run_in_pty(
            shlex.split(interactive), cwd=clone, env=env,
            answers={"Username (leave blank to use 'root'):": "ada", "Username:": "ada",
                     "Email address:": "ada@example.com", "Password:": "a-long-passphrase-42",
                     "Password (again):": "a-long-passphrase-42"},
        )
        assert code == 0 and "Superuser created successfully." in screen, screen
        # ... and the non-interactive one through the documented DJANGO_SUPERUSER_* variables
        scripted = readme_command(r"DJANGO_SUPERUSER_PASSWORD=.*createsuperuser --noinput")
        result = subprocess.run(["bash", "-c", scripted], cwd=clone, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        password = re.search(r"DJANGO_SUPERUSER_PASSWORD=(\S+)", scripted).group(1).strip("'\"")
        username = re.search(r"DJANGO_SUPERUSER_USERNAME=(\S+)", scripted).group(1)

        # a login, then the dashboard; each request gives one line in make run's output
        session = login(base, "ada", "a-long-passphrase-42")
        assert "Connect a Google account" in session.get(f"{base}/", timeout=10).text
        login(base, username, password)
        before = len(run.lines)
        assert session.get(f"{base}/api/oauth/status?probe=newcomer", timeout=10).status_code == 200
        assert run.wait_for("/api/oauth/status", timeout=30)
        time.sleep(1)  # give a second line (if any) the chance to show up before counting
        assert sum("/api/oauth/status" in line for line in run.lines[before:]) == 1, run.lines[before:]

        # every runbook manage.py line that does not need Google, as written
        commands = runbook_commands()
        assert any(c.startswith("oauth_status") for c in commands)
        for command in commands:
            if needs_google(command):
                continue
            result = subprocess.run(
                [".venv/bin/python", "manage.py", *shlex.split(command)], cwd=clone, env=env,
                capture_output=True, text=True, timeout=120,
            )
            assert result.returncode == 0, (command, result.stdout, result.stderr)
    finally:
        code = run.interrupt()
    tail = "\n".join(run.lines[-15:])
    # the supervisor exits 0; make itself, interrupted too, ends by the same SIGINT, silently
    assert code in (0, -signal.SIGINT), tail
    assert "make: ***" not in run.output and "Traceback" not in run.output, run.output
    assert run.lines[-1].endswith("stopped."), tail
