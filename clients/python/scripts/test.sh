#!/usr/bin/env bash
# The Python client's tests (clients/python/tests) against the repo's real Kafka and PostgreSQL, with
# the real daemon (bin/airflow-eventstream) publishing.
#
# Usage (from anywhere; the services up and their settings exported, as .ci/run has them):
#   bash scripts/services.sh up && eval "$(bash scripts/services.sh env)"
#   bash clients/python/scripts/test.sh [pytest arguments]
#
# The venv is $AIRFLOW_EVENTSTREAM_CACHE/venv-python-client-<hash> (default ~/.cache/airflow-eventstream),
# outside the clone, keyed by the hash of pyproject.toml (the requirements and the pinned generator)
# and the interpreter's version: a marker written last says its install finished; the install runs
# under a flock, so two runs on one machine install once. A cached venv needs no network. The package
# itself is installed again on every run (no deps, from a copy of clients/python, so no build
# output lands in the clone), so the tests always see this tree's code.
#
# dist/cli.js (the daemon the end-to-end tests run) is built with `npm run build` when missing.
#
# Environment: AIRFLOW_EVENTSTREAM_CACHE, PYTHON (default python3; 3.11 tested), PYCLIENT_LOCK_TIMEOUT (s, default 600).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
CACHE_DIR="${AIRFLOW_EVENTSTREAM_CACHE:-$HOME/.cache/airflow-eventstream}"
PYTHON="${PYTHON:-python3}"
LOCK_TIMEOUT="${PYCLIENT_LOCK_TIMEOUT:-600}"

log() { printf '[python-client] %s\n' "$*" >&2; }

py_version="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
key="$( (printf '%s\n' "$py_version"; cat "$HERE/pyproject.toml") | sha256sum | cut -c1-12)"
venv="$CACHE_DIR/venv-python-client-$key"
marker="$venv/.installed"

# A copy of the package to install from: pip builds in the source tree it is given.
src=$(mktemp -d /tmp/airflow-eventstream-pyclient-XXXXXX)
trap 'rm -rf "$src"' EXIT
(cd "$HERE" && tar --exclude='*.egg-info' --exclude=build --exclude=__pycache__ --exclude=.pytest_cache -cf - .) | tar -xf - -C "$src"

mkdir -p "$CACHE_DIR"
export PIP_CACHE_DIR="$CACHE_DIR/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
if ! [ -f "$marker" ]; then
  exec 9>"$venv.lock"
  flock -w "$LOCK_TIMEOUT" 9 || { log "gave up waiting for the lock on $venv.lock"; exit 1; }
  if ! [ -f "$marker" ]; then
    t0=$SECONDS
    log "creating $venv (Python $py_version)"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip setuptools >&2
    "$venv/bin/pip" install --quiet "$src[test]" >&2
    date -u +%FT%TZ > "$marker"
    log "venv ready in $((SECONDS - t0))s"
  fi
  exec 9>&-
fi
"$venv/bin/pip" install --quiet --no-deps --no-build-isolation --force-reinstall "$src" >&2

if [ ! -f "$REPO/dist/cli.js" ]; then
  log "dist/cli.js missing: npm run build"
  (cd "$REPO" && npm run build >&2)
fi

cd "$HERE"
# No bytecode or pytest cache in the clone; the tests import the installed package, not ./src.
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
