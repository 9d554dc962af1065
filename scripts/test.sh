#!/usr/bin/env bash
# Everything the tests need on a fresh machine, then the whole suite.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -k expo    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Every package pinned with its hashes (scripts/lock.sh writes the lock from requirements-dev.txt).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
# pg_cron for the scheduling test and promtool for the alert rules (Debian packages; need root).
# Where they cannot be installed (no root, no sudo), the run goes on and says so loudly: the pg_cron
# test and the promtool tests are reported SKIPPED with the reason in pytest's summary.
if ! bash scripts/ci-system-deps.sh; then
    echo "################################################################################" >&2
    echo "WARNING: PostgreSQL 15 + pg_cron or promtool could not be installed (needs root or sudo):" >&2
    echo "  tests/integration/test_pg_cron.py and the promtool checks of tests/unit/test_alerts.py" >&2
    echo "  will be SKIPPED, not passed. Run scripts/ci-system-deps.sh as root to run them." >&2
    echo "################################################################################" >&2
    command -v promtool >/dev/null 2>&1 || export REMINDER_WORKER_SKIP_PROMTOOL=1
fi
.venv/bin/ruff check worker tests bench standins demo
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
