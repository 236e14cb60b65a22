#!/usr/bin/env bash
# npm run demo: the whole product on this machine in one command.
# Starts the local PostgreSQL and Kafka unless PGHOST and KAFKA_BROKERS point elsewhere, builds the
# daemon, then runs scripts/demo.ts (load an Airflow schema, start the daemon, drive task runs,
# print the events a consumer reads from Kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PGHOST:-}" || -z "${KAFKA_BROKERS:-}" ]]; then
  bash scripts/services.sh up
  eval "$(bash scripts/services.sh env)"
fi
npm run -s build
exec node scripts/demo.ts "$@"
