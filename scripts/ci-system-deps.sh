#!/usr/bin/env bash
# System packages the test suite needs beyond the virtualenv. Debian/Ubuntu only.
#   * PostgreSQL 15 with pg_cron, for tests/integration/test_pg_cron.py (which skips without them);
#   * promtool, Prometheus' rule checker (Debian's `prometheus` package ships it), for
#     tests/unit/test_alerts.py (which FAILS without it unless REMINDER_WORKER_SKIP_PROMTOOL=1).
#
# Idempotent and fast when everything is there: it checks the files first and only then touches apt
# (one `apt-get update`, one `apt-get install` for whatever is missing).
# Called from scripts/test.sh (.ci/run); runs as root, or through sudo when available.
set -euo pipefail

PG_MAJOR=15
need=()
[ -x "/usr/lib/postgresql/${PG_MAJOR}/bin/postgres" ] || need+=("postgresql-${PG_MAJOR}")
[ -f "/usr/share/postgresql/${PG_MAJOR}/extension/pg_cron.control" ] \
  && [ -f "/usr/lib/postgresql/${PG_MAJOR}/lib/pg_cron.so" ] || need+=("postgresql-${PG_MAJOR}-cron")
command -v promtool >/dev/null 2>&1 || need+=("prometheus")

if [ "${#need[@]}" -eq 0 ]; then
  echo "ci-system-deps: PostgreSQL ${PG_MAJOR}, pg_cron and promtool already installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "ci-system-deps: need root (or sudo) to install: ${need[*]}" >&2
  exit 1
fi

echo "ci-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"

# Only promtool is wanted from `prometheus`: where systemd runs (a developer's machine), do not leave
# the Prometheus server the package enables running. In containers the package starts nothing.
if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  "${as_root[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null 2>&1 || { echo "ci-system-deps: promtool still missing after installing prometheus" >&2; exit 1; }
