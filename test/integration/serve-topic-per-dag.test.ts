import { afterAll, expect, it } from "vitest";
import { freePort } from "../../scripts/free-port.js";
import { Kafka, logLevel } from "kafkajs";
import {
  createDatabase,
  daemonEnv,
  dropDatabase,
  services,
  spawnDaemon,
  uniqueName,
  waitFor,
  withPg,
  type DaemonProcess,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";

/**
 * `serve` with a topic per DAG (EVENTSTREAM_TOPIC_TEMPLATE): it finds the DAGs' topics, and a DAG
 * whose topic appears after serve started (found by the periodic listing; here the first listing
 * after the daemon created it, as serve starts before any DAG topic exists).
 */

const db = uniqueName("servetpl");
const procs: DaemonProcess[] = [];

afterAll(async () => {
  for (const p of procs) p.proc.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
  await dropDatabase(db);
});

it("follows the per-DAG topics, those there at start and one created later", async () => {
  await createDatabase(db, "3");
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = daemonEnv(db, {
    EVENTSTREAM_TOPIC_TEMPLATE: `${db}.{dag_id}`,
    EVENTSTREAM_SERVE_PORT: String(port),
    EVENTSTREAM_SERVE_HOST: "127.0.0.1",
    // Insights need the single-topic layout (docs/insights.md): off here, refused below when on.
    EVENTSTREAM_SERVE_INSIGHTS: "false",
  });
  const daemon = spawnDaemon(env);
  procs.push(daemon);
  await daemon.waitForLog(/"msg":"streaming"/, 60_000);
  await withPg(db, async (c) => {
    await insertDagRun(c, "3", "first", "r", "running");
    await insertTi(c, "3", { dag_id: "first", task_id: "t", run_id: "r" });
  });
  // The first DAG's topic exists before serve starts.
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await waitFor("the first DAG's topic", async () => (await admin.listTopics()).includes(`${db}.first`), 30_000);
  } finally {
    await admin.disconnect();
  }
  const refused = spawnDaemon({ ...env, EVENTSTREAM_SERVE_INSIGHTS: "true" }, ["serve"]);
  procs.push(refused);
  expect(await refused.exited).toBe(2);
  expect(refused.output.join("\n")).toContain("insights need the single-topic layout");
  const serve = spawnDaemon(env, ["serve"]);
  procs.push(serve);
  const run = (dag: string) =>
    fetch(`${base}/dags/${dag}/runs/r`).then(async (r) => (r.status === 200 ? ((await r.json()) as { tasks: unknown[] }) : null));
  const seen = await waitFor("the first DAG's run", async () => ((await run("first"))?.tasks.length === 1 ? true : null), 60_000);
  expect(seen).toBe(true);
  await withPg(db, async (c) => {
    await insertDagRun(c, "3", "second", "r", "running");
    await insertTi(c, "3", { dag_id: "second", task_id: "t", run_id: "r" });
    await updateTi(c, { dag_id: "second", task_id: "t", run_id: "r" }, { state: "queued", try_number: 1 });
  });
  // A new topic is found by the listing every 30 s.
  const second = await waitFor("the second DAG's run", async () => run("second"), 45_000);
  expect(second.tasks).toEqual([expect.objectContaining({ task_id: "t", state: "queued" })]);
  serve.proc.kill("SIGTERM");
  expect(await serve.exited).toBe(0);
});
