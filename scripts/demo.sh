#!/usr/bin/env bash
# The embedded default on a fresh machine: a virtualenv, the locked packages, then the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Every package pinned with its hashes (scripts/lock.sh writes the lock from requirements-demo.txt).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-demo.lock
exec .venv/bin/python worker/main.py demo "$@"
