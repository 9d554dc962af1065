#!/usr/bin/env bash
# The embedded default on a fresh machine: a virtualenv, the pinned packages, then the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-demo.txt
exec .venv/bin/python worker/main.py demo "$@"
