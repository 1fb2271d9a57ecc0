"""Start the project under gunicorn in a child process, for tests and benchmarks over real HTTP.

``GunicornServer(env=..., workers=2, threads=4).start()`` binds a free loopback port, waits until
``/api/health`` answers, and keeps the server's output and its access log (one line per request:
worker pid, method, path, status) in files under ``log_dir`` so a test can read them.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
ACCESS_LOG_FORMAT = "%(p)s %(m)s %(U)s %(s)s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    def __init__(self, *, env: dict[str, str], workers: int = 2, threads: int = 4,
                 log_dir: str | None = None) -> None:
        self.env = dict(env)
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="butlers-gunicorn-"))
        self.output_path = self.log_dir / "output.log"
        self.access_path = self.log_dir / "access.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60) -> GunicornServer:
        command = [
            sys.executable, "-m", "gunicorn", "butlers.wsgi:application",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", "gthread", "--threads", str(self.threads),
            "--access-logfile", str(self.access_path),
            "--access-logformat", ACCESS_LOG_FORMAT,
            "--graceful-timeout", "5",
        ]
        output = open(self.output_path, "w")  # noqa: SIM115 - closed by the child's exit
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.output()[-3000:]}")
            try:
                if requests.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {timeout} s: {self.output()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.output_path.read_text() if self.output_path.exists() else ""

    def access_lines(self) -> list[tuple[str, str, str, str]]:
        """(pid, method, path, status) per request served so far."""
        if not self.access_path.exists():
            return []
        lines = []
        for line in self.access_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                lines.append(tuple(parts))
        return lines

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def environment(base: dict[str, str] | None = None, **overrides: str) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(overrides)
    return env
