"""`make run` before it starts anything: a database or Redis it cannot use stops it with one line
naming the URL and the command that fixes it, never a traceback; a port already taken likewise."""
from __future__ import annotations

import socket
import uuid

import pytest

from tests.deploy.processes import Running, free_port, newcomer_env
from tests.factories import ROOT

pytestmark = [pytest.mark.slow]


def make_run(tmp_path, **env: str) -> tuple[int, list[str]]:
    # its own var/: these runs never touch the checkout's (nor its var/dev.env)
    env = newcomer_env(BUTLERS_PORT=str(free_port()), BUTLERS_VAR_DIR=str(tmp_path / "var"), **env)
    run = Running(["make", "run"], cwd=ROOT, env=env)
    code = run.popen.wait(120)
    run.kill()
    return code, [line for line in run.lines if line.startswith("make run:")]


def test_a_database_that_does_not_exist_is_one_line_with_the_createdb_command(tmp_path):
    name = f"butlers_missing_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"

    code, lines = make_run(tmp_path, DATABASE_URL=url)

    assert code != 0
    assert lines == [f"make run: database {name!r} does not exist on {url}. Create it with: "
                     f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}"]


def test_an_unreachable_postgresql_and_redis_are_named_with_their_start_commands(tmp_path):
    pg_port, redis_port = free_port(), free_port()

    code, lines = make_run(tmp_path, DATABASE_URL=f"postgresql://butlers:s3cret-pw@127.0.0.1:{pg_port}/butlers",
                           REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")

    assert code != 0 and len(lines) == 2, lines
    assert f"postgresql://butlers:***@127.0.0.1:{pg_port}/butlers" in lines[0]
    assert "pg_ctlcluster" in lines[0] and "s3cret-pw" not in lines[0]
    assert f"redis://127.0.0.1:{redis_port}/0" in lines[1] and "redis-server" in lines[1]
    assert f"--port {redis_port}" in lines[1]


def test_a_port_in_use_is_named_with_another_to_try(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = newcomer_env(BUTLERS_PORT=str(port), BUTLERS_VAR_DIR=str(tmp_path / "var"))
        run = Running(["make", "run"], cwd=ROOT, env=env)
        code = run.popen.wait(120)
    assert code != 0
    assert [line for line in run.lines if line.startswith("make run:")] == [
        f"make run: port {port} for the app is already in use (another `make run`?). "
        f"Stop it or choose another port: BUTLERS_PORT={port + 1} make run"
    ]
    assert "Traceback" not in run.output
