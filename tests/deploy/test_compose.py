"""docker compose, without Docker: each service's command line, with the environment compose gives
it, run here against the suite's PostgreSQL and Redis.

docker-compose.yml and the Dockerfile are parsed, not copied: the image's ENV and its collectstatic
step, then per service the `environment` (with `${VAR:?}` / `${VAR:-default}` filled from a `.env`
like the one `.env.example` describes) and the `command`. What differs from a container is only
where things are: the database and Redis URLs point at the test stores, the image paths (/app/var,
/metrics, /app/staticfiles) at temporary folders, and the port is a free one. The metrics folder
does not exist beforehand (a fresh volume may be empty; every process must cope) and is shared by
the three services, as the `metrics` volume is.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from django.db import connection

from tests.deploy.processes import Running, free_port, stop_all, wait_http
from tests.factories import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DOT_ENV = {  # what an operator puts in .env (see .env.example)
    "SECRET_KEY": "compose-parity-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "OAUTH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "butlers.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://butlers.example.com",
}


def interpolate(value: str, dot_env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?message} and $$."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        current = dot_env.get(name, "")
        if op == ":?" and not current:
            raise AssertionError(f"compose refuses to start without {name}: {arg}")
        return current if current or op is None else arg

    value = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", one, value)
    return value.replace("$$", "$")


def compose_services(dot_env: dict[str, str]) -> dict[str, dict]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = {}
    for name, service in data["services"].items():
        environment = {k: interpolate(str(v), dot_env) for k, v in (service.get("environment") or {}).items()}
        command = service.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        services[name] = {**service, "environment": environment, "command": command}
    return services


def dockerfile() -> dict:
    """The image's ENV, the command run at build time by collectstatic, and the default CMD."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.MULTILINE):
        env.update(dict(pair.split("=", 1) for pair in shlex.split(line)))
    runs = re.findall(r"^RUN (.+)$", text, re.MULTILINE)
    build = [line for line in runs if "collectstatic" in line]
    compile_ = [line for line in runs if "compileall" in line]
    requirements = re.findall(r"pip install .*-r (\S+)", text)
    return {"env": env, "build": build, "compile": compile_, "requirements": requirements}


@pytest.fixture
def stores(tmp_path) -> dict[str, str]:
    """Where a container's paths and the compose services' URLs point in this test."""
    db = connection.settings_dict
    return {
        "DATABASE_URL": f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "/app/var": str(tmp_path / "var"),
        "/metrics": str(tmp_path / "metrics-volume" / "not-yet-created"),
        "/app/staticfiles": str(tmp_path / "static"),
    }


def local_env(service_env: dict[str, str], image_env: dict[str, str], stores: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    env.update(image_env)
    env.update(service_env)
    for name, value in list(env.items()):
        for path in ("/app/var", "/metrics"):
            if value == path:
                env[name] = stores[path]
    env["DATABASE_URL"], env["REDIS_URL"] = stores["DATABASE_URL"], stores["REDIS_URL"]
    env["STATIC_ROOT"] = stores["/app/staticfiles"]  # the image's /app/staticfiles
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # python, celery, gunicorn
    return env


def test_the_image_installs_only_the_runtime_requirements():
    image = dockerfile()
    assert image["requirements"] == ["requirements.txt"]
    runtime = (ROOT / "requirements.txt").read_text().lower()
    for tool in ("pytest", "playwright", "hypothesis", "responses"):
        assert tool not in runtime
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"tests", ".env", "var", ".venv"} <= set(ignored)


def test_the_image_holds_the_projects_bytecode_so_no_process_compiles_it_at_start(tmp_path):
    """The image sets PYTHONDONTWRITEBYTECODE, so its processes never write bytecode: its build
    step must have written it for every module of the project, or each gunicorn worker, Celery
    worker and manage.py command compiles them all again when it starts."""
    image = dockerfile()
    assert image["env"].get("PYTHONDONTWRITEBYTECODE") == "1"
    assert len(image["compile"]) == 1, "the Dockerfile compiles the project once (python -m compileall)"
    packages = ("butlers", "oauth", "connectors")
    for name in packages:  # the image's /app: a copy of the checkout, without bytecode
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    argv = shlex.split(image["compile"][0])
    assert argv[0] == "python"
    built = subprocess.run(
        [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, **image["env"]}, timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    modules = [path for name in packages for path in (tmp_path / name).rglob("*.py")]
    assert len(modules) > 50
    missing = [str(m.relative_to(tmp_path)) for m in modules
               if not Path(importlib.util.cache_from_source(str(m))).exists()]
    assert not missing, f"modules the image would compile at every start: {missing[:10]}"


def test_every_compose_service_runs_here_with_its_own_command_and_environment(stores):
    services = compose_services(DOT_ENV)
    assert {"db", "redis", "web", "worker", "beat"} <= set(services)
    image = dockerfile()
    # the metrics folder is one volume shared by every process that writes it
    for name in ("web", "worker", "beat"):
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/metrics"
        assert "metrics:/metrics" in services[name]["volumes"]

    # the image's build step: collectstatic with the image's environment
    build_env = local_env({}, image["env"], stores)
    for line in image["build"]:
        step = line.split("&&")[0]
        result = subprocess.run(["sh", "-c", step], cwd=ROOT, env=build_env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    assert (Path(stores["/app/staticfiles"]) / "staticfiles.json").is_file()

    port = free_port()
    running: dict[str, Running] = {}
    try:
        web = services["web"]
        web_env = local_env(web["environment"], image["env"], stores)
        web_env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
        web_env["WEB_WORKERS"] = "1"
        running["web"] = Running(web["command"], cwd=ROOT, env=web_env)
        # liveness (plain http is exempt from the HTTPS redirect), then compose's own healthcheck
        assert wait_http(f"http://127.0.0.1:{port}/api/health")[0] == 200, running["web"].output
        check = [interpolate(part, DOT_ENV).replace("8200", str(port)) for part in web["healthcheck"]["test"][1:]]
        assert subprocess.run(check, cwd=ROOT, env=web_env, timeout=30).returncode == 0

        for name in ("worker", "beat"):
            env = local_env(services[name]["environment"], image["env"], stores)
            running[name] = Running(services[name]["command"], cwd=ROOT, env=env)
        assert running["worker"].wait_for(" ready.", timeout=90), running["worker"].output
        assert running["beat"].wait_for("beat: Starting...", timeout=90), running["beat"].output
        # beat queues the first heartbeat sweep at start-up and the worker runs it
        assert running["worker"].wait_for("Heartbeat sweep", timeout=90), running["worker"].output
        # readiness: database, cache, broker, and a beat holding the scheduler lock
        status, body = wait_http(f"http://127.0.0.1:{port}/api/health/ready")
        assert status == 200, body

        # the worker's healthcheck (compose's $$HOSTNAME is the container's host name)
        worker_check = services["worker"]["healthcheck"]["test"][1]
        worker_env = local_env(services["worker"]["environment"], image["env"], stores)
        worker_env["HOSTNAME"] = socket.gethostname()
        result = subprocess.run(["sh", "-c", interpolate(worker_check, DOT_ENV)], cwd=ROOT, env=worker_env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

        # beat's healthcheck: readiness through "web" (here: this port)
        beat_check = [part.replace("http://web:8200", f"http://127.0.0.1:{port}")
                      for part in services["beat"]["healthcheck"]["test"][1:]]
        assert subprocess.run(beat_check, cwd=ROOT, env=web_env, timeout=30).returncode == 0

        for name, run in running.items():
            assert run.popen.poll() is None, f"{name} exited:\n{run.output}"
            assert "Traceback" not in run.output and "FileNotFoundError" not in run.output, run.output
            # nothing asks to be configured: redbeat has its own settings, kombu its host name
            assert "explicitly" not in run.output and "No hostname was supplied" not in run.output, run.output
        # the shared metrics folder, missing at first, was created and written
        assert list(Path(stores["/metrics"]).glob("*.db")), running["web"].output
    finally:
        stop_all(running.values())
