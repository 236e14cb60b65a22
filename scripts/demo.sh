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
# The demo's own kafkajs clients (its admin and consumer) trip Node 24's TimeoutNegativeWarning, as the
# daemon's do (bin/airflow-eventstream explains it); without this it lands in the demo's output.
exec node --disable-warning=TimeoutNegativeWarning scripts/demo.ts "$@"
