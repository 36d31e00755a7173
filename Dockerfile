# syntax=docker/dockerfile:1
# Oz web / worker / beat image. docker-compose.yml runs it; see README "Run with docker-compose".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    OZ_MEDIA_ROOT=/data/media \
    WEB_CONCURRENCY=2

RUN groupadd --system --gid 10001 oz \
 && useradd --system --uid 10001 --gid oz --home-dir /app/var --no-create-home \
        --shell /usr/sbin/nologin oz

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected at build time. The secret, hosts and database here exist only
# for this one command: they are not ENV, so they do not reach the running container.
RUN DJANGO_SECRET_KEY=collectstatic-build-only-not-a-secret \
    DJANGO_ALLOWED_HOSTS=localhost \
    DATABASE_URL=sqlite:////tmp/collectstatic.sqlite3 \
    python manage.py collectstatic --noinput \
 && rm -f /tmp/collectstatic.sqlite3 \
 && mkdir -p /data/media /app/var \
 && chown -R oz:oz /data /app/var

# /data/media holds model artifacts (OZ_MEDIA_ROOT). docker-compose mounts a named volume
# there; a fresh named volume copies this folder, so it starts owned by oz.

USER oz
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "scripts/healthcheck.py", "http://127.0.0.1:8000/healthz"]

# Workers: WEB_CONCURRENCY; threads/timeouts: see scripts/gunicorn.conf.py.
CMD ["gunicorn", "--config", "scripts/gunicorn.conf.py", "--bind", "0.0.0.0:8000", "config.wsgi:application"]
