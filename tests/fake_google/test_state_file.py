"""The fake keeps its grants in a state file: a restarted fake honours the refresh tokens it issued
(what `make demo` relies on), and forgets none of its revocations either."""
import os
import signal
import subprocess
import sys

import requests

from tests.deploy.processes import free_port
from tests.factories import ROOT
from tests.fake_google import FakeGoogle

CLIENT_ID, SECRET = "cid.apps.googleusercontent.com", "shh"


def _refresh(fake: FakeGoogle, token: str) -> requests.Response:
    return requests.post(f"{fake.url}/token", data={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID, "client_secret": SECRET,
    }, timeout=5)


def test_a_restarted_fake_still_honours_its_grants_and_their_revocation(tmp_path):
    state = tmp_path / "fake-google.json"
    with FakeGoogle(client_id=CLIENT_ID, client_secret=SECRET, state_file=state) as first:
        kept = first.issue_grant("alice@example.com")
        revoked = first.issue_grant("bob@example.com")
        access = _refresh(first, kept).json()["access_token"]
        assert requests.post(f"{first.url}/revoke", data={"token": revoked}, timeout=5).status_code == 200
    assert state.stat().st_mode & 0o077 == 0

    with FakeGoogle(client_id=CLIENT_ID, client_secret=SECRET, state_file=state) as second:
        assert _refresh(second, kept).status_code == 200
        assert _refresh(second, revoked).json()["error"] == "invalid_grant"
        # an access token issued before the restart still opens the APIs
        profile = requests.get(f"{second.url}/v1/userinfo", headers={"Authorization": f"Bearer {access}"}, timeout=5)
        assert profile.json()["email"] == "alice@example.com"


def test_without_a_state_file_a_restart_forgets_everything():
    with FakeGoogle(client_id=CLIENT_ID, client_secret=SECRET) as first:
        token = first.issue_grant("alice@example.com")
    with FakeGoogle(client_id=CLIENT_ID, client_secret=SECRET) as second:
        assert _refresh(second, token).json()["error"] == "invalid_grant"


def _command_line_fake(*, app_port: int, state) -> subprocess.Popen:
    """``python -m tests.fake_google`` beside an app on ``app_port``, its grants kept in ``state``."""
    env = {**os.environ, "BUTLERS_PORT": str(app_port)}
    env.pop("FAKE_GOOGLE_PORT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fake_google", "--state-file", str(state)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_the_command_line_fake_follows_the_app_port(tmp_path):
    app_port = free_port()
    fake = _command_line_fake(app_port=app_port, state=tmp_path / "state.json")
    try:
        first = fake.stdout.readline()
        exports = []  # up to the closing hint, however many exports the fake prints
        while not exports or not exports[-1].startswith("(`make demo`"):
            exports.append(fake.stdout.readline())
    finally:
        fake.send_signal(signal.SIGINT)
        fake.wait(15)
    # its port is the app's + 100, and the redirect URI it prints is on the app's port
    assert f"http://127.0.0.1:{app_port + 100}" in first, first + fake.stderr.read()
    assert f"export GOOGLE_OAUTH_REDIRECT_URI=http://127.0.0.1:{app_port}/api/oauth/google/callback" in [
        line.strip() for line in exports
    ]
    assert fake.returncode == 0


def test_the_command_line_fake_stopped_while_it_prints_still_exits_cleanly_and_saves(tmp_path):
    """Ctrl-C (or SIGTERM) may come at any moment, also while the fake is still printing its
    exports: it stops, saves its state file and exits 0, without a traceback or a hang."""
    state = tmp_path / "state.json"
    for sig in (signal.SIGINT, signal.SIGTERM):
        state.unlink(missing_ok=True)
        fake = _command_line_fake(app_port=free_port(), state=state)
        try:
            assert fake.stdout.readline().startswith("Fake Google on ")
            fake.send_signal(sig)  # the exports are still being printed
            _, err = fake.communicate(timeout=15)
        finally:
            if fake.poll() is None:
                fake.kill()
        assert fake.returncode == 0, err
        assert "Traceback" not in err
        assert state.exists(), "the fake stopped without saving its grants"
