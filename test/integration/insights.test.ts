import { writeFileSync } from "node:fs";
import { Kafka, logLevel } from "kafkajs";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { InsightEvent, type RunView } from "../../src/serve/schemas.js";
import { freePort } from "../../scripts/free-port.js";
import { readToEnd } from "../../src/sink/read-to-end.js";
import { dagPartitioner } from "../../src/sink/routing.js";
import { insertDagRun, insertTi, updateDagRun, updateTi } from "../support/airflow-rows.js";
import {
  createDatabase,
  daemonEnv,
  dropDatabase,
  services,
  sleep,
  spawnDaemon,
  uniqueName,
  waitFor,
  withPg,
  withTimeout,
} from "../support/harness.js";

/**
 * The insights writer with the real daemon, PostgreSQL and Kafka: two replicas as child processes
 * in one group, Airflow rows that complete runs, fail with a retry and then finally, clear a run
 * and leave a task queued past its threshold; one replica is killed with SIGKILL while rows are
 * being written (and started again). Read back read_committed, every expected insight is there
 * exactly once, and nothing else.
 */

const STREAMING = /"msg":"streaming"/;
const TAKEN = /insights: partitions taken/;
const STUCK_SECONDS = 4;

interface Worker {
  output: string[];
  kill(): Promise<void>;
}

/** A replica: `airflow-eventstream serve` (its REST API on any free port), whose insights writer is under test. */
function spawnWorker(env: Record<string, string>): Worker {
  const d = spawnDaemon({ ...env, EVENTSTREAM_SERVE_PORT: "0", EVENTSTREAM_SERVE_HOST: "127.0.0.1" }, ["serve"]);
  return {
    output: d.output,
    kill: async () => {
      d.proc.kill("SIGKILL");
      await d.exited;
    },
  };
}

/** The partitions a worker owns and has taken (fenced, offsets and view read), by its last such line. */
function owned(w: Worker): number[] {
  const line = [...w.output].reverse().find((l) => TAKEN.test(l));
  return line === undefined ? [] : (JSON.parse(line) as { partitions: number[] }).partitions;
}

async function readInsights(topic: string): Promise<InsightEvent[]> {
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-insights" });
  const admin = kafka.admin();
  await admin.connect();
  const out: InsightEvent[] = [];
  try {
    await readToEnd(kafka, topic, { group: "test-insights-read", admin }, (_p, m) => {
      out.push(InsightEvent.parse(JSON.parse(m.value!.toString("utf8"))));
    });
  } finally {
    await admin.disconnect();
  }
  return out;
}

/** One DAG run from queued to its end: tasks queued, running, then `final` each; the run then `runFinal`. */
async function completeRun(c: pg.Client, dag: string, run: string, tasks: string[], runFinal = "success"): Promise<number> {
  const id = await insertDagRun(c, "3", dag, run);
  await updateDagRun(c, id, { state: "running", start_date: new Date() });
  for (const t of tasks) await insertTi(c, "3", { dag_id: dag, task_id: t, run_id: run });
  for (const t of tasks) {
    const key = { dag_id: dag, task_id: t, run_id: run };
    await updateTi(c, key, { state: "queued", try_number: 1 });
    await updateTi(c, key, { state: "running" });
    await updateTi(c, key, { state: "success" });
  }
  await updateDagRun(c, id, { state: runFinal, end_date: new Date() });
  return id;
}

function keyOf(i: InsightEvent): string {
  switch (i.type) {
    case "run_completed":
      return `${i.type} ${i.dag_id} ${i.run_id} ${i.summary.state}${i.summary.cleared.times > 0 ? " after clear" : ""}`;
    case "run_cleared":
      return `${i.type} ${i.dag_id} ${i.run_id} ${i.clear_number}`;
    case "task_cleared":
      return `${i.type} ${i.dag_id} ${i.run_id} ${i.task_id} from ${i.previous_state}`;
    case "task_failed_final":
    case "task_stuck":
    case "task_unstuck":
      return `${i.type} ${i.dag_id} ${i.run_id} ${i.task_id} try ${i.try_number}`;
  }
}

describe("insights: two replicas, exactly once", () => {
  it("every insight once across a SIGKILL of a replica mid-stream and its restart", { timeout: 150_000 }, async () => {
    const db = uniqueName("insights");
    await createDatabase(db, "3");
    const env = daemonEnv(db);
    const daemon = spawnDaemon(env);
    const topic = `insights.${db}`;
    const workerEnv = {
      ...env,
      EVENTSTREAM_SERVE_INSIGHTS_TOPIC: topic,
      EVENTSTREAM_SERVE_INSIGHTS_GROUP: `insights-${db}`,
      EVENTSTREAM_SERVE_STUCK_SECONDS: `queued=${STUCK_SECONDS}`,
      EVENTSTREAM_SERVE_INSIGHTS_SESSION_TIMEOUT_SECONDS: "6",
    };
    try {
      await daemon.waitForLog(STREAMING, 60_000);
      // One DAG per partition at least, so both replicas own some.
      const partitionOf = dagPartitioner(3);
      const dags = Array.from({ length: 30 }, (_, i) => `dag${i}`);
      const perPartition = [0, 1, 2].map((p) => dags.filter((d) => partitionOf(d) === p).slice(0, 2));
      const [a, b] = [spawnWorker(workerEnv), spawnWorker(workerEnv)];
      await waitFor(
        "both replicas to own partitions",
        async () => owned(a).length > 0 && owned(b).length > 0 && owned(a).length + owned(b).length === 3,
        60_000,
      );
      const expected: string[] = [];
      const slowDag = perPartition[0]![0]!;
      const slow = { dag_id: slowDag, task_id: "slow", run_id: "stuck_run" };
      await withPg(db, async (c) => {
        // A run with a task left in queued past the threshold.
        const stuckRun = await insertDagRun(c, "3", slowDag, "stuck_run");
        await updateDagRun(c, stuckRun, { state: "running" });
        await insertTi(c, "3", slow);
        await updateTi(c, slow, { state: "queued", try_number: 1 });
        // Complete runs on every partition.
        for (const d of perPartition.flat()) await completeRun(c, d, "r1", ["extract", "load"]);
        for (const d of perPartition.flat()) expected.push(`run_completed ${d} r1 success`);
        // A failure with a retry left, then the final one.
        const failDag = perPartition[1]![0]!;
        const flaky = { dag_id: failDag, task_id: "flaky", run_id: "fail_run" };
        const failRun = await insertDagRun(c, "3", failDag, "fail_run");
        await updateDagRun(c, failRun, { state: "running" });
        await insertTi(c, "3", flaky);
        await updateTi(c, flaky, { state: "queued", try_number: 1, max_tries: 1 });
        await updateTi(c, flaky, { state: "running" });
        await updateTi(c, flaky, { state: "up_for_retry" });
        await updateTi(c, flaky, { state: "queued", try_number: 2 });
        await updateTi(c, flaky, { state: "running" });
        await updateTi(c, flaky, { state: "failed" });
        await updateDagRun(c, failRun, { state: "failed", end_date: new Date() });
        expected.push(`task_failed_final ${failDag} fail_run flaky try 2`, `run_completed ${failDag} fail_run failed`);
      });
      expected.push(`task_stuck ${slowDag} stuck_run slow try 1`);
      await waitFor("the task_stuck", async () => (await readInsights(topic)).some((i) => i.type === "task_stuck"), 30_000, 500);
      // Kill the replica owning the stuck task's partition while rows are written; its survivor must
      // neither repeat the task_stuck nor miss the task_unstuck, nor repeat or miss anything else.
      const victim = owned(a).includes(partitionOf(slowDag)) ? a : b;
      const survivor = victim === a ? b : a;
      const clearDag = perPartition[2]![0]!;
      await withPg(db, async (c) => {
        const writing = (async () => {
          for (const d of perPartition.flat()) await completeRun(c, d, "r2", ["extract"]);
        })();
        await sleep(150);
        await victim.kill();
        await writing;
        for (const d of perPartition.flat()) expected.push(`run_completed ${d} r2 success`);
        // The task is still queued when the survivor takes its partition over: its timer must know
        // from the insights topic that the task_stuck is out already.
        await waitFor("the survivor to take every partition", async () => owned(survivor).length === 3, 60_000, 250);
        await sleep(2_000);
        await updateTi(c, slow, { state: "running" });
        await updateTi(c, slow, { state: "success" });
        expected.push(`task_unstuck ${slowDag} stuck_run slow try 1`);
        // Clear a finished run (clear_number rises, the run goes back to queued), and run it again.
        const { rows } = await c.query<{ id: number }>("SELECT id FROM dag_run WHERE dag_id = $1 AND run_id = 'r1'", [clearDag]);
        const id = rows[0]!.id;
        for (const t of ["extract", "load"]) {
          await updateTi(c, { dag_id: clearDag, task_id: t, run_id: "r1" }, { state: null });
          expected.push(`task_cleared ${clearDag} r1 ${t} from success`);
        }
        await updateDagRun(c, id, { state: "queued", clear_number: 1, end_date: null });
        expected.push(`run_cleared ${clearDag} r1 1`);
        await updateDagRun(c, id, { state: "running" });
        for (const t of ["extract", "load"]) {
          const key = { dag_id: clearDag, task_id: t, run_id: "r1" };
          await updateTi(c, key, { state: "queued", try_number: 2 });
          await updateTi(c, key, { state: "running" });
          await updateTi(c, key, { state: "success" });
        }
        await updateDagRun(c, id, { state: "success", end_date: new Date() });
        expected.push(`run_completed ${clearDag} r1 success after clear`);
      });
      // Started again: the partitions move once more.
      const restarted = spawnWorker(workerEnv);
      await waitFor("the restarted replica to own partitions", async () => owned(restarted).length > 0, 60_000, 500);
      expect(owned(restarted).length + owned(survivor).length).toBe(3);
      let insights: InsightEvent[] = [];
      // Not thrown on a timeout: the comparison below says what is missing.
      await waitFor(
        "every expected insight",
        async () => {
          insights = await readInsights(topic);
          return insights.length >= expected.length;
        },
        60_000,
        1_000,
      ).catch(() => undefined);
      if (process.env.INSIGHTS_TEST_LOG)
        writeFileSync(process.env.INSIGHTS_TEST_LOG, [...a.output, "----", ...b.output, "----", ...restarted.output].join("\n"));
      // Longer than a timer tick and a batch: anything extra or repeated would be there by now.
      await sleep(3_000);
      insights = await readInsights(topic);
      const ids = insights.map((i) => i.insight_id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(insights.map(keyOf).sort()).toEqual(expected.sort());
      // Each insight in its cause's partition number, keyed by DAG (checked through the partitioner).
      for (const i of insights) expect(i.caused_by.partition).toBe(partitionOf(i.dag_id));
      const completed = insights.find((i) => i.type === "run_completed" && i.run_id === "fail_run");
      expect(completed?.type === "run_completed" && completed.summary).toMatchObject({
        failed_tasks: ["flaky"],
        retries: 1,
        counts: { failed: 1 },
      });
      const again = insights.find((i) => i.type === "run_completed" && i.dag_id === clearDag && i.summary.cleared.times === 1);
      expect(again?.type === "run_completed" && again.summary.cleared.rerun_tasks).toEqual(["extract", "load"]);
      // A replica started after the clear and the rerun: its REST view, from the state topic (the
      // tasks' latest events are the rerun's), names the rerun tasks from the task_cleared insights.
      const port = await freePort();
      const viewer = spawnDaemon({ ...workerEnv, EVENTSTREAM_SERVE_PORT: String(port), EVENTSTREAM_SERVE_HOST: "127.0.0.1" }, ["serve"]);
      try {
        // Its answers are partial until it is ready (the clears from the insights topic are read
        // after the state topic's entries are in the view): docs/serve.md, /readyz.
        await waitFor(
          "the new replica to be ready",
          async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.ok === true,
          60_000,
          250,
        );
        const view = await waitFor(
          "the new replica's view of the cleared run",
          async () => {
            const r = await fetch(`http://127.0.0.1:${port}/dags/${clearDag}/runs/r1`).catch(() => null);
            return r?.ok === true && ((await r.json()) as RunView);
          },
          60_000,
          500,
        );
        expect(view.summary?.cleared).toEqual({ times: 1, rerun_tasks: ["extract", "load"] });
      } finally {
        viewer.proc.kill("SIGKILL");
        await viewer.exited;
      }
      await restarted.kill();
      await survivor.kill();
    } finally {
      daemon.proc.kill("SIGTERM");
      await withTimeout(daemon.exited, 20_000);
      await dropDatabase(db);
    }
  });
});
