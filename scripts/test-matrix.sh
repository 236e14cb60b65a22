#!/usr/bin/env bash
# The tests against several PostgreSQL majors, one after the other, with a summary per version.
#
#   bash scripts/test-matrix.sh [15 16 17 18]   # npm test (unit, integration, airflow) per version; default all four
#   bash scripts/test-matrix.sh --ci            # CI's split (.ci/run, `npm run test:ci`), see below
#   bash scripts/test-matrix.sh 16 17 -- test/integration/slot-gaps.test.ts   # vitest arguments after --
#
# `npm run test:matrix` runs the first form. For each version: `scripts/services.sh up` with
# EVENTSTREAM_PG_VERSION (that version's cluster beside the one Kafka), its `env` evaluated, the
# tests run, and the cluster stopped again if this script started it. Ports: each version's
# default (25432 + (major-15)*10); with EVENTSTREAM_PG_PORT set, that port is 15's and the others
# keep the same offsets from it (35432 -> 18 on 35462), so a second set of services keeps to its range.
#
# --ci runs what CI needs without running anything twice: on PostgreSQL 15 the unit, integration
# and real-Airflow 2.x tiers; on 18 the integration and real-Airflow 3.x tiers (the unit tier does
# not touch PostgreSQL; each Airflow major is judged once, 3.x on the newest server it supports),
# less the files in OWN_CLUSTERS, which bring their own servers of fixed versions.
#
# Ends with one line per version (passed/failed, tests, seconds); exits non-zero if any failed.
# Every version runs even after a failure, so one run shows the whole matrix.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
RESULTS=$(mktemp -d /tmp/eventstream-matrix-XXXXXX)
trap 'rm -rf "$RESULTS"' EXIT
SUMMARY=()
FAILED=0
VITEST_ARGS=()
OWN_CLUSTERS=(
  test/integration/failover.test.ts
  test/integration/standby-decoding.test.ts
  test/integration/standby-preflight.test.ts
  test/integration/invalidation.test.ts
)
# What these test lives on Kafka's side, in the browser or in the repo's scripts: the server version
# changes nothing in them (each reads and writes rows as every other file does). CI's 18 pass leaves
# them out (~3 min); the full matrix runs them on every version.
SERVER_INDEPENDENT=(
  test/integration/consumer.test.ts
  test/integration/serve-topic-per-dag.test.ts
  test/integration/insights.test.ts
  test/integration/serve-fuzz.test.ts
  test/integration/page.test.ts
  test/integration/demo.test.ts
  test/integration/state-topic.test.ts
  test/integration/helm.test.ts
  test/integration/launcher.test.ts
  test/integration/services-script.test.ts
  test/integration/cloudevents.test.ts
  test/integration/filters.test.ts
)

log() { printf '\n==> [matrix] %s\n' "$*" >&2; }

port_of() {
  local base=${PG_PORT_BASE:-25432}
  printf '%s' $((base + ($1 - 15) * 10))
}
# Captured once: each version's run exports its own EVENTSTREAM_PG_PORT.
PG_PORT_BASE=${EVENTSTREAM_PG_PORT:-25432}

# run_version MAJOR AIRFLOW_MAJORS PROJECT...: one version's tests in a subshell (its environment
# stays its own), the vitest JSON report giving the counts.
run_version() {
  local major=$1 airflow=$2
  shift 2
  local port report="$RESULTS/$major.json" rc=0 t0=$SECONDS was_running=0 projects=()
  port=$(port_of "$major")
  for p in "$@"; do projects+=(--project "$p"); done
  # Not `status | grep -q`: under pipefail that pipeline fails whenever status exits non-zero (it
  # does if anything else is unhealthy) or is cut off by grep's early exit, and a cluster that was
  # running before would then be stopped after its pass (CI's fault step found 15 gone so).
  local status
  status=$(EVENTSTREAM_PG_VERSION=$major EVENTSTREAM_PG_PORT=$port bash scripts/services.sh status 2>/dev/null || true)
  if grep -q '^postgres  running' <<<"$status"; then
    was_running=1
  fi
  log "PostgreSQL $major (127.0.0.1:$port): ${*} (Airflow ${airflow:-2,3})"
  (
    export EVENTSTREAM_PG_VERSION=$major EVENTSTREAM_PG_PORT=$port EVENTSTREAM_TEST_AIRFLOW=$airflow
    bash scripts/services.sh up
    eval "$(bash scripts/services.sh env)"
    npx vitest run "${projects[@]}" "${VITEST_ARGS[@]}" --reporter=default --reporter=json --outputFile.json="$report"
  ) || rc=$?
  if (( ! was_running )); then
    EVENTSTREAM_PG_VERSION=$major EVENTSTREAM_PG_PORT=$port bash scripts/services.sh pg-stop || true
  fi
  local counts
  counts=$(node -e '
    const fs = require("node:fs");
    try {
      const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
      console.log(`${r.numPassedTests}/${r.numTotalTests} tests passed, ${r.numFailedTests} failed`);
    } catch { console.log("no test report (the run did not get to its tests)"); }' "$report")
  # Where the pass spent its time: the slowest files, so CI's length can be judged from its log.
  node -e '
    const fs = require("node:fs");
    try {
      const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
      const files = r.testResults.map((f) => [f.endTime - f.startTime, f.name.replace(process.cwd() + "/", "")]);
      files.sort((a, b) => b[0] - a[0]);
      console.error(`[matrix] PostgreSQL ${process.argv[2]}: slowest files`);
      for (const [ms, name] of files.slice(0, 12)) console.error(`  ${(ms / 1000).toFixed(0).padStart(5)} s  ${name}`);
    } catch {}' "$report" "$major" || true
  # The failed tests by name, with their first error lines, again at the very end: a CI record that
  # keeps only the log's tail must still say which test failed and why.
  local failures
  failures=$(node -e '
    const fs = require("node:fs");
    try {
      const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
      for (const f of r.testResults) {
        for (const t of f.assertionResults) {
          if (t.status !== "failed") continue;
          const file = f.name.replace(process.cwd() + "/", "");
          const why = (t.failureMessages[0] ?? "").split("\n").slice(0, 3).map((l) => l.slice(0, 200));
          console.log(`  FAILED ${file} > ${t.fullName}`);
          for (const l of why) console.log(`         ${l}`);
        }
        if (f.status === "failed" && f.assertionResults.every((t) => t.status !== "failed"))
          console.log(`  FAILED ${f.name.replace(process.cwd() + "/", "")}: ${(f.message ?? "").split("\n")[0].slice(0, 200)}`);
      }
    } catch {}' "$report" || true)
  local verdict=passed
  if (( rc != 0 )); then verdict=FAILED; FAILED=1; fi
  SUMMARY+=("$(printf 'PostgreSQL %-3s %-7s %-45s %5d s  (%s)' "$major" "$verdict" "$counts" $((SECONDS - t0)) "$*")")
  if [[ -n $failures ]]; then SUMMARY+=("$failures"); fi
}

if [[ ${1:-} == --ci ]]; then
  shift
  [[ $# -eq 0 ]] || { echo "[matrix] --ci takes no other arguments" >&2; exit 2; }
  run_version 15 2 unit integration airflow
  # These start clusters of their own fixed majors (a 16-18 primary and standby, 17/18 clusters to
  # invalidate slots on) and use the services' Kafka only: the 15 pass runs them, once is enough.
  for f in "${OWN_CLUSTERS[@]}" "${SERVER_INDEPENDENT[@]}"; do VITEST_ARGS+=(--exclude "$f"); done
  run_version 18 3 integration airflow
else
  versions=()
  while [[ $# -gt 0 && $1 != -- ]]; do versions+=("$1"); shift; done
  if [[ ${1:-} == -- ]]; then shift; VITEST_ARGS=("$@"); fi
  (( ${#versions[@]} > 0 )) || versions=(15 16 17 18)
  for v in "${versions[@]}"; do
    [[ $v =~ ^(15|16|17|18)$ ]] || { echo "[matrix] unknown PostgreSQL version '$v' (15, 16, 17, 18)" >&2; exit 2; }
  done
  for v in "${versions[@]}"; do run_version "$v" "" unit integration airflow; done
fi

printf '\n==> [matrix] summary\n'
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
