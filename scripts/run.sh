#!/usr/bin/env bash
# `make run` (and `make demo` with --demo): see scripts/supervise.py. Serves on 127.0.0.1:8200
# (BUTLERS_HOST, BUTLERS_PORT) with Celery worker(s) and beat, supervised; without DATABASE_URL /
# REDIS_URL everything runs on embedded defaults under var/.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/supervise.py "$@"
