import { rmSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { dropDatabase, uniqueName, withPg, waitFor } from "../support/harness.js";
import { abort, airflowInstance, airflowVersions, ensureVenv, killOnExit, migrate, stopServices, type AirflowInstance, type Service } from "./support/airflow.js";
import { deleteTopics } from "./support/phases.js";
import {
  assetEvents,
  configureB,
  consumerRuns,
  createTopic,
  produceAssetEvents,
  startB,
  waitForWatcherRunning,
  type AssetEventRecord,
} from "./support/assets.js";

/**
 * One Airflow deployment triggered by another's asset events (issue 15): deployment B (Airflow 3.x,
 * its own database in the services' PostgreSQL, the Kafka and common-messaging providers) runs
 * test/dags-assets/es_asset_consumer.py, scheduled on an asset whose AssetWatcher's
 * KafkaMessageQueueTrigger reads the asset_event topic and keeps the records keyed by that asset's URI.
 * The records come from this test (the contract's shape), so B is proven without the daemon.
 */

const AF3 = airflowVersions().find((v) => v.major === "3");
if (!AF3) throw new Error("asset-events.test.ts needs Airflow 3 (EVENTSTREAM_TEST_AIRFLOW must include 3; vitest.config.ts leaves the file out otherwise)");

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
  const topic = `${database}.asset_events`;
  let af: AirflowInstance;
  let list: Service[] = [];
  let failed = false;

  beforeAll(async () => {
    const t0 = Date.now();
    const venv = await ensureVenv(AF3.version, "kafka");
    await withPg("postgres", (c) => c.query(`CREATE DATABASE ${database}`));
    af = await airflowInstance(AF3.version, "3", venv, database, "assets-b");
    killOnExit(af);
    configureB(af, topic, URI);
    const tMigrate = await migrate(af);
    await createTopic(topic);
    ({ list } = await startB(af, process.env.ES_WITH_API === "1"));
    await waitForWatcherRunning(database, URI);
    console.log(`[assets] B ready: db migrate ${tMigrate} ms, total ${Date.now() - t0} ms (${af.home})`);
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failed = true;
  });

  afterAll(async () => {
    if (af) await stopServices(af, list).catch(() => abort(af));
    await dropDatabase(database);
    if (failed) console.log(`[assets] logs kept in ${af?.home}, topic ${topic}`);
    else {
      if (af) rmSync(af.home, { recursive: true, force: true });
      await deleteTopics([topic]);
    }
  }, 120_000);

  it("starts no run before a record, then one run per matching record, carrying the event's extra", async () => {
    expect(await consumerRuns(database)).toEqual([]);
    // Another asset's record first: the watcher passes over it (same partition, so it is judged before the next).
    await produceAssetEvents(topic, [record("s3://eventstream-e2e/other.parquet", { rows: 1 }, "0/1"), record(URI, { rows: 1000 }, "0/16B3748")]);
    const runs = await waitFor("a run of es_asset_consumer", async () => {
      const r = await consumerRuns(database);
      return r.length > 0 ? r : null;
    }, 180_000, 500);
    console.log(JSON.stringify(runs));
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
  });
});
