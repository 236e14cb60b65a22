#!/usr/bin/env bash
# Ensure a virtualenv holding one Airflow release, and print its directory on stdout.
#
# Usage: scripts/airflow-venv.sh <version> [kafka]   e.g. scripts/airflow-venv.sh 3.3.2
#
# With the extra `kafka` (3.x only), the venv is venv-<version>-kafka and also holds the Kafka and
# common-messaging providers (AssetWatcher + KafkaMessageQueueTrigger, test/airflow/asset-events.test.ts);
# a venv of its own so that the plain one stays identical to scripts/airflow-schemas.sh's.
#
# The venv is $AIRFLOW_EVENTSTREAM_CACHE/venv-<version> (default ~/.cache/airflow-eventstream),
# outside the clone, shared with scripts/airflow-schemas.sh: same directory, same marker file
# (.airflow-schemas-installed: Python version + requirement list), same extra pins. A venv
# whose marker matches is reused as is (no network); otherwise it is rebuilt from scratch.
#
# Safe when several runs race (two test runs, CI jobs on one machine): the check and the install
# happen under an exclusive flock on venv-<version>.lock, so the second run waits for the first
# and then finds the venv ready. The marker is written last, so a venv whose install was killed
# half-way is detected as incomplete and rebuilt. (scripts/airflow-schemas.sh does not take the
# lock: do not run it while a test run installs the same version.)
#
# Environment:
#   AIRFLOW_EVENTSTREAM_CACHE   cache directory (default $HOME/.cache/airflow-eventstream)
#   PYTHON                      interpreter for the venv (default python3; 3.11 tested)
#   AIRFLOW_VENV_LOCK_TIMEOUT   seconds to wait for another run's install (default 900)
# Progress goes to stderr; only the venv path goes to stdout.
set -euo pipefail

version="${1:-}"
extra="${2:-}"
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([a-z0-9.]*)?$ ]]; then
  echo "usage: $0 <airflow version>, e.g. $0 3.3.2" >&2
  exit 2
fi

CACHE_DIR="${AIRFLOW_EVENTSTREAM_CACHE:-$HOME/.cache/airflow-eventstream}"
PYTHON="${PYTHON:-python3}"
LOCK_TIMEOUT="${AIRFLOW_VENV_LOCK_TIMEOUT:-900}"
venv="$CACHE_DIR/venv-$version${extra:+-$extra}"
marker="$venv/.airflow-schemas-installed"

log() { printf '[airflow-venv %s] %s\n' "$version" "$*" >&2; }

# Extra requirements per major version; keep in sync with PINS_<major> in scripts/airflow-schemas.sh
# (the marker must come out the same for the venv to be shared).
# 3.x builds an async engine (postgresql+asyncpg) at import: without asyncpg every command fails.
pins=()
case "$version" in
  3.*) pins=(asyncpg) ;;
esac
case "$extra" in
  "") ;;
  # Versions checked against 3.3.2 with pip's resolver (2026-12-03); they pull confluent-kafka 2.16.1.
  kafka) [[ "$version" == 3.* ]] || { echo "$0: the kafka extra needs Airflow 3.x (AssetWatcher)" >&2; exit 2; }
    pins+=(apache-airflow-providers-apache-kafka==2.1.0 apache-airflow-providers-common-messaging==2.1.2) ;;
  *) echo "usage: $0 <airflow version> [kafka]" >&2; exit 2 ;;
esac
reqs=("apache-airflow==$version" "psycopg2-binary" ${pins[@]+"${pins[@]}"})
py_version="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
want="$(printf '%s\n' "$py_version" "${reqs[@]}")"

ready() { [ -x "$venv/bin/airflow" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; }

mkdir -p "$CACHE_DIR"
# Fast path, no lock: a finished venv is never modified in place by this script.
if ready; then
  echo "$venv"
  exit 0
fi

exec 9>"$venv.lock"
if ! flock -n 9; then
  log "another run is installing $venv: waiting (up to ${LOCK_TIMEOUT}s)"
  flock -w "$LOCK_TIMEOUT" 9 || { log "gave up waiting for the lock on $venv.lock"; exit 1; }
fi
if ready; then  # the run we waited for made it
  echo "$venv"
  exit 0
fi

t0=$SECONDS
log "creating $venv (${reqs[*]}, Python $py_version)"
rm -rf "$venv"
export PIP_CACHE_DIR="$CACHE_DIR/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
"$PYTHON" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip >&2
"$venv/bin/pip" install --quiet "${reqs[@]}" >&2
"$venv/bin/airflow" version > /dev/null 2>&1 || { log "installed, but '$venv/bin/airflow version' fails"; "$venv/bin/airflow" version >&2 || true; exit 1; }
"$venv/bin/pip" freeze > "$venv/.airflow-schemas-freeze.txt"
printf '%s\n' "$want" > "$marker"
log "ready in $((SECONDS - t0))s"
echo "$venv"
