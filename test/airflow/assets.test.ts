import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AssetEventEvent } from "../../src/airflow/events.js";
import { consume, daemonConfig, dropDatabase, startDaemon, uniqueName, waitFor, withPg } from "../support/harness.js";
import {
  abort,
  airflowInstance,
  airflowOk,
  airflowVersions,
  ensureVenv,
  killOnExit,
  migrate,
  REPO,
  type AirflowInstance,
} from "./support/airflow.js";

/**
 * Asset events from a real Airflow: test/dags-assets/es_assets.py has a task whose outlet is an
 * asset (3.x) / dataset (2.x) and sets an extra on its event. `airflow dags reserialize` writes the
 * asset row (2.x `dags test` does not), `airflow dags test` runs the task, and Airflow inserts the
 * asset_event (dataset_event) row; the daemon, streaming, publishes it on the asset topic.
 */
describe.each(airflowVersions())("Airflow $version: a task's outlet becomes an asset_event record", ({ major, version }) => {
  const db = uniqueName(`e2eassets${major}`);
  let af: AirflowInstance | null = null;
  afterAll(async () => {
    if (af) abort(af);
    await dropDatabase(db);
  });

  it("publishes the asset event Airflow recorded, keyed by the asset's URI", async () => {
    const venv = await ensureVenv(version);
    await withPg("postgres", (c) => c.query(`CREATE DATABASE ${db}`));
    af = await airflowInstance(version, major, venv, db, "assets");
    af.env.AIRFLOW__CORE__DAGS_FOLDER = join(REPO, "test/dags-assets");
    killOnExit(af);
    await migrate(af);
    const topic = `${db}.assets`;
    const log: string[] = [];
    const daemon = startDaemon(daemonConfig(db, { EVENTSTREAM_ASSET_EVENTS: "true", EVENTSTREAM_ASSET_TOPIC: topic }), log);
    try {
      await waitFor("the daemon to stream", async () => log.some((l) => l.includes('"msg":"streaming"')), 120_000, 100);
      await airflowOk(af, ["dags", "reserialize"], "reserialize", 240_000);
      await airflowOk(af, ["dags", "test", "es_assets", "2026-01-15"], "dags-test-es_assets", 240_000);
      const table = major === "3" ? "asset_event" : "dataset_event";
      const rows = await withPg(db, async (c) => (await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);
      expect(rows, `Airflow wrote no ${table} row; see ${af.home}`).toBe("1");

      const [m] = await consume([topic], (all) => all.length >= 1, 60_000);
      expect(m?.key).toBe("s3://eventstream-e2e/orders.parquet");
      const e = AssetEventEvent.parse(m!.event);
      expect(e).toMatchObject({
        type: "asset_event",
        asset: { uri: "s3://eventstream-e2e/orders.parquet", name: major === "3" ? "orders" : null },
        extra: { rows: 3, written_at: "2026-01-15" },
        source_dag_id: "es_assets",
        source_task_id: "write",
        source_map_index: -1,
      });
      // 2.x names the run after its logical date, 3.x after the time it was created: compare with Airflow's row.
      const runId = await withPg(
        db,
        async (c) => (await c.query<{ run_id: string }>("SELECT run_id FROM dag_run WHERE dag_id = 'es_assets'")).rows[0]!.run_id,
      );
      expect(e.source_run_id).toBe(runId);
    } finally {
      await daemon.stop();
    }
  });
});
