FROM python:3.11-slim
# PROMETHEUS_MULTIPROC_DIR: the metrics folder web, worker and beat share (a volume in compose).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 BUTLERS_VAR_DIR=/app/var \
    PROMETHEUS_MULTIPROC_DIR=/metrics
WORKDIR /app
# runtime requirements only: the test tools (pytest, Playwright, hypothesis) are in requirements-test.txt
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# PYTHONDONTWRITEBYTECODE keeps the running containers from writing bytecode, so it is written here,
# once: otherwise every process (each gunicorn and Celery worker, each manage.py command) compiles
# the project's own modules again at start-up (a tenth of a second of CPU on a 2-core machine)
RUN python -m compileall -q butlers oauth connectors
# collectstatic needs settings, not real secrets: throwaway values for this one build step
RUN DEBUG=0 SECRET_KEY=build-only OAUTH_ENCRYPTION_KEYS=$(python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())") \
    python manage.py collectstatic --noinput \
 && useradd --create-home butlers \
 && mkdir -p /app/var /metrics && chown -R butlers /app/var /metrics
USER butlers
EXPOSE 8200
CMD ["gunicorn", "-c", "butlers/gunicorn.conf.py", "butlers.wsgi:application"]
