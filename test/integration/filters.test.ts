import { describe, expect, it } from "vitest";
import { Kafka, logLevel } from "kafkajs";
import { pino } from "pino";
import type pg from "pg";
import { Daemon } from "../../src/main.js";
import { Metrics } from "../../src/operate/metrics.js";
import { readCurrentState } from "../../src/sink/state-reader.js";
import {
  confirmedFlush,
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  pgClient,
  services,
  uniqueName,
  waitFor,
  waitForStreaming,
  withTimeout,
  type Consumed,
} from "../support/harness.js";
import { insertDagRun, insertTi, setXCom, updateDagRun, updateTi, type TiKey } from "../support/airflow-rows.js";
import { registerCleanup } from "../support/cleanup.js";
import { stateTopicOf } from "../support/state.js";

/**
 * EVENTSTREAM_INCLUDE_DAGS / _EXCLUDE_DAGS / _INCLUDE_TASKS / _EXCLUDE_TASKS on the real PostgreSQL
 * (Airflow 3.x schema) and Kafka: which task-instance, DAG-run, notification and snapshot events
 * reach the events and current-state topics, exclude over include, a transaction of filtered
 * changes only letting the slot's confirmed_flush_lsn past it, and the metric counting them.
 */

const FILTERS = {
  EVENTSTREAM_INCLUDE_DAGS: "etl_*,report",
  EVENTSTREAM_EXCLUDE_DAGS: "etl_test*",
  EVENTSTREAM_INCLUDE_TASKS: "load*,extract",
  EVENTSTREAM_EXCLUDE_TASKS: "load_tmp",
};

function admitted(dag: string, task: string | null): boolean {
  const dagOk = (dag.startsWith("etl_") || dag === "report") && !dag.startsWith("etl_test");
  const taskOk = task === null || ((task.startsWith("load") || task === "extract") && task !== "load_tmp");
  return dagOk && taskOk;
}

/** The daemon in this process, with a Metrics object the test scrapes, and its log lines. */
function startDaemon(db: string): { metrics: Metrics; lines: string[]; stop: () => Promise<void> } {
  const lines: string[] = [];
  const log = pino({ level: "info" }, { write: (l: string) => lines.push(l) });
  const cfg = daemonConfig(db, { ...FILTERS, EVENTSTREAM_INITIAL_SNAPSHOT: "active" });
  const metrics = new Metrics({ version: "test", airflowSchema: cfg.airflowSchema, delivery: cfg.delivery, stallMs: 0 }, false);
  const daemon = new Daemon(cfg, log, undefined, undefined, metrics);
  const done = daemon.run();
  done.catch(() => undefined);
  const stop = async () => {
    await daemon.stop();
    if ((await withTimeout(done, 30_000)) === "timeout") throw new Error("the daemon did not stop within 30 s");
  };
  const unregister = registerCleanup("daemon", `filters daemon on ${db}`, stop);
  done.then(unregister, unregister);
  return { metrics, lines, stop };
}

async function filteredCount(metrics: Metrics, type: string): Promise<number> {
  const text = await metrics.registry.metrics();
  const m = new RegExp(`^airflow_eventstream_events_filtered_total\\{type="${type}"\\} (\\d+)$`, "m").exec(text);
  return m === null ? 0 : Number(m[1]);
}

async function currentLsn(c: pg.Client): Promise<bigint> {
  const { rows } = await c.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
  const [hi, lo] = rows[0]!.lsn.split("/");
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

/** A task instance from its insert through three states: four events when published. */
async function runTi(c: pg.Client, key: TiKey): Promise<void> {
  await insertTi(c, "3", key);
  for (const state of ["queued", "running", "success"]) await updateTi(c, key, { state });
}

const label = (m: Consumed) => {
  const e = m.event as { type: string; op?: string; dag_id?: string | null; task_id?: string | null };
  return `${e.type}${e.op === "snapshot" ? "(snapshot)" : ""} ${e.dag_id ?? "?"}/${e.task_id ?? "-"}`;
};

describe("DAG and task filters", () => {
  it("publishes only what the lists admit, exclude over include, snapshots too; filtered-only transactions advance the slot; counted", async () => {
    const db = uniqueName("filters");
    await createDatabase(db, "3");
    const c = pgClient(db);
    await c.connect();
    let daemon: ReturnType<typeof startDaemon> | null = null;
    try {
      // Before the slot exists: runs under way, which the initial snapshot (EVENTSTREAM_INITIAL_SNAPSHOT=active) reads.
      await insertDagRun(c, "3", "etl_pre", "r0", "running");
      await insertDagRun(c, "3", "other_pre", "r0", "running");
      await insertTi(c, "3", { dag_id: "etl_pre", task_id: "extract", run_id: "r0" }, { state: "running", try_number: 1 });
      await insertTi(c, "3", { dag_id: "etl_pre", task_id: "load_tmp", run_id: "r0" }, { state: "running", try_number: 1 });
      await insertTi(c, "3", { dag_id: "other_pre", task_id: "extract", run_id: "r0" }, { state: "running", try_number: 1 });

      daemon = startDaemon(db);
      await waitForStreaming(db);
      // The snapshot done before the live changes, or it reads the runs they insert too.
      await waitFor("the initial snapshot finished", async () => daemon!.lines.some((l) => l.includes('"snapshot finished"')), 60_000);

      // Live changes: DAG runs of included, excluded-over-included and not-included DAGs.
      const runIds = new Map<string, number>();
      for (const dag of ["etl_daily", "etl_test_1", "other", "report"]) runIds.set(dag, await insertDagRun(c, "3", dag, "r1"));
      const tis: TiKey[] = [
        { dag_id: "etl_daily", task_id: "extract", run_id: "r1" }, // in
        { dag_id: "etl_daily", task_id: "load", run_id: "r1" }, // in
        { dag_id: "etl_daily", task_id: "load_tmp", run_id: "r1" }, // task excluded, though load* includes it
        { dag_id: "etl_daily", task_id: "transform", run_id: "r1" }, // task not included
        { dag_id: "etl_test_1", task_id: "load", run_id: "r1" }, // DAG excluded, though etl_* includes it
        { dag_id: "other", task_id: "load", run_id: "r1" }, // DAG not included
        { dag_id: "report", task_id: "extract", run_id: "r1" }, // in
      ];
      for (const key of tis) await runTi(c, key);
      await setXCom(c, "3", runIds.get("etl_daily")!, tis[1]!, "eventstream", { requestId: "in" });
      await setXCom(c, "3", runIds.get("etl_daily")!, tis[2]!, "eventstream", { requestId: "out" });
      await waitFor(
        "the slot confirmed past the live changes",
        async () => ((await confirmedFlush(db, db)) ?? 0n) >= (await currentLsn(c)),
        60_000,
      );

      // One transaction of filtered changes only: nothing of it reaches Kafka, and the slot moves past it.
      const filteredBefore = await filteredCount(daemon.metrics, "task_instance");
      await c.query("BEGIN");
      await updateTi(c, tis[5]!, { state: "failed" });
      await updateTi(c, tis[3]!, { state: "failed" });
      await updateDagRun(c, runIds.get("other")!, { state: "running" });
      await c.query("COMMIT");
      const afterFiltered = await currentLsn(c);
      await waitFor(
        "the filtered-only transaction counted",
        async () => (await filteredCount(daemon!.metrics, "task_instance")) === filteredBefore + 2,
      );
      await waitFor(
        "the slot's confirmed_flush_lsn past the filtered-only transaction",
        async () => ((await confirmedFlush(db, db)) ?? 0n) >= afterFiltered,
        60_000,
      );

      // A last admitted change of each included DAG: a DAG's events are in one partition in commit
      // order, so once the read has these it has every event of those DAGs before them.
      await updateTi(c, tis[6]!, { state: "failed" });
      await updateTi(c, tis[0]!, { state: "failed" });
      const expected: Record<string, number> = {
        "task_instance etl_daily/extract": 5,
        "task_instance etl_daily/load": 4,
        "task_instance report/extract": 5,
        "dag_run etl_daily/-": 1,
        "dag_run report/-": 1,
        "notification etl_daily/load": 1,
        "dag_run(snapshot) etl_pre/-": 1,
        "task_instance(snapshot) etl_pre/extract": 1,
      };
      const reached = (all: Consumed[]) => Object.entries(expected).every(([l, n]) => all.filter((m) => label(m) === l).length >= n);
      // Read until every expected event is in (each partition is read on its own, so no single last write would do).
      const consumed = await consume([`${db}.events`], reached, { timeoutMs: 60_000, waitingFor: JSON.stringify(expected) });
      const labels = consumed.map(label);
      const rejected = labels.filter((_, i) => {
        const e = consumed[i]!.event as { dag_id?: string | null; task_id?: string | null; type: string };
        return !admitted(e.dag_id ?? "", e.type === "dag_run" ? null : (e.task_id ?? null));
      });
      expect(rejected).toEqual([]);
      const count = (l: string) => labels.filter((x) => x === l).length;
      expect(Object.fromEntries(Object.keys(expected).map((l) => [l, count(l)]))).toEqual(expected);
      expect(labels.length, labels.join("\n")).toBe(19);

      // Left out, by type: 4 TIs x 4 events + the 2 of the filtered-only transaction + 2 snapshot rows;
      // 2 run inserts + 1 update + 1 snapshot row; 1 notification.
      expect(await filteredCount(daemon.metrics, "task_instance")).toBe(20);
      expect(await filteredCount(daemon.metrics, "dag_run")).toBe(4);
      expect(await filteredCount(daemon.metrics, "notification")).toBe(1);
      // Said once at start.
      const said = daemon.lines.filter((l) => l.includes('"msg":"filters: '));
      expect(said).toHaveLength(1);
      expect(JSON.parse(said[0]!)).toMatchObject({ includeDags: ["etl_*", "report"], excludeTasks: ["load_tmp"] });

      // The current-state topic holds the admitted rows only.
      const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-filters" });
      const state = await readCurrentState(kafka, stateTopicOf(db), { clientId: "test-filters", timeoutMs: 60_000 });
      const keys = [...state.entries.keys()].map((k) => JSON.parse(k) as { type: string; dag_id: string; task_id?: string });
      expect(keys.filter((k) => !admitted(k.dag_id, k.type === "dag_run" ? null : (k.task_id ?? null)))).toEqual([]);
      expect(keys.length).toBe(7);
    } finally {
      await daemon?.stop();
      await c.end();
      await dropDatabase(db);
    }
  }, 180_000);
});
