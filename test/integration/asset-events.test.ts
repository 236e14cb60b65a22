import { afterAll, describe, expect, it } from "vitest";
import type pg from "pg";
import { AssetEventEvent } from "../../src/airflow/events.js";
import { loadConfig } from "../../src/config.js";
import { PublicationError } from "../../src/errors.js";
import {
  consume,
  createDatabase,
  daemonConfig,
  daemonEnv,
  dropDatabase,
  startDaemon,
  uniqueName,
  waitForStreaming,
  withPg,
  type AirflowMajor,
  type Consumed,
} from "../support/harness.js";

/**
 * Asset events on the real PostgreSQL (Airflow's real 2.x and 3.x schemas) and the real Kafka: an
 * asset created before the daemon started (known from the start's read of the table) and one
 * created while it streams (known from the WAL), their events on the asset topic keyed by URI.
 */

async function insertAsset(c: pg.Client, major: AirflowMajor, uri: string, name: string): Promise<number> {
  const sql =
    major === "3"
      ? `INSERT INTO asset (name, uri, "group", extra, created_at, updated_at) VALUES ($2, $1, 'asset', '{}', now(), now()) RETURNING id`
      : `INSERT INTO dataset (uri, extra, created_at, updated_at) VALUES ($1, '{}', now(), now()) RETURNING id`;
  const { rows } = await c.query<{ id: number }>(sql, major === "3" ? [uri, name] : [uri]);
  return rows[0]!.id;
}

/** As Airflow's task outlet (source_* set) or REST API (source_* null) writes the row. */
async function insertAssetEvent(c: pg.Client, major: AirflowMajor, assetId: number, extra: unknown, fromTask: boolean): Promise<void> {
  const [table, col] = major === "3" ? ["asset_event", "asset_id"] : ["dataset_event", "dataset_id"];
  const src = fromTask ? ["producer", "write", "manual__2026-12-03T10:00:00+00:00", -1] : [null, null, null, null];
  await c.query(
    `INSERT INTO ${table} (${col}, extra, source_dag_id, source_task_id, source_run_id, source_map_index, "timestamp")
     VALUES ($1, $2, $3, $4, $5, $6, '2026-12-03T10:00:05.123456Z')`,
    [assetId, JSON.stringify(extra), ...src],
  );
}

const byPosition = (all: Consumed[]): Consumed[] =>
  [...all].sort((a, b) =>
    a.event.source.position < b.event.source.position ? -1 : a.event.source.position > b.event.source.position ? 1 : 0,
  );

describe.each(["2", "3"] as AirflowMajor[])("Airflow %s.x: asset events", (major) => {
  const db = uniqueName(`assets${major}`);
  const assetTopic = `${db}.assets`;
  const env = { EVENTSTREAM_ASSET_EVENTS: "true", EVENTSTREAM_ASSET_TOPIC: assetTopic };
  afterAll(async () => {
    await dropDatabase(db);
  });

  it("publishes one record per inserted event on the asset topic, keyed by the asset's URI, across a restart", async () => {
    await createDatabase(db, major);
    const before = await withPg(db, (c) => insertAsset(c, major, "s3://bucket/orders.parquet", "orders"));
    let daemon = startDaemon(daemonConfig(db, env));
    let after: number;
    try {
      await waitForStreaming(db);
      const published = await withPg(db, (c) =>
        c.query<{ tablename: string }>("SELECT tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", [db]),
      );
      expect(published.rows.map((r) => r.tablename)).toEqual(
        major === "3"
          ? ["asset", "asset_event", "dag_run", "task_instance", "xcom"]
          : ["dag_run", "dataset", "dataset_event", "task_instance", "xcom"],
      );
      after = await withPg(db, async (c) => {
        const id = await insertAsset(c, major, "file:///data/é.csv", "accented");
        await insertAssetEvent(c, major, before, { rows: 1000 }, true);
        await insertAssetEvent(c, major, id, null, false);
        // A later change of an event row is not an event.
        await c.query(`UPDATE ${major === "3" ? "asset_event" : "dataset_event"} SET extra = '{"changed": true}'`);
        return id;
      });
      // Two URIs, two partitions: in the WAL's order by position, not in the order the consumer met them.
      const got = byPosition(await consume([assetTopic, `${db}.events`], (all) => all.length >= 2, 30_000));
      expect(got.map((m) => m.topic)).toEqual([assetTopic, assetTopic]);
      const events = got.map((m) => AssetEventEvent.parse(m.event));
      expect(got.map((m) => m.key)).toEqual(["s3://bucket/orders.parquet", "file:///data/é.csv"]);
      expect(events[0]).toMatchObject({
        type: "asset_event",
        asset: { uri: "s3://bucket/orders.parquet", name: major === "3" ? "orders" : null, group: major === "3" ? "asset" : null },
        asset_id: before,
        extra: { rows: 1000 },
        source_dag_id: "producer",
        source_task_id: "write",
        source_run_id: "manual__2026-12-03T10:00:00+00:00",
        source_map_index: -1,
        timestamp: "2026-12-03T10:00:05.123456Z",
      });
      expect(events[1]).toMatchObject({
        asset: { uri: "file:///data/é.csv", name: major === "3" ? "accented" : null },
        asset_id: after,
        extra: {},
        source_dag_id: null,
        source_task_id: null,
        source_run_id: null,
        source_map_index: null,
      });
    } finally {
      await daemon.stop();
    }

    // A restart replays nothing already in Kafka, and still knows both assets (read from the table).
    daemon = startDaemon(daemonConfig(db, env));
    try {
      await waitForStreaming(db);
      await withPg(db, (c) => insertAssetEvent(c, major, after, { n: 3 }, true));
      const got = byPosition(
        await consume([assetTopic], (all) => all.some((m) => (m.event as unknown as AssetEventEvent).extra.n === 3), 30_000),
      );
      const positions = got.map((m) => AssetEventEvent.parse(m.event).source.position);
      expect(new Set(positions).size).toBe(positions.length);
      expect(got).toHaveLength(3);
      expect(got[2]!.key).toBe("file:///data/é.csv");
    } finally {
      await daemon.stop();
    }
  });
});

describe("a publication made before asset events were turned on", () => {
  const db = uniqueName("assets_old_pub");
  afterAll(async () => {
    await dropDatabase(db);
  });

  it("with EVENTSTREAM_CREATE_PUBLICATION=false: refused with the owner's ALTER PUBLICATION, or EVENTSTREAM_ASSET_EVENTS=false", async () => {
    await createDatabase(db, "3");
    await withPg(db, (c) => c.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run, xcom`));
    const cfg = loadConfig(daemonEnv(db, { EVENTSTREAM_ASSET_EVENTS: "true", EVENTSTREAM_CREATE_PUBLICATION: "false" }));
    const err = await startDaemon(cfg).done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PublicationError);
    expect((err as Error).message).toContain(`ALTER PUBLICATION "${db}" ADD TABLE "public"."asset_event", "public"."asset";`);
    expect((err as Error).message).toContain("set EVENTSTREAM_ASSET_EVENTS=false");
    // As the message says, without asset events the same publication starts.
    const d = startDaemon(loadConfig(daemonEnv(db, { EVENTSTREAM_CREATE_PUBLICATION: "false" })));
    try {
      await waitForStreaming(db);
    } finally {
      await d.stop();
    }
  });
});
