"""`make demo` in a real browser: log in, connect an account by clicking, restart the fake Google,
and the account is still connected (the fake kept its grants; a real refresh goes through)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.deploy.processes import (
    Running,
    cmdline,
    descendants,
    free_port,
    newcomer_env,
)
from tests.factories import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"],
    }


@pytest.fixture
def demo(tmp_path):
    """`make demo` on free ports with its own var/ and static folders; stopped like Ctrl-C."""
    port, fake_port = free_port(), free_port()
    env = newcomer_env(
        BUTLERS_PORT=str(port), FAKE_GOOGLE_PORT=str(fake_port),
        BUTLERS_VAR_DIR=str(tmp_path / "var"), STATIC_ROOT=str(tmp_path / "static"),
    )
    run = Running(["make", "demo"], cwd=ROOT, env=env)
    run.base, run.fake_port, run.env = f"http://127.0.0.1:{port}", fake_port, env
    try:
        yield run
    finally:
        code = run.interrupt()
    assert code in (0, -signal.SIGINT), run.output
    assert "make: ***" not in run.output and "Traceback" not in run.output, run.output


def manage_line(banner_line: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    """Run a `... manage.py ...` line printed by the banner, as printed, plus ``extra`` arguments."""
    return subprocess.run(["bash", "-c", banner_line.strip() + "".join(f" {a}" for a in extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def accepting(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_connects_an_account_by_clicking_and_it_survives_a_fake_google_restart(demo, page):
    assert demo.wait_for("Butlers OAuth is ready on"), demo.output
    assert f"Fake Google: http://127.0.0.1:{demo.fake_port}" in demo.output
    create = next(line for line in demo.lines if "manage.py createsuperuser" in line)
    login_env = {**demo.env, "DJANGO_SUPERUSER_USERNAME": "demo", "DJANGO_SUPERUSER_EMAIL": "demo@example.com",
                 "DJANGO_SUPERUSER_PASSWORD": "a-long-demo-passphrase"}
    result = manage_line(create, login_env, "--noinput")
    assert result.returncode == 0, result.stdout + result.stderr

    page.goto(f"{demo.base}/")
    page.fill("#id_username", "demo")
    page.fill("#id_password", "a-long-demo-passphrase")
    page.click("input[type=submit]")
    expect(page.get_by_text("No Google account is connected yet.")).to_be_visible()
    page.locator("#connect", has_text="Connect a Google account").click()
    # the fake Google's consent page, on the port that follows the app's
    expect(page).to_have_url(re.compile(rf"^http://127\.0\.0\.1:{demo.fake_port}/o/oauth2/v2/auth\?"))
    page.click("#allow")
    expect(page).to_have_url(f"{demo.base}/")
    card = page.locator("section.account")
    expect(card).to_have_attribute("data-state", "connected")
    expect(page.get_by_role("status")).to_contain_text("Connected alice@example.com")

    # restart the fake: the supervisor notices and starts it again
    fake = [pid for pid in descendants(demo.popen.pid) if "tests.fake_google" in cmdline(pid)]
    assert len(fake) == 1, [cmdline(pid) for pid in descendants(demo.popen.pid)]
    os.kill(fake[0], signal.SIGTERM)
    assert demo.wait_for("fake-google exited", timeout=30), demo.output
    deadline = time.monotonic() + 60
    while not accepting(demo.fake_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    restarted = [pid for pid in descendants(demo.popen.pid) if "tests.fake_google" in cmdline(pid)]
    assert restarted and restarted != fake

    # a real refresh against the restarted fake (the demo's settings come from its dev.env)
    heartbeat = manage_line(create.replace("createsuperuser", "oauth_heartbeat"), demo.env, "--all")
    assert heartbeat.returncode == 0, heartbeat.stdout + heartbeat.stderr
    assert "Heartbeat: 1 credential(s)" in heartbeat.stdout, heartbeat.stdout
    with urllib.request.urlopen(f"{demo.base}/api/oauth/status", timeout=10) as response:
        status = json.load(response)
    assert status["google"]["state"] == "connected", status
    page.reload()
    expect(page.locator("section.account")).to_have_attribute("data-state", "connected")
