# reminder-worker: one image for every mode.
#   docker run IMAGE                 -> one pass, then exit (CronJob; default CMD)
#   docker run IMAGE serve           -> HTTP trigger on :8080 (POST /run, GET /healthz, /readyz, /metrics)
#   docker run IMAGE migrate         -> applies the SQL shipped in the package to DATABASE_URL
#   docker run IMAGE run --loop --interval 60
# Configuration (DATABASE_URL, SUPABASE_*, GOOGLE_*, EXPO_*, WORKER_TRIGGER_TOKEN, ...) comes from the
# environment at run time: nothing secret is baked into this image.
#
# Two stages: `build` turns pyproject.toml, worker/ and sql/ into the wheel (the same wheel
# tests/unit/test_packaging.py builds and checks), with the build backend pinned by hash in
# requirements-build.lock; the image installs requirements.lock (every package pinned by hash), then
# that wheel without dependencies. Only the wheel leaves the build stage: no stand-ins, demo, tests
# or build tools in the image.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY requirements-build.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-build.lock
COPY pyproject.toml ./
COPY sql/ ./sql/
COPY worker/ ./worker/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --no-index --wheel-dir /dist .


FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="reminder-worker" \
      org.opencontainers.image.description="Syncs events to Google Calendar and sends Expo push reminders" \
      org.opencontainers.image.version="0.1.0"

# HOME=/tmp: the process runs with a read-only root filesystem in Kubernetes, where /tmp is the only
# writable mount; anything that wants a home directory (caches, platformdirs) lands there.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it and runAsUser can match it.
RUN groupadd --system --gid 10001 reminder \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin reminder

# Dependencies in their own layer, rebuilt only when the lock changes. --require-hashes: every
# package, transitive ones included, must be in the lock with the hash of the file downloaded.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# The worker itself: the wheel from the build stage, without dependencies (`pip check` proves the
# lock satisfies the wheel's). Installed by root into site-packages, so the runtime user can only read
# it, with its console script /usr/local/bin/reminder-worker and its SQL as package data.
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps --no-index /tmp/dist/reminder_worker-*.whl \
    && pip check \
    && rm -rf /tmp/dist

USER 10001:10001

# Only used by `serve`. No HEALTHCHECK: the default mode (`run`) is a batch pass with no HTTP server;
# Kubernetes ignores HEALTHCHECK anyway and uses the probes in deploy/serve.yaml.
EXPOSE 8080

ENTRYPOINT ["reminder-worker"]
CMD ["run"]
