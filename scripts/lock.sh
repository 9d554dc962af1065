#!/usr/bin/env bash
# Regenerates the lock files from the readable requirements. Run it after editing requirements*.txt or
# pyproject.toml's [build-system], and commit the locks with the change (tests/unit/test_packaging.py
# fails while a lock is stale).
#
#   requirements.lock        <- requirements.txt        the runtime: what the image installs
#   requirements-demo.lock   <- requirements-demo.txt   runtime + embedded PostgreSQL: scripts/demo.sh
#   requirements-dev.lock    <- requirements-dev.txt    demo + test tools: scripts/test.sh and CI
#   requirements-build.lock  <- pyproject.toml          the build backend the image builds the wheel with
#
# Every package is pinned with the sha256 of every file PyPI has for that version; each lock is
# constrained by the one before it, so a package has the same version in all of them.
#
#   bash scripts/lock.sh              # keep what is locked, resolve only what changed
#   bash scripts/lock.sh --upgrade    # move every package to the newest version allowed
#   bash scripts/lock.sh --upgrade-package httpx   # just that one (any pip-compile option goes through)
#
# Needs Python 3.11 (the locks hold its environment markers) and the package index. The machine's pip
# configuration (extra indexes, find-links, constraints) is ignored, so the locks record what PyPI
# serves; set PIP_INDEX_URL when PyPI is reachable only through a mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PIP_TOOLS_VERSION=7.6.2

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "lock.sh: $PYTHON is not Python 3.11; set PYTHON=python3.11" >&2
    exit 2
fi

export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_CONSTRAINT PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_NO_INDEX PIP_REQUIRE_HASHES
export CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh"

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install --quiet "pip-tools==$PIP_TOOLS_VERSION"

compile() {
    "$tools/venv/bin/pip-compile" --quiet --resolver=backtracking --generate-hashes --allow-unsafe \
        --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --newline=LF \
        --cache-dir "$tools/cache" "$@"
}

compile "$@" --output-file requirements.lock requirements.txt
compile "$@" --constraint requirements.lock --output-file requirements-demo.lock requirements-demo.txt
compile "$@" --constraint requirements-demo.lock --output-file requirements-dev.lock requirements-dev.txt
# Reading pyproject.toml runs the build backend here, which leaves reminder_worker.egg-info behind.
[ -e reminder_worker.egg-info ] && had_egg_info=1 || had_egg_info=
compile "$@" --constraint requirements-dev.lock --only-build-deps --build-deps-for wheel \
    --output-file requirements-build.lock pyproject.toml
[ -n "$had_egg_info" ] || rm -rf reminder_worker.egg-info
echo "lock.sh: wrote requirements.lock requirements-demo.lock requirements-dev.lock requirements-build.lock"
