#!/usr/bin/env bash
# System packages the test suite needs beyond the virtualenv: PostgreSQL 15 with pg_cron, for
# tests/integration/test_pg_cron.py (which skips without them). Debian/Ubuntu only.
#
# Idempotent and fast when everything is there: it checks the files first and only then touches apt.
# Called from .ci/run; runs as root, or through sudo when available.
set -euo pipefail

PG_MAJOR=15
need=()
[ -x "/usr/lib/postgresql/${PG_MAJOR}/bin/postgres" ] || need+=("postgresql-${PG_MAJOR}")
[ -f "/usr/share/postgresql/${PG_MAJOR}/extension/pg_cron.control" ] \
  && [ -f "/usr/lib/postgresql/${PG_MAJOR}/lib/pg_cron.so" ] || need+=("postgresql-${PG_MAJOR}-cron")

if [ "${#need[@]}" -eq 0 ]; then
  echo "ci-system-deps: PostgreSQL ${PG_MAJOR} and pg_cron already installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "ci-system-deps: need root (or sudo) to install: ${need[*]}" >&2
  exit 1
fi

echo "ci-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
