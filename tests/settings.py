"""Settings for the test suite: real PostgreSQL and Redis from TEST_DATABASE_URL / TEST_REDIS_URL."""
import os

os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault(
    "OAUTH_ENCRYPTION_KEYS",
    # two fixed test keys: the newest first, the older one still decrypts
    "6Q2kVqL0m5Gq0w0S6Cq0c1Xy2Wqzv9V2o5rL3mE7t1I=,"
    "J3vV8x7yqkF6mZr3Q1mV0d7iX5tY2wB9pL4sN8cH6aE=",
)
for _name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
    os.environ.setdefault(_name, "0")
os.environ.setdefault("BUTLERS_VAR_DIR", "/tmp/butlers-test-var")

from butlers.settings import *  # noqa: E402,F401,F403

STORAGES = {  # noqa: F405
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
