import { rmSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { daemonConfig, dropDatabase, startDaemon, uniqueName, waitForStreaming, withPg } from "../support/harness.js";
import {
  abort,
  airflow,
  airflowInstance,
  airflowVersions,
  ensureVenv,
  killOnExit,
  migrate,
  stopServices,
  tail,
  type AirflowInstance,
  type Service,
} from "./support/airflow.js";
import { deleteTopics } from "./support/phases.js";
import {
  assetEvents,
  configureB,
  consumerRuns,
  createTopic,
  PRODUCER_FOLDER,
  produceAssetEvents,
  startB,
  consumedPayloads,
  waitForRuns,
  waitForWatcherRunning,
  type AssetEventRecord,
} from "./support/assets.js";

/**
 * One Airflow deployment triggered by another's asset events (issue 15): deployment B (Airflow 3.x,
 * its own database in the services' PostgreSQL, the Kafka and common-messaging providers) runs
 * test/dags-assets/es_asset_consumer.py, scheduled on an asset whose AssetWatcher's
 * KafkaMessageQueueTrigger reads the asset_event topic and keeps the records keyed by that asset's URI.
 * First the records come from this test (the contract's shape), so B is proven without the daemon;
 * then the whole chain: deployment A (its own database, watched by the daemon with asset events on)
 * runs a task with an outlet asset (`airflow dags test`), the daemon publishes the asset_event, B runs.
 *
 * Components of B: dag-processor, triggerer, scheduler (the minimal set for the run to appear) and
 * the api-server, for the run's task to execute: the test reads what the task received.
 */

const AF3 = airflowVersions().find((v) => v.major === "3");
if (!AF3)
  throw new Error(
    "asset-events.test.ts needs Airflow 3 (EVENTSTREAM_TEST_AIRFLOW must include 3; vitest.config.ts leaves the file out otherwise)",
  );

const URI = "s3://eventstream-e2e/orders.parquet";

function record(uri: string, extra: Record<string, unknown>, lsn: string): AssetEventRecord {
  return {
    type: "asset_event",
    asset: { uri, name: "orders", group: "asset" },
    asset_id: 7,
    extra,
    source_dag_id: "producer",
    source_task_id: "write",
    source_run_id: "manual__2026-12-03T10:00:00+00:00",
    source_map_index: -1,
    timestamp: "2026-12-03T10:00:05.123456Z",
    source: { commit_lsn: lsn, xid: 1234, index: 0, position: `${lsn}/0`, commit_time: "2026-12-03T10:00:05.2Z" },
  };
}

describe(`Airflow ${AF3.version}: a DAG of deployment B runs on asset_event records`, () => {
  const database = uniqueName("assetb");
  const databaseA = `${database}_a`;
  const topic = `${database}.asset_events`;
  let af: AirflowInstance;
  let afA: AirflowInstance;
  let list: Service[] = [];
  let died: Promise<never>;
  let failed = false;

  beforeAll(async () => {
    const t0 = Date.now();
    const venv = await ensureVenv(AF3.version, "kafka");
    await withPg("postgres", (c) => c.query(`CREATE DATABASE ${database}`));
    await withPg("postgres", (c) => c.query(`CREATE DATABASE ${databaseA}`));
    af = await airflowInstance(AF3.version, "3", venv, database, "assets-b");
    afA = await airflowInstance(AF3.version, "3", venv, databaseA, "assets-a");
    killOnExit(af);
    killOnExit(afA);
    configureB(af, topic, URI);
    Object.assign(afA.env, { AIRFLOW__CORE__DAGS_FOLDER: PRODUCER_FOLDER, ES_ASSET_URI: URI });
    const [tMigrate] = await Promise.all([migrate(af), migrate(afA)]);
    await createTopic(topic);
    ({ list, died } = await startB(af));
    await Promise.race([waitForWatcherRunning(database, URI), died]);
    console.log(`[assets] B ready: db migrate ${tMigrate} ms, total ${Date.now() - t0} ms (${af.home})`);
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failed = true;
  });

  afterAll(async () => {
    if (af) await stopServices(af, list).catch(() => abort(af));
    if (afA) abort(afA);
    await dropDatabase(database);
    await dropDatabase(databaseA);
    if (failed) console.log(`[assets] logs kept in ${af?.home} and ${afA?.home}, topic ${topic}`);
    else {
      for (const a of [af, afA]) if (a) rmSync(a.home, { recursive: true, force: true });
      await deleteTopics([topic]);
    }
  }, 120_000);

  it("starts no run before a record, then one run per matching record, carrying the event's extra", async () => {
    expect(await consumerRuns(database)).toEqual([]);
    // Another asset's record first: the watcher passes over it (same partition, so it is judged before the next).
    await produceAssetEvents(topic, [
      record("s3://eventstream-e2e/other.parquet", { rows: 1 }, "0/1"),
      record(URI, { rows: 1000 }, "0/16B3748"),
    ]);
    const runs = await waitForRuns(af, 0, died);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.run_type).toBe("asset_triggered");
    expect(runs[0]!.asset_event_extra).toEqual({
      from_trigger: true,
      payload: {
        uri: URI,
        extra: { rows: 1000 },
        source_dag_id: "producer",
        source_task_id: "write",
        source_run_id: "manual__2026-12-03T10:00:00+00:00",
        commit_lsn: "0/16B3748",
      },
    });
    expect(await assetEvents(database, URI)).toHaveLength(1);
    // B's task ran and found the same payload in triggering_asset_events.
    expect(await consumedPayloads(af, runs[0]!.run_id, died)).toEqual([runs[0]!.asset_event_extra!.payload]);
  });

  it("runs on the asset event of a task in deployment A, published by the daemon", async () => {
    const daemon = startDaemon(daemonConfig(databaseA, { EVENTSTREAM_ASSET_EVENTS: "true", EVENTSTREAM_ASSET_TOPIC: topic }));
    try {
      await waitForStreaming(databaseA);
      const before = (await consumerRuns(database)).length;
      const r = await airflow(afA, ["dags", "test", "es_asset_producer"], "dags-test-producer", 240_000);
      expect(r.code, `airflow dags test es_asset_producer:\n${tail(r.log)}`).toBe(0);
      const runs = await waitForRuns(af, before, died);
      expect(runs).toHaveLength(before + 1);
      const run = runs[before]!;
      expect(run.run_type).toBe("asset_triggered");
      const payload = run.asset_event_extra?.payload;
      // What A's task set as the event's extra, and where it came from, as B sees it.
      expect(payload).toMatchObject({
        uri: URI,
        extra: { rows: 1000, written_by: "es_asset_producer" },
        source_dag_id: "es_asset_producer",
        source_task_id: "write",
      });
      expect(String(payload?.source_run_id)).toMatch(/^manual__/);
      expect(String(payload?.commit_lsn)).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      expect(await consumedPayloads(af, run.run_id, died)).toEqual([payload]);
    } finally {
      await daemon.stop();
    }
  });
});
