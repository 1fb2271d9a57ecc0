FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 BUTLERS_VAR_DIR=/app/var
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# collectstatic needs settings, not real secrets: throwaway values for this one build step
RUN DEBUG=0 SECRET_KEY=build-only OAUTH_ENCRYPTION_KEYS=$(python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())") \
    python manage.py collectstatic --noinput \
 && useradd --create-home butlers && mkdir -p /app/var && chown -R butlers /app/var
USER butlers
EXPOSE 8200
CMD ["gunicorn", "-c", "butlers/gunicorn.conf.py", "butlers.wsgi:application"]
