"""Stop early, with the command that fixes it, when the test PostgreSQL or Redis is down."""
from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

DB_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def main() -> int:
    problems = []
    try:
        import psycopg

        parts = urlsplit(DB_URL)
        # connect to the maintenance database: the test database itself is created by the suite
        psycopg.connect(
            host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
            password=parts.password, dbname="postgres", connect_timeout=3,
        ).close()
    except Exception as exc:
        problems.append(
            f"PostgreSQL is not reachable at {DB_URL} ({type(exc).__name__}). Start it with:\n"
            "    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "  or point TEST_DATABASE_URL at a running server."
        )
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        problems.append(
            f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}). Start it with:\n"
            '    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no\n'
            "  or point TEST_REDIS_URL at a running server."
        )
    for problem in problems:
        print(f"make test: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
