# reminder-worker: one image for every mode.
#   docker run IMAGE                 -> one pass, then exit (CronJob; default CMD)
#   docker run IMAGE serve           -> HTTP trigger on :8080 (POST /run, GET /healthz, GET /readyz)
#   docker run IMAGE run --loop --interval 60
# Configuration (DATABASE_URL, SUPABASE_*, GOOGLE_*, EXPO_*, WORKER_TRIGGER_TOKEN, ...) comes from the
# environment at run time: nothing secret is baked into this image.
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="reminder-worker" \
      org.opencontainers.image.description="Syncs events to Google Calendar and sends Expo push reminders" \
      org.opencontainers.image.version="0.1.0"

# HOME=/tmp: the process runs with a read-only root filesystem in Kubernetes, where /tmp is the only
# writable mount; anything that wants a home directory (caches, platformdirs) lands there.
# PYTHONPATH=/app: `python worker/main.py` puts /app/worker on sys.path, this makes `import worker` work.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOME=/tmp \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it and runAsUser can match it.
RUN groupadd --system --gid 10001 reminder \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin reminder

# Dependencies in their own layer: rebuilt only when requirements.txt (fully pinned) changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# Application code, owned by root and only readable by the runtime user.
COPY worker/ ./worker/
COPY sql/ ./sql/

USER 10001:10001

# Only used by `serve`. No HEALTHCHECK: the default mode (`run`) is a batch pass with no HTTP server;
# Kubernetes ignores HEALTHCHECK anyway and uses the probes in deploy/serve.yaml.
EXPOSE 8080

ENTRYPOINT ["python", "worker/main.py"]
CMD ["run"]
