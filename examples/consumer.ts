/**
 * A consumer of airflow-eventstream's events for a few DAGs, keeping its positions in a JSON file.
 *
 *   npm run build     # the package's dist/, which "airflow-eventstream" resolves to here
 *   KAFKA_BROKERS=localhost:9092 DAGS=etl,report node examples/consumer.ts
 *
 * Settings (environment): KAFKA_BROKERS, DAGS (comma-separated), GROUP_ID (default
 * "example-consumer"), EVENTSTREAM_TOPIC / EVENTSTREAM_STATE_TOPIC as the daemon has them,
 * FROM (where a DAG without a stored position starts; default "state"), POSITIONS_FILE (default
 * "positions.json"). Ctrl-C stops it after the event in hand.
 *
 * A real consumer keeps its position in the same transaction as what the handler writes (a row
 * per DAG in its own database): then "handled" and "saved" can never disagree after a crash.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { eventConsumer, type PositionStore } from "airflow-eventstream";

const file = process.env.POSITIONS_FILE ?? "positions.json";
const positions: Record<string, string> = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, string>) : {};

const store: PositionStore = {
  load: async (dagId) => positions[dagId] ?? null,
  save: async (dagId, position) => {
    positions[dagId] = position;
    // Written whole and renamed into place, so a crash leaves the old file or the new one.
    writeFileSync(`${file}.tmp`, JSON.stringify(positions, null, 2));
    renameSync(`${file}.tmp`, file);
  },
};

const consumer = eventConsumer({
  brokers: (process.env.KAFKA_BROKERS ?? "localhost:9092").split(","),
  groupId: process.env.GROUP_ID ?? "example-consumer",
  topic: process.env.EVENTSTREAM_TOPIC ?? "airflow.events",
  stateTopic: process.env.EVENTSTREAM_STATE_TOPIC ?? "airflow.state",
  dags: (process.env.DAGS ?? "").split(",").filter((d) => d !== ""),
});

process.once("SIGINT", () => void consumer.stop());
process.once("SIGTERM", () => void consumer.stop());

await consumer.run({
  from: process.env.FROM ?? "state",
  positions: store,
  onBootstrap: (info) =>
    console.log(`bootstrap (${info.reason}) of ${info.dags.join(", ")}: ${info.rows} current rows as of ${info.position}`),
  handler: async (event, ctx) => {
    const what =
      event.type === "task_instance"
        ? `${event.task_id} ${event.state}`
        : event.type === "dag_run"
          ? `run ${event.run_id} ${event.state}`
          : event.type;
    console.log(`${ctx.bootstrap ? "row  " : "event"} ${ctx.position} ${ctx.dagId ?? "*"} ${what}`);
  },
});
