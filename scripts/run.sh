#!/usr/bin/env bash
# `make run`: migrate, then serve on 127.0.0.1:8200 with a Celery worker and beat.
# Without DATABASE_URL / REDIS_URL everything runs on embedded defaults under var/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DEBUG="${DEBUG:-1}"
export SECURE_SSL_REDIRECT="${SECURE_SSL_REDIRECT:-0}"
export SESSION_COOKIE_SECURE="${SESSION_COOKIE_SECURE:-0}"
export CSRF_COOKIE_SECURE="${CSRF_COOKIE_SECURE:-0}"
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}"
HOST="${BUTLERS_HOST:-127.0.0.1}"
PORT="${BUTLERS_PORT:-8200}"
WEB_WORKERS="${WEB_WORKERS:-2}"
WORKER_POOL="${CELERY_WORKER_POOL:-threads}"
WORKER_CONCURRENCY="${CELERY_WORKER_CONCURRENCY:-24}"
# Heartbeat tasks mostly wait on Google (threads overlap that), but each costs some CPU under one
# GIL: one threaded worker process per CPU (see docs/token-lifecycle.md, "make bench").
WORKER_PROCESSES="${CELERY_WORKER_PROCESSES:-$(nproc 2>/dev/null || echo 2)}"
# Short tasks (a heartbeat is ~100 ms of waiting): reserve a few per thread so the consumer is
# not a round trip to Redis behind every finished task.
WORKER_PREFETCH="${CELERY_WORKER_PREFETCH_MULTIPLIER:-4}"

rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR" var

$BIN/python manage.py migrate --noinput
$BIN/python manage.py collectstatic --noinput >/dev/null

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

# No gossip, mingle or worker heartbeat events: nothing here consumes them, and each costs every
# worker broker traffic and CPU beside the tasks (remote control, `celery inspect`, still works).
for i in $(seq 1 "$WORKER_PROCESSES"); do
  $BIN/celery -A butlers worker --loglevel=INFO --pool="$WORKER_POOL" \
    --concurrency="$WORKER_CONCURRENCY" --prefetch-multiplier="$WORKER_PREFETCH" \
    --without-gossip --without-mingle --without-heartbeat \
    --hostname="worker$i@%h" &
  pids+=($!)
done
$BIN/celery -A butlers beat --loglevel=INFO &
pids+=($!)
GUNICORN_BIND="$HOST:$PORT" WEB_WORKERS="$WEB_WORKERS" \
  $BIN/gunicorn -c butlers/gunicorn.conf.py butlers.wsgi:application &
pids+=($!)

store=$([ -n "${DATABASE_URL:-}" ] && echo "DATABASE_URL" || echo "var/butlers.sqlite3")
cat <<MSG

  Butlers OAuth is serving on http://$HOST:$PORT/  (database: $store)
  Dashboard:  http://$HOST:$PORT/        Admin: http://$HOST:$PORT/admin/
  Health:     http://$HOST:$PORT/api/health   Status: http://$HOST:$PORT/api/oauth/status
  Create the admin login once with:  .venv/bin/python manage.py createsuperuser
  Stop with Ctrl-C.

MSG
wait -n "${pids[@]}"
