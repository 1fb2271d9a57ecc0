"""Helpers for tests that start the project's own commands (`make run`, `make demo`, a service's
command line) as a user would, and stop them the way a terminal's Ctrl-C does."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

#: Variables of the developer's or the test run's environment that a newcomer's shell would not have.
PROJECT_VARS = (
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "OAUTH_ENCRYPTION_KEYS", "DEBUG", "DJANGO_SETTINGS_MODULE",
    "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "DJANGO_ALLOW_ASYNC_UNSAFE",
    "BUTLERS_VAR_DIR", "STATIC_ROOT", "PROMETHEUS_MULTIPROC_DIR", "BUTLERS_PORT", "PORT", "FAKE_GOOGLE_PORT",
    "GUNICORN_BIND", "WEB_WORKERS", "PYTHONPATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS",
)


def newcomer_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any project variable, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARS and not k.startswith(("GOOGLE_", "TEST_"))}
    # one worker process: the suite shares its CPUs
    env.setdefault("CELERY_WORKER_PROCESSES", "1")
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A command started in its own session (like a terminal job), its output collected."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, *, timeout: float = 180.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            if self.popen.poll() is not None:
                self._reader.join(5)
                return any(text in line for line in self.lines)
            time.sleep(0.2)
        return False

    def interrupt(self, *, timeout: float = 30.0) -> int:
        """Ctrl-C: SIGINT to the whole foreground job; returns its exit code."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        finally:
            self.kill()
            self._reader.join(5)

    def kill(self) -> None:
        """Leave nothing behind (each supervised process has its own session: stop them by pid)."""
        for pid in descendants(self.popen.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_http(url: str, *, timeout: float = 90) -> tuple[int | None, str]:
    """Poll until ``url`` answers 200 (or the timeout); the last status and body."""
    deadline = time.monotonic() + timeout
    status, body = None, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        except OSError:
            pass
        time.sleep(0.3)
    return status, body


def stop_all(runs) -> None:
    """Terminate every run, then wait for each (30 s) and kill what is still there."""
    for run in runs:
        run.popen.terminate()
    for run in runs:
        try:
            run.popen.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
