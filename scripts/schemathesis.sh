#!/usr/bin/env bash
# Ensure a virtualenv holding schemathesis (the API fuzzer of test/integration/serve-fuzz.test.ts)
# and print the path of its `st` binary on stdout.
#
# Usage: scripts/schemathesis.sh
#
# The venv is $AIRFLOW_EVENTSTREAM_CACHE/venv-schemathesis-<version> (default
# ~/.cache/airflow-eventstream), outside the clone, like scripts/airflow-venv.sh's: a marker file
# (Python version + requirement) written last says the install finished, so a venv whose install
# was killed half-way is rebuilt; the check and the install run under an exclusive flock, so two
# test runs racing on one machine install it once. A venv whose marker matches is reused without
# network.
#
# Environment:
#   AIRFLOW_EVENTSTREAM_CACHE   cache directory (default $HOME/.cache/airflow-eventstream)
#   PYTHON                      interpreter for the venv (default python3; 3.11 tested)
#   SCHEMATHESIS_VERSION        the release (default below; 4.x: the CLI flags the test uses are 4.x's)
#   SCHEMATHESIS_LOCK_TIMEOUT   seconds to wait for another run's install (default 600)
# Progress goes to stderr; only the binary's path goes to stdout.
set -euo pipefail

version="${SCHEMATHESIS_VERSION:-4.32.5}"
CACHE_DIR="${AIRFLOW_EVENTSTREAM_CACHE:-$HOME/.cache/airflow-eventstream}"
PYTHON="${PYTHON:-python3}"
LOCK_TIMEOUT="${SCHEMATHESIS_LOCK_TIMEOUT:-600}"
venv="$CACHE_DIR/venv-schemathesis-$version"
marker="$venv/.schemathesis-installed"

log() { printf '[schemathesis %s] %s\n' "$version" "$*" >&2; }

py_version="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
want="$(printf '%s\n' "$py_version" "schemathesis==$version")"

ready() { [ -x "$venv/bin/st" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; }

mkdir -p "$CACHE_DIR"
if ready; then
  echo "$venv/bin/st"
  exit 0
fi

exec 9>"$venv.lock"
if ! flock -n 9; then
  log "another run is installing $venv: waiting (up to ${LOCK_TIMEOUT}s)"
  flock -w "$LOCK_TIMEOUT" 9 || { log "gave up waiting for the lock on $venv.lock"; exit 1; }
fi
if ready; then
  echo "$venv/bin/st"
  exit 0
fi

t0=$SECONDS
log "creating $venv (schemathesis==$version, Python $py_version)"
rm -rf "$venv"
export PIP_CACHE_DIR="$CACHE_DIR/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
"$PYTHON" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip >&2
"$venv/bin/pip" install --quiet "schemathesis==$version" >&2
"$venv/bin/st" --version > /dev/null 2>&1 || { log "installed, but '$venv/bin/st --version' fails"; "$venv/bin/st" --version >&2 || true; exit 1; }
printf '%s\n' "$want" > "$marker"
log "ready in $((SECONDS - t0))s"
echo "$venv/bin/st"
