#!/usr/bin/env bash
# shellcheck disable=SC2030,SC2031  # Airflow commands run in ( subshells ) on purpose
# Regenerate test/fixtures/airflow/: the real metadata schema of one Airflow 2.x and one
# Airflow 3.x release, made by installing each release in its own virtualenv, running
# `airflow db migrate` against a fresh PostgreSQL database and dumping the result.
#
# Writes test/fixtures/airflow/:
#   airflow-<version>.sql           schema of a fresh install (tables made from the ORM models)
#   airflow-<version>-migrated.sql  same schema reached by running every migration file, i.e.
#                                   the column order of an installation upgraded over the years
#   versions.json                   {"2": ..., "3": ..., "files": ..., "migratedFiles": ...}
#   observed/scheduler-<version>.txt  with --observe only (see --observe)
#
# Usage: scripts/airflow-schemas.sh [--latest] [--keep-db|--drop-db] [--observe]
#   --latest    ask PyPI for the newest 2.11.x and 3.x instead of the pinned versions below
#   --drop-db   drop the per-version databases at the end (default: keep them for inspection)
#   --observe   also run a real scheduler (LocalExecutor; 3.x adds dag-processor and api-server
#               on 127.0.0.1:${AIRFLOW_OBSERVE_PORT:-18080}) on a two-task DAG with one retry, with
#               a test_decoding slot, and write observed/scheduler-<version>.txt: every change to
#               task_instance, dag_run, xcom, task_instance_history (REPLICA IDENTITY FULL in that
#               throwaway database, so UPDATEs show old and new rows). Needs wal_level=logical.
#
# Environment:
#   PGHOST PGPORT PGUSER PGPASSWORD   the PostgreSQL to migrate against (default 127.0.0.1:55432
#                                     postgres/postgres, the project's services). It needs
#                                     CREATEDB; databases: airflow_schema_<version>[_migrated].
#   AIRFLOW_EVENTSTREAM_CACHE         cache dir for venvs and pip's cache
#                                     (default $HOME/.cache/airflow-eventstream)
#   AIRFLOW_V2 / AIRFLOW_V3           override the versions
#   PYTHON                            interpreter for the venvs (default python3; 3.11 tested)
#   PG_DUMP                           pg_dump binary (must be >= the server's major version)
#
# Idempotent: a venv is reused when its marker says it holds the same requirement set; the
# databases are dropped and re-created on every run; the fixtures are rewritten in place and
# come out byte-identical for the same versions and the same pg_dump (observed/ files do not:
# they hold timestamps and ids of a real run).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$REPO_ROOT/test/fixtures/airflow"
CACHE_DIR="${AIRFLOW_EVENTSTREAM_CACHE:-$HOME/.cache/airflow-eventstream}"
PYTHON="${PYTHON:-python3}"
PG_DUMP="${PG_DUMP:-pg_dump}"

export PGHOST="${PGHOST:-127.0.0.1}"
export PGPORT="${PGPORT:-55432}"
export PGUSER="${PGUSER:-postgres}"
export PGPASSWORD="${PGPASSWORD:-postgres}"
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"  # no NOTICEs from IF EXISTS

# Pinned defaults: newest 2.11 patch and newest 3.x on PyPI when this was last run.
AIRFLOW_V2="${AIRFLOW_V2:-2.11.2}"
AIRFLOW_V3="${AIRFLOW_V3:-3.3.2}"

# Extra pins: Airflow's constraint files are not reachable here, so whatever an unconstrained
# `pip install apache-airflow==X psycopg2-binary` resolves to must be corrected by hand.
# Found by trying on Python 3.11 (see docs/airflow-schemas.md).
# shellcheck disable=SC2034  # PINS_<major> are read through a nameref in run_version
PINS_2=()
# 3.x opens an async engine for postgresql at import time (postgresql+asyncpg); asyncpg comes
# only with the [postgres] extra / postgres provider, so without it every `airflow` command fails
# with "No module named 'asyncpg'".
# shellcheck disable=SC2034
PINS_3=(asyncpg)

KEEP_DB=1
LATEST=0
OBSERVE=0
for arg in "$@"; do
  case "$arg" in
    --latest) LATEST=1 ;;
    --keep-db) KEEP_DB=1 ;;
    --drop-db) KEEP_DB=0 ;;
    --observe) OBSERVE=1 ;;
    -h|--help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[airflow-schemas] %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
TIMINGS=()
timing() { # timing <label> <start>
  local t; t="$(elapsed "$2")"
  log "  done: $1 in $t"
  TIMINGS+=("$1: $t")
}

mkdir -p "$CACHE_DIR" "$OUT_DIR"
export PIP_CACHE_DIR="$CACHE_DIR/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "$LATEST" = 1 ]; then
  log "asking PyPI for the newest 2.11.x and 3.x"
  all="$("$PYTHON" -m pip index versions apache-airflow 2>/dev/null | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n')"
  AIRFLOW_V2="$(grep -E '^2\.11\.[0-9]+$' <<<"$all" | sort -V | tail -1)"
  AIRFLOW_V3="$(grep -E '^3\.[0-9]+\.[0-9]+$' <<<"$all" | sort -V | tail -1)"
fi
log "versions: 2 => $AIRFLOW_V2, 3 => $AIRFLOW_V3"
log "postgres: $PGUSER@$PGHOST:$PGPORT ($(psql -d postgres -Atc 'show server_version'))"
log "cache:    $CACHE_DIR"

# libpq URL for SQLAlchemy, with user/password/host quoted.
sqlalchemy_url() { # sqlalchemy_url <dbname>
  "$PYTHON" - "$1" <<'PY'
import os, sys
from urllib.parse import quote
db = sys.argv[1]
user = quote(os.environ["PGUSER"], safe="")
pw = os.environ.get("PGPASSWORD", "")
auth = user + (":" + quote(pw, safe="") if pw else "")
host, port = os.environ["PGHOST"], os.environ["PGPORT"]
if host.startswith("/"):  # unix socket directory
    print(f"postgresql+psycopg2://{auth}@/{db}?host={quote(host, safe='')}&port={port}")
else:
    print(f"postgresql+psycopg2://{auth}@{host}:{port}/{db}")
PY
}

ensure_venv() { # ensure_venv <version> <pins...>
  local version="$1"; shift
  local venv="$CACHE_DIR/venv-$version"
  local reqs=("apache-airflow==$version" "psycopg2-binary" "$@")
  local want; want="$(printf '%s\n' "$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')" "${reqs[@]}")"
  if [ -x "$venv/bin/airflow" ] && [ -f "$venv/.airflow-schemas-installed" ] \
     && [ "$(cat "$venv/.airflow-schemas-installed")" = "$want" ]; then
    log "venv $venv: present, reusing"
    return
  fi
  local t0; t0="$(now)"
  log "venv $venv: creating"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  log "pip install ${reqs[*]}"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "${reqs[@]}"
  printf '%s\n' "$want" > "$venv/.airflow-schemas-installed"
  "$venv/bin/pip" freeze > "$venv/.airflow-schemas-freeze.txt"
  timing "install $version" "$t0"
}

# Lines that tie a dump to the server or pg_dump release that made it, and fail (or are not
# wanted) when loading into another database on PostgreSQL 15+.
sanitize_dump() {
  sed -E \
    -e '/^\\(un)?restrict /d' \
    -e '/^SET transaction_timeout/d' \
    -e '/^ALTER .* OWNER TO /d' \
    -e '/^-- Dumped (from|by) /d' \
    -e '/^COMMENT ON SCHEMA public IS/d' \
    -e '/^CREATE SCHEMA public;$/d'
}

# Load a dump into an empty database with ON_ERROR_STOP=1: the fixture must load anywhere.
check_dump() { # check_dump <file>
  local out="$1" check="airflow_schema_check" n
  psql -d postgres -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $check WITH (FORCE)" -c "CREATE DATABASE $check"
  psql -d "$check" -q -X -v ON_ERROR_STOP=1 -f "$out" > /dev/null
  n="$(psql -d "$check" -Atc "select count(*) from pg_tables where schemaname = 'public'")"
  psql -d postgres -q -c "DROP DATABASE $check"
  echo "$n"
}

# migrate_db <version> <db> [airflow db migrate args...]
migrate_db() {
  local version="$1" db="$2"; shift 2
  local venv="$CACHE_DIR/venv-$version"
  log "database $db: drop if exists, create"
  psql -d postgres -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  local home; home="$(mktemp -d "${TMPDIR:-/tmp}/airflow-home-$version.XXXXXX")"
  log "airflow db migrate${*:+ $*} (AIRFLOW_HOME=$home)"
  (
    export AIRFLOW_HOME="$home"
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN; AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$(sqlalchemy_url "$db")"
    export AIRFLOW__CORE__LOAD_EXAMPLES=False
    export AIRFLOW__CORE__DAGS_FOLDER="$home/dags"
    mkdir -p "$home/dags"
    "$venv/bin/airflow" db migrate "$@" > "$home/migrate.log" 2>&1 || { tail -40 "$home/migrate.log" >&2; exit 1; }
  )
  rm -rf "$home"
}

# dump_db <db> <file>
dump_db() {
  local db="$1" out="$2"
  log "pg_dump --schema-only $db > ${out#"$REPO_ROOT"/}"
  "$PG_DUMP" --schema-only --no-owner --no-privileges -d "$db" | sanitize_dump > "$out.tmp"
  mv "$out.tmp" "$out"
}

DUMPED=()
HEADS=()
run_version() { # run_version <major> <version>
  local major="$1" version="$2" t0 n
  local db="airflow_schema_${version//[.-]/_}"
  local out="$OUT_DIR/airflow-$version.sql"
  local out_mig="$OUT_DIR/airflow-$version-migrated.sql"
  log "== Airflow $version (major $major) =="
  local -n pins="PINS_$major"
  ensure_venv "$version" ${pins[@]+"${pins[@]}"}

  # 1. A fresh install: on an empty database `airflow db migrate` creates the tables from the
  #    ORM models (metadata.create_all) and stamps the alembic head.
  t0="$(now)"
  migrate_db "$version" "$db"
  timing "migrate $version (fresh install)" "$t0"
  local head; head="$(psql -d "$db" -Atc 'select version_num from alembic_version')"
  log "alembic head: $head"
  HEADS+=("$head")

  # 2. An upgraded install: with an explicit --to-revision Airflow runs every migration file
  #    from its oldest base instead. Same types, but another column order (attnum), like a
  #    database that was upgraded release after release.
  t0="$(now)"
  migrate_db "$version" "${db}_migrated" --to-revision "$head"
  timing "migrate $version (migration files)" "$t0"

  t0="$(now)"
  dump_db "$db" "$out"
  dump_db "${db}_migrated" "$out_mig"
  timing "dump $version" "$t0"

  t0="$(now)"
  log "check: load both dumps into an empty database with ON_ERROR_STOP=1"
  n="$(check_dump "$out")"
  local n2; n2="$(check_dump "$out_mig")"
  timing "check $version ($n / $n2 tables)" "$t0"
  if [ "$KEEP_DB" = 0 ]; then
    psql -d postgres -q -c "DROP DATABASE $db WITH (FORCE)" -c "DROP DATABASE ${db}_migrated WITH (FORCE)"
  else
    log "kept databases $db and ${db}_migrated for inspection"
  fi
  DUMPED+=("$out" "$out_mig")
}


# ---- --observe: the real write pattern -------------------------------------------------------
OBSERVE_PIDS=()  # Airflow processes started by observe_version (in its subshell)
stop_observed() {
  local p
  for p in ${OBSERVE_PIDS[@]+"${OBSERVE_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${OBSERVE_PIDS[@]+"${OBSERVE_PIDS[@]}"}; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 1; done
    if kill -0 "$p" 2>/dev/null; then log "pid $p still alive after 10s: SIGKILL"; kill -9 "$p" 2>/dev/null || true; fi
  done
  OBSERVE_PIDS=()
}

observe_version() { # observe_version <version>
  local version="$1" t0; t0="$(now)"
  local venv="$CACHE_DIR/venv-$version"
  local db="airflow_observe_${version//[.-]/_}" slot="airflow_observe_${version//[.-]/_}"
  local out="$OUT_DIR/observed/scheduler-$version.txt"
  local port="${AIRFLOW_OBSERVE_PORT:-18080}"
  mkdir -p "$OUT_DIR/observed"
  log "observe $version: database $db, slot $slot"
  psql -d postgres -q -v ON_ERROR_STOP=1 \
    -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot'" \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" > /dev/null
  local home; home="$(mktemp -d "${TMPDIR:-/tmp}/airflow-observe-$version.XXXXXX")"
  mkdir -p "$home/dags"
  cat > "$home/dags/cdc_probe.py" <<'PY'
import datetime

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task

with DAG("cdc_probe", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False):

    @task
    def hello():
        return {"msg": "hello"}

    @task(retries=1, retry_delay=datetime.timedelta(seconds=1))
    def flaky(v, ti=None):
        if ti.try_number < 2:
            raise RuntimeError("first try fails on purpose")
        return v

    flaky(hello())
PY
  (
    trap stop_observed EXIT  # a subshell does not inherit the parent's trap
    export AIRFLOW_HOME="$home"
    export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN; AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$(sqlalchemy_url "$db")"
    export AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER="$home/dags"
    export AIRFLOW__CORE__EXECUTOR=LocalExecutor AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
    export AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL=5 AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL=5
    export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
    export AIRFLOW__API_AUTH__JWT_SECRET=airflow-schemas-observe-jwt-secret-0123456789
    export AIRFLOW__API__SECRET_KEY=airflow-schemas-observe AIRFLOW__API__PORT="$port"
    export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$port/execution/"
    "$venv/bin/airflow" db migrate > "$home/migrate.log" 2>&1 || { tail -40 "$home/migrate.log" >&2; exit 1; }
    psql -d "$db" -q -v ON_ERROR_STOP=1 \
      -c "ALTER TABLE task_instance REPLICA IDENTITY FULL" -c "ALTER TABLE dag_run REPLICA IDENTITY FULL" \
      -c "ALTER TABLE xcom REPLICA IDENTITY FULL" -c "ALTER TABLE task_instance_history REPLICA IDENTITY FULL" \
      -c "SELECT pg_create_logical_replication_slot('$slot', 'test_decoding')" > /dev/null
    if [[ "$version" == 3.* ]]; then
      log "starting api-server (127.0.0.1:$port), dag-processor, scheduler"
      "$venv/bin/airflow" api-server --host 127.0.0.1 --port "$port" > "$home/api-server.log" 2>&1 & OBSERVE_PIDS+=($!)
      "$venv/bin/airflow" dag-processor > "$home/dag-processor.log" 2>&1 & OBSERVE_PIDS+=($!)
    else
      log "starting scheduler"
    fi
    "$venv/bin/airflow" scheduler > "$home/scheduler.log" 2>&1 & OBSERVE_PIDS+=($!)
    local st=""
    for _ in $(seq 1 60); do
      [ "$(psql -d "$db" -Atc "SELECT count(*) FROM serialized_dag WHERE dag_id = 'cdc_probe'")" = 1 ] && break
      sleep 2
    done
    "$venv/bin/airflow" dags unpause cdc_probe > "$home/unpause.log" 2>&1 || true
    log "airflow dags trigger cdc_probe"
    "$venv/bin/airflow" dags trigger cdc_probe > "$home/trigger.log" 2>&1 || { tail -20 "$home/trigger.log" >&2; }
    for _ in $(seq 1 90); do
      st="$(psql -d "$db" -Atc "SELECT state FROM dag_run WHERE dag_id = 'cdc_probe' ORDER BY id DESC LIMIT 1")"
      [[ "$st" == success || "$st" == failed ]] && break
      sleep 2
    done
    sleep 3  # let the last UPDATEs land
    stop_observed
    log "dag_run state: ${st:-none} (logs in $home)"
    [ "$st" = success ] || { log "observe $version: run did not succeed, see $home"; exit 1; }
    {
      echo "# Airflow $version, LocalExecutor, 'airflow dags trigger cdc_probe' (hello >> flaky; flaky fails try 1, retries=1)."
      echo "# test_decoding output (xid|data), tables task_instance, dag_run, xcom, task_instance_history only;"
      echo "# REPLICA IDENTITY FULL was set for this capture: old-key = the whole old row minus NULL columns."
      echo "# Written by scripts/airflow-schemas.sh --observe. Not deterministic (timestamps, ids, xids)."
      psql -d "$db" -At -c "SELECT xid, replace(data, E'\n', '\\n') FROM pg_logical_slot_get_changes('$slot', NULL, NULL, 'include-xids', '1', 'skip-empty-xacts', '1')
        WHERE data ~ '^(BEGIN|COMMIT)' OR data ~ '^table public\.(task_instance|dag_run|xcom|task_instance_history): '" \
        | awk '/\|BEGIN/ { b = $0; n = 0; next } /\|COMMIT/ { if (n) print; next } { if (!n && b != "") print b; n++; print }'
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    psql -d postgres -q -c "SELECT pg_drop_replication_slot('$slot')" > /dev/null
    if [ "$KEEP_DB" = 0 ]; then psql -d postgres -q -c "DROP DATABASE $db WITH (FORCE)"; fi
    rm -rf "$home"
  )
  log "wrote ${out#"$REPO_ROOT"/} ($(grep -c '^[0-9]*|table ' "$out") row changes)"
  timing "observe $version" "$t0"
}

T_ALL="$(now)"
run_version 2 "$AIRFLOW_V2"
run_version 3 "$AIRFLOW_V3"
if [ "$OBSERVE" = 1 ]; then
  observe_version "$AIRFLOW_V2"
  observe_version "$AIRFLOW_V3"
fi

# Remove dumps of versions no longer listed.
for f in "$OUT_DIR"/airflow-*.sql; do
  [ -e "$f" ] || continue
  case " ${DUMPED[*]} " in *" $f "*) ;; *) log "removing stale ${f#"$REPO_ROOT"/}"; rm -f "$f" ;; esac
done

cat > "$OUT_DIR/versions.json" <<EOF
{
  "2": "$AIRFLOW_V2",
  "3": "$AIRFLOW_V3",
  "files": {
    "2": "airflow-$AIRFLOW_V2.sql",
    "3": "airflow-$AIRFLOW_V3.sql"
  },
  "migratedFiles": {
    "2": "airflow-$AIRFLOW_V2-migrated.sql",
    "3": "airflow-$AIRFLOW_V3-migrated.sql"
  },
  "alembicHeads": {
    "2": "${HEADS[0]}",
    "3": "${HEADS[1]}"
  }
}
EOF
log "wrote ${OUT_DIR#"$REPO_ROOT"/}/versions.json"
TIMINGS+=("total: $(elapsed "$T_ALL")")
log "timings:"
for t in "${TIMINGS[@]}"; do log "  $t"; done
