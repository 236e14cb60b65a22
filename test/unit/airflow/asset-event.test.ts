import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { AirflowMapper } from "../../../src/airflow/mapper.js";
import { AssetEventEvent } from "../../../src/airflow/events.js";
import type { Relation, Row, RowChange, TxEvent } from "../../../src/decode/types.js";
import { UNCHANGED } from "../../../src/decode/types.js";
import { SchemaError } from "../../../src/errors.js";
import { TopicRouter } from "../../../src/sink/routing.js";

// Column lists in the order of the real schemas (test/fixtures/airflow/airflow-{2.11.2,3.3.2}.sql).
const V3 = {
  asset: ["id", "name", "uri", "group", "extra", "created_at", "updated_at"],
  event: ["id", "asset_id", "extra", "source_task_id", "source_dag_id", "source_run_id", "source_map_index", "timestamp", "partition_key"],
};
const V2 = {
  asset: ["id", "uri", "extra", "created_at", "updated_at", "is_orphaned"],
  event: ["id", "dataset_id", "extra", "source_task_id", "source_dag_id", "source_run_id", "source_map_index", "timestamp"],
};

function relation(name: string, columns: string[]): Relation {
  return {
    id: name.length,
    schema: "public",
    name,
    replicaIdentity: "d",
    columns: columns.map((c) => ({ name: c, typeOid: 25, typeMod: -1, isKey: c === "id" })),
  };
}

const logs: Record<string, unknown>[] = [];
const log = pino({ level: "warn" }, { write: (s: string) => logs.push(JSON.parse(s) as Record<string, unknown>) });
const OPTS = { schema: "public", cacheSize: 1000, xcomKey: null, notificationRawMaxBytes: 64, assetEvents: true };
const tx = { xid: 9, commitTime: "2026-12-03T10:00:06.000000Z" };
let index = 0;
const at = (c: RowChange): Extract<TxEvent, { kind: "change" }> => ({
  kind: "change",
  xid: 9,
  commitLsn: 0x16b3748n,
  index: index++,
  change: c,
});
const insert = (relation: Relation, row: Row): RowChange => ({ kind: "insert", relation, row });

const fromTask: Row = {
  id: 1,
  extra: { rows: 1000 },
  source_task_id: "write",
  source_dag_id: "producer",
  source_run_id: "manual__2026-12-03T10:00:00+00:00",
  source_map_index: -1,
  timestamp: "2026-12-03T10:00:05.123456Z",
};

describe("asset events (3.x asset_event / asset)", () => {
  const asset = relation("asset", V3.asset);
  const event = relation("asset_event", V3.event);

  it("maps an insert to the contract's event, with the asset's URI, name and group from the asset table", () => {
    const m = new AirflowMapper(OPTS, log);
    const a: Row = { id: 7, name: "orders", uri: "s3://bucket/orders.parquet", group: "asset", extra: {} };
    expect(m.map(at(insert(asset, a)), tx)).toBeNull();
    const ev = m.map(at(insert(event, { ...fromTask, asset_id: 7, partition_key: null })), tx);
    expect(AssetEventEvent.parse(ev)).toEqual(ev);
    expect(ev).toMatchObject({
      type: "asset_event",
      asset: { uri: "s3://bucket/orders.parquet", name: "orders", group: "asset" },
      asset_id: 7,
      extra: { rows: 1000 },
      source_dag_id: "producer",
      source_task_id: "write",
      source_run_id: "manual__2026-12-03T10:00:00+00:00",
      source_map_index: -1,
      timestamp: "2026-12-03T10:00:05.123456Z",
      source: { commit_lsn: "0/16B3748", xid: 9 },
    });
    expect(new TopicRouter("airflow.events", "airflow.{dag_id}", "airflow.asset_events").route(ev!)).toEqual({
      topic: "airflow.asset_events",
      key: "s3://bucket/orders.parquet",
      allPartitions: false,
    });
  });

  it("an event made through the API has null source_*, and a null extra is {}", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seedAsset({ id: 3, uri: "file:///tmp/x", name: "x", group: "ml" });
    const api: Row = {
      id: 2,
      asset_id: 3,
      extra: null,
      source_task_id: null,
      source_dag_id: null,
      source_run_id: null,
      source_map_index: null,
      timestamp: "2026-12-03T10:00:00.000000Z",
    };
    const ev = m.map(at(insert(event, api)), tx);
    expect(ev).toMatchObject({
      asset: { uri: "file:///tmp/x", name: "x", group: "ml" },
      extra: {},
      source_dag_id: null,
      source_task_id: null,
      source_run_id: null,
      source_map_index: null,
    });
  });

  it("follows the asset table: an update changes the URI of later events; an unchanged TOASTed URI keeps the known one; a delete keeps it", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seedAsset({ id: 5, uri: "s3://old", name: "n", group: "asset" });
    m.map(
      at({ kind: "update", relation: asset, row: { id: 5, name: "n", uri: "s3://new", group: "asset" }, old: null, oldKind: null }),
      tx,
    );
    expect(m.map(at(insert(event, { ...fromTask, asset_id: 5 })), tx)).toMatchObject({ asset: { uri: "s3://new" } });
    m.map(
      at({ kind: "update", relation: asset, row: { id: 5, name: "renamed", uri: UNCHANGED, group: "asset" }, old: null, oldKind: null }),
      tx,
    );
    expect(m.map(at(insert(event, { ...fromTask, asset_id: 5 })), tx)).toMatchObject({ asset: { uri: "s3://new", name: "renamed" } });
    m.map(at({ kind: "delete", relation: asset, old: { id: 5 }, oldKind: "key" }), tx);
    expect(m.map(at(insert(event, { ...fromTask, asset_id: 5 })), tx)).toMatchObject({ asset: { uri: "s3://new" } });
  });

  it("updates and deletes of event rows are not events", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seedAsset({ id: 7, uri: "u", name: "n", group: "g" });
    const row = { ...fromTask, asset_id: 7 };
    expect(m.map(at({ kind: "update", relation: event, row, old: null, oldKind: null }), tx)).toBeNull();
    expect(m.map(at({ kind: "delete", relation: event, old: { id: 1 }, oldKind: "key" }), tx)).toBeNull();
  });

  it("an asset never seen: the event is published with a null URI (null key) and a warning, not dropped", () => {
    logs.length = 0;
    const m = new AirflowMapper(OPTS, log);
    const ev = m.map(at(insert(event, { ...fromTask, asset_id: 99 })), tx);
    expect(AssetEventEvent.parse(ev)).toMatchObject({ asset: { uri: null, name: null, group: null }, asset_id: 99 });
    expect(new TopicRouter("airflow.events", null, "airflow.asset_events").route(ev!).key).toBeNull();
    expect(logs.some((l) => l.asset_id === 99 && String(l.msg).includes("null URI"))).toBe(true);
  });

  it("with EVENTSTREAM_ASSET_EVENTS off, asset tables map to nothing", () => {
    const m = new AirflowMapper({ ...OPTS, assetEvents: false }, log);
    m.seedAsset({ id: 7, uri: "u", name: "n", group: "g" });
    expect(m.map(at(insert(event, { ...fromTask, asset_id: 7 })), tx)).toBeNull();
  });

  it("refuses an event table without the columns the mapping needs", () => {
    const m = new AirflowMapper(OPTS, log);
    expect(() => m.map(at(insert(relation("asset_event", ["id", "extra"]), { id: 1 })), tx)).toThrow(SchemaError);
  });
});

describe("asset events (2.x dataset_event / dataset)", () => {
  it("maps dataset_id to the dataset's URI; name and group are null", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(at(insert(relation("dataset", V2.asset), { id: 4, uri: "s3://b/ds", extra: {}, is_orphaned: false })), tx);
    const ev = m.map(at(insert(relation("dataset_event", V2.event), { ...fromTask, dataset_id: 4 })), tx);
    expect(AssetEventEvent.parse(ev)).toEqual(ev);
    expect(ev).toMatchObject({
      type: "asset_event",
      asset: { uri: "s3://b/ds", name: null, group: null },
      asset_id: 4,
      extra: { rows: 1000 },
      source_dag_id: "producer",
    });
  });

  it("a dataset read at start (no name or group) is known", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seedAsset({ id: 8, uri: "postgres://db/t", name: null, group: null });
    const ev = m.map(at(insert(relation("dataset_event", V2.event), { ...fromTask, dataset_id: 8 })), tx);
    expect(ev).toMatchObject({ asset: { uri: "postgres://db/t", name: null, group: null }, asset_id: 8 });
  });
});
