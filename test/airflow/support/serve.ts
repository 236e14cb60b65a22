import { join } from "node:path";
import { Kafka, logLevel } from "kafkajs";
import { StreamEvent } from "../../../src/airflow/events.js";
import { readToEnd } from "../../../src/sink/read-to-end.js";
import { InsightEvent } from "../../../src/serve/schemas.js";
import { consume, services, waitFor, withPg, type Consumed } from "../../support/harness.js";
import { REPO, startComponents, type AirflowInstance, type Service } from "./airflow.js";

/**
 * Support of serve.test.ts: Airflow 3.x's components for test/dags-serve, the query service's HTTP
 * API, and read-backs of the insights and events topics and of the database.
 */

export const DAGS_SERVE_FOLDER = join(REPO, "test/dags-serve");
export const SERVE_DAGS = ["es_serve_stuck", "es_serve_retry", "es_serve_ready", "es_serve_clear"] as const;

/**
 * api-server, dag-processor, scheduler and triggerer; resolves once the DAGs are serialized and the
 * api-server answers. `died` rejects when a component exits early (race it against every wait).
 */
export function startAirflow(af: AirflowInstance): Promise<{ list: Service[]; died: Promise<never> }> {
  return startComponents(af, SERVE_DAGS);
}

/** GET against the query service; fails on anything but 200. */
export async function getJson<T>(base: string, path: string, timeoutMs = 10_000): Promise<T> {
  const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

/** Until the DAGs' runs are finished with the given clear_number (one run each); the error says what it saw last. */
export async function waitForRunsFinished(
  database: string,
  dags: readonly string[],
  clearNumber: number,
  timeoutMs: number,
): Promise<void> {
  let last = "";
  await waitFor(
    `runs of ${dags.join(", ")} to finish with clear_number ${clearNumber}`,
    () =>
      withPg(database, async (c) => {
        const { rows } = await c.query<{ dag_id: string; state: string; clear_number: number }>(
          "SELECT dag_id, state, clear_number FROM dag_run WHERE dag_id = ANY($1)",
          [dags],
        );
        last = rows.map((r) => `${r.dag_id}=${r.state}#${r.clear_number}`).join(" ");
        return rows.length === dags.length && rows.every((r) => ["success", "failed"].includes(r.state) && r.clear_number === clearNumber);
      }),
    timeoutMs,
    500,
  ).catch((e: Error) => {
    throw new Error(`${e.message}; last seen: ${last || "no runs"}`);
  });
}

/** The insights topic read to its end, read_committed (the writer's aborted transactions are not seen). */
export async function readInsights(topic: string): Promise<InsightEvent[]> {
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "e2e-serve-insights" });
  const out: InsightEvent[] = [];
  await readToEnd(kafka, topic, { group: "e2e-serve-insights-read", what: "the insights topic" }, (_p, m) => {
    if (m.value !== null) out.push(InsightEvent.parse(JSON.parse(m.value.toString("utf8"))));
  });
  return out;
}

/** Every message of the events topic, parsed. */
export async function readEvents(topic: string): Promise<Consumed<StreamEvent>[]> {
  const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "e2e-serve-admin" }).admin();
  await admin.connect();
  const total = (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  await admin.disconnect();
  const got = await consume([topic], (all) => all.length >= total, { timeoutMs: 60_000, waitingFor: `${total} events` });
  return got.map((m) => ({ ...m, event: StreamEvent.parse(m.event) }));
}

/** Task instances per state (null as "none") of every run, keyed "<dag_id> <run_id>", from the database. */
export async function dbCounts(database: string): Promise<Map<string, Record<string, number>>> {
  const { rows } = await withPg(database, (c) =>
    c.query<{ dag_id: string; run_id: string; state: string; n: number }>(
      "SELECT dag_id, run_id, coalesce(state, 'none') AS state, count(*)::int AS n FROM task_instance GROUP BY 1, 2, 3",
    ),
  );
  const out = new Map<string, Record<string, number>>();
  for (const r of rows) {
    const key = `${r.dag_id} ${r.run_id}`;
    out.set(key, { ...out.get(key), [r.state]: r.n });
  }
  return out;
}

/** Deletes topics (the test's own); missing ones are fine. */
export async function deleteTopics(topics: string[]): Promise<void> {
  const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "e2e-serve-admin" }).admin();
  await admin.connect();
  try {
    const have = new Set(await admin.listTopics());
    const mine = topics.filter((t) => have.has(t));
    if (mine.length > 0) await admin.deleteTopics({ topics: mine, timeout: 10_000 });
  } finally {
    await admin.disconnect();
  }
}
