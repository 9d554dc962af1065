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
# pg_cron for the scheduling test (Debian package; needs root). In CI it must be there; on a
# developer's machine without root the test says it was skipped, and why.
if ! bash scripts/ci-system-deps.sh; then
    if [ -n "${CI:-}" ]; then exit 1; fi
    echo "warning: PostgreSQL 15 + pg_cron could not be installed; tests/integration/test_pg_cron.py will skip" >&2
fi
.venv/bin/ruff check worker tests bench standins demo
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
