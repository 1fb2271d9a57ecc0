"""butlers/checks.py: `check --deploy` fails on a deployment whose static files were not collected
(with DEBUG off the admin would otherwise answer 500, "Missing staticfiles manifest entry")."""
from cryptography.fernet import Fernet

from tests.butlers.test_settings import _manage


def test_deploy_check_fails_without_collectstatic_and_names_the_command(tmp_path):
    production = dict(
        DEBUG="0", SECRET_KEY="kq8Zr2Yp5Lw9Xv3Tn6Bm1Hc4Jd7Fs0Ga2Qe5Rt8Uy1Io4Pa7Sd0Fg3Hj6Kl9Zx2Cv5Bn",
        OAUTH_ENCRYPTION_KEYS=Fernet.generate_key().decode(), ALLOWED_HOSTS="butlers.example.com",
        CSRF_TRUSTED_ORIGINS="https://butlers.example.com", STATIC_ROOT=str(tmp_path / "static"),
    )

    result = _manage("check", "--deploy", **production)

    assert result.returncode == 1
    assert "butlers.E001" in result.stderr and "staticfiles.json" in result.stderr
    assert "collectstatic --noinput" in result.stderr
    assert "Traceback" not in result.stderr
    # the plain check (migrate, a start-up) is not blocked by it: collectstatic comes after migrate
    assert _manage("check", **production).returncode == 0


def test_a_debug_checkout_needs_no_manifest(tmp_path):
    result = _manage("check", "--deploy", DEBUG="1", STATIC_ROOT=str(tmp_path / "static"))
    assert "butlers.E001" not in result.stdout + result.stderr
