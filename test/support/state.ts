import { Kafka, logLevel } from "kafkajs";
import { readCurrentState, type CurrentState } from "../../src/sink/state-reader.js";
import { services, sleep, withPg } from "./harness.js";

/**
 * The current-state topic against the database: what a reader folds from the topic
 * (readCurrentState) must be every task instance and DAG run of the database, with its state (and
 * a TI's try_number), and nothing else. Keys are built here from the agreed format, not with the
 * daemon's stateKey, so a change of format fails the check.
 */

/** daemonEnv's EVENTSTREAM_STATE_TOPIC. */
export function stateTopicOf(db: string): string {
  return `state.${db}`;
}

interface Row {
  state: string | null;
  try_number: number | null;
}

async function databaseRows(db: string): Promise<Map<string, Row>> {
  const rows = new Map<string, Row>();
  await withPg(db, async (c) => {
    const tis = await c.query<{
      dag_id: string;
      run_id: string;
      task_id: string;
      map_index: number;
      state: string | null;
      try_number: number;
    }>("SELECT dag_id, run_id, task_id, map_index, state, try_number FROM task_instance");
    for (const r of tis.rows) {
      const key = JSON.stringify({ type: "task_instance", dag_id: r.dag_id, run_id: r.run_id, task_id: r.task_id, map_index: r.map_index });
      rows.set(key, { state: r.state, try_number: r.try_number });
    }
    const runs = await c.query<{ dag_id: string; run_id: string; state: string | null }>("SELECT dag_id, run_id, state FROM dag_run");
    for (const r of runs.rows)
      rows.set(JSON.stringify({ type: "dag_run", dag_id: r.dag_id, run_id: r.run_id }), { state: r.state, try_number: null });
  });
  return rows;
}

export interface StateComparison {
  problems: string[];
  rows: number;
  state: CurrentState;
  readMs: number;
}

/** One read of the state topic compared with the database's rows now. */
export async function compareStateWithDatabase(db: string, topic = stateTopicOf(db)): Promise<StateComparison> {
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-state" });
  const started = Date.now();
  const state = await readCurrentState(kafka, topic, { clientId: "test-state", timeoutMs: 60_000 });
  const readMs = Date.now() - started;
  const rows = await databaseRows(db);
  const problems: string[] = [];
  for (const [key, row] of rows) {
    const entry = state.entries.get(key);
    if (entry === undefined) {
      problems.push(`missing from the state topic: ${key} (state ${row.state})`);
      continue;
    }
    const e = entry.event as { state?: unknown; try_number?: unknown; type?: unknown };
    const tryDiffers = e.type === "task_instance" && e.try_number !== row.try_number;
    if (e.state !== row.state || tryDiffers)
      problems.push(
        `${key}: state topic says ${String(e.state)}/try ${String(e.try_number)} at ${entry.position}, database ${row.state}/try ${row.try_number}`,
      );
  }
  for (const key of state.entries.keys()) if (!rows.has(key)) problems.push(`in the state topic but not in the database: ${key}`);
  if (state.invalid > 0) problems.push(`${state.invalid} records not in the state topic's format`);
  return { problems, rows: rows.size, state, readMs };
}

/**
 * Compares until equal or `timeoutMs` passes (the daemon may still be publishing the last
 * changes); the last comparison either way.
 */
export async function waitForStateEqual(db: string, timeoutMs = 60_000, topic = stateTopicOf(db)): Promise<StateComparison> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await compareStateWithDatabase(db, topic);
    if (r.problems.length === 0 || Date.now() > deadline) return r;
    await sleep(1_000);
  }
}
