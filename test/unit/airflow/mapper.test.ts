import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { AirflowMapper } from "../../../src/airflow/mapper.js";
import { TaskInstanceEvent, DagRunEvent, NotificationEvent } from "../../../src/airflow/events.js";
import type { Relation, Row, RowChange, TxEvent } from "../../../src/decode/types.js";
import { UNCHANGED } from "../../../src/decode/types.js";
import { SchemaError } from "../../../src/errors.js";
import { formatPosition, isAtOrBefore, parsePosition } from "../../../src/lsn.js";

const log = pino({ level: "silent" });
const OPTS = { schema: "public", cacheSize: 1000, xcomKey: "eventstream", notificationRawMaxBytes: 64 };

function relation(name: string, columns: string[], keys: string[]): Relation {
  return {
    id: name.length,
    schema: "public",
    name,
    replicaIdentity: "d",
    columns: columns.map((c) => ({ name: c, typeOid: 25, typeMod: -1, isKey: keys.includes(c) })),
  };
}

const TI2 = relation(
  "task_instance",
  [
    "task_id",
    "dag_id",
    "run_id",
    "map_index",
    "start_date",
    "end_date",
    "duration",
    "state",
    "try_number",
    "max_tries",
    "hostname",
    "operator",
    "queue",
    "pool",
    "executor_config",
  ],
  ["dag_id", "task_id", "run_id", "map_index"],
);
const TI3 = relation(
  "task_instance",
  [
    "id",
    "task_id",
    "dag_id",
    "run_id",
    "map_index",
    "state",
    "try_number",
    "max_tries",
    "last_heartbeat_at",
    "hostname",
    "operator",
    "queue",
    "pool",
    "some_future_column",
  ],
  ["id"],
);
const RUN = relation("dag_run", ["id", "dag_id", "run_id", "state", "run_type", "logical_date", "clear_number"], ["id"]);
const XCOM = relation(
  "xcom",
  ["dag_run_id", "task_id", "map_index", "key", "dag_id", "run_id", "value", "timestamp"],
  ["dag_run_id", "task_id", "map_index", "key"],
);
/** An xcom row of etl/extract/manual__1 under the notification key. */
const xrow = (value: Row[string], over: Row = {}): Row => ({
  dag_run_id: 9,
  task_id: "extract",
  map_index: -1,
  key: "eventstream",
  dag_id: "etl",
  run_id: "manual__1",
  value,
  timestamp: "2026-11-25T08:00:03.000001Z",
  ...over,
});

let index = 0;
function change(c: RowChange): Extract<TxEvent, { kind: "change" }> {
  return { kind: "change", xid: 7, commitLsn: 0x16b3748n, index: index++, change: c };
}
const tx = { xid: 7, commitTime: "2026-11-25T08:00:00.123456Z" };

const key2 = { dag_id: "etl", task_id: "extract", run_id: "manual__1", map_index: -1 };
const ti2 = (over: Row): Row => ({
  ...key2,
  state: null,
  try_number: 0,
  max_tries: 0,
  hostname: "",
  operator: "BashOperator",
  queue: "default",
  pool: "default_pool",
  start_date: null,
  end_date: null,
  duration: null,
  executor_config: UNCHANGED,
  ...over,
});

describe("AirflowMapper: task instances (2.x schema)", () => {
  it("maps a whole lifecycle to one event per transition, with exact previous states", () => {
    const m = new AirflowMapper(OPTS, log);
    const out = [
      m.map(change({ kind: "insert", relation: TI2, row: ti2({}) }), tx),
      m.map(change({ kind: "update", relation: TI2, row: ti2({ state: "scheduled", try_number: 1 }), old: null, oldKind: null }), tx),
      m.map(change({ kind: "update", relation: TI2, row: ti2({ state: "queued", try_number: 1 }), old: null, oldKind: null }), tx),
      m.map(
        change({ kind: "update", relation: TI2, row: ti2({ state: "queued", try_number: 1, hostname: "w1" }), old: null, oldKind: null }),
        tx,
      ),
      m.map(
        change({
          kind: "update",
          relation: TI2,
          row: ti2({ state: "running", try_number: 1, start_date: "2026-11-25T08:00:01.000001Z" }),
          old: null,
          oldKind: null,
        }),
        tx,
      ),
      m.map(change({ kind: "update", relation: TI2, row: ti2({ state: "up_for_retry", try_number: 1 }), old: null, oldKind: null }), tx),
      m.map(change({ kind: "update", relation: TI2, row: ti2({ state: "scheduled", try_number: 2 }), old: null, oldKind: null }), tx),
      m.map(
        change({ kind: "update", relation: TI2, row: ti2({ state: "success", try_number: 2, duration: 1.5 }), old: null, oldKind: null }),
        tx,
      ),
    ];
    const events = out.filter((e) => e !== null).map((e) => TaskInstanceEvent.parse(e));
    expect(events.map((e) => [e.op, e.previous_state, e.state, e.try_number])).toEqual([
      ["insert", null, null, 0],
      ["update", null, "scheduled", 1],
      ["update", "scheduled", "queued", 1],
      ["update", "queued", "running", 1],
      ["update", "running", "up_for_retry", 1],
      ["update", "up_for_retry", "scheduled", 2],
      ["update", "scheduled", "success", 2],
    ]);
    expect(out[3]).toBeNull(); // hostname only: churn
    for (const e of events) {
      expect(e.previous_state_known).toBe(true);
      expect(e.ti_id).toBeNull();
    }
    expect(events[3]!.start_date).toBe("2026-11-25T08:00:01.000001Z");
    expect(events[6]!.duration).toBe(1.5);
  });

  it("emits a try-number change even when the state stays the same", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: TI2, row: ti2({ state: "scheduled", try_number: 1 }) }), tx);
    const e = m.map(
      change({ kind: "update", relation: TI2, row: ti2({ state: "scheduled", try_number: 2 }), old: null, oldKind: null }),
      tx,
    );
    expect(e).toMatchObject({ state: "scheduled", try_number: 2, previous_try_number: 1 });
  });

  it("says when the previous state is unknown (first sight of the row since start)", () => {
    const m = new AirflowMapper(OPTS, log);
    const e = m.map(change({ kind: "update", relation: TI2, row: ti2({ state: "running", try_number: 1 }), old: null, oldKind: null }), tx);
    expect(e).toMatchObject({ previous_state: null, previous_state_known: false, state: "running" });
  });

  it("follows a key change (mapped task expansion: map_index -1 -> 0)", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: TI2, row: ti2({ state: "scheduled", try_number: 1 }) }), tx);
    const e = m.map(
      change({
        kind: "update",
        relation: TI2,
        row: ti2({ map_index: 0, state: "scheduled", try_number: 1 }),
        old: { ...key2 },
        oldKind: "key",
      }),
      tx,
    );
    expect(e).toMatchObject({ op: "update", map_index: 0, state: "scheduled", previous_state: "scheduled", previous_state_known: true });
    // The row now lives under map_index 0: its next change is compared with that.
    const next = m.map(
      change({
        kind: "update",
        relation: TI2,
        row: ti2({ map_index: 0, state: "scheduled", try_number: 1, hostname: "x" }),
        old: null,
        oldKind: null,
      }),
      tx,
    );
    expect(next).toBeNull();
  });

  it("maps a delete with the last known state", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: TI2, row: ti2({ state: "success", try_number: 1 }) }), tx);
    const e = m.map(change({ kind: "delete", relation: TI2, old: { ...key2 }, oldKind: "key" }), tx);
    expect(e).toMatchObject({ op: "delete", dag_id: "etl", state: "success", previous_state_known: true });
    expect(TaskInstanceEvent.parse(e)).toEqual(e);
  });

  it("carries the source position: unique and increasing within a transaction", () => {
    const m = new AirflowMapper(OPTS, log);
    index = 0;
    const a = m.map(change({ kind: "insert", relation: TI2, row: ti2({}) }), tx)!;
    const b = m.map(change({ kind: "insert", relation: TI2, row: ti2({ task_id: "load" }) }), tx)!;
    expect(a.source).toEqual({
      commit_lsn: "0/16B3748",
      xid: 7,
      index: 0,
      position: "00000000016B3748-00000000",
      commit_time: tx.commitTime,
    });
    expect(b.source.position > a.source.position).toBe(true);
  });

  it("writes source.position as the checkpoint reads it: exactly-once skipping and the read-back compare the two", () => {
    const m = new AirflowMapper(OPTS, log);
    index = 0x1a;
    const e = m.map(change({ kind: "insert", relation: TI2, row: ti2({}) }), tx)!;
    const parsed = parsePosition(e.source.position);
    expect(parsed).toEqual({ commitLsn: 0x16b3748n, index: 0x1a });
    expect(formatPosition(parsed)).toBe(e.source.position);
    expect(isAtOrBefore(parsed.commitLsn, parsed.index, parsed)).toBe(true);
    expect(isAtOrBefore(parsed.commitLsn, parsed.index + 1, parsed)).toBe(false);
  });
});

describe("AirflowMapper: task instances (3.x schema)", () => {
  const ti3 = (over: Row): Row => ({
    id: "0195-a",
    ...key2,
    state: null,
    try_number: 0,
    max_tries: 0,
    hostname: null,
    operator: "PythonOperator",
    queue: "default",
    pool: "default_pool",
    last_heartbeat_at: null,
    some_future_column: "x",
    ...over,
  });

  it("ignores heartbeats and follows the new id of a new try", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: TI3, row: ti3({ state: "running", try_number: 1 }) }), tx);
    const hb = m.map(
      change({
        kind: "update",
        relation: TI3,
        row: ti3({ state: "running", try_number: 1, last_heartbeat_at: "2026-11-25T08:00:05.000000Z" }),
        old: null,
        oldKind: null,
      }),
      tx,
    );
    expect(hb).toBeNull();
    const retry = m.map(
      change({
        kind: "update",
        relation: TI3,
        row: ti3({ id: "0195-b", state: "up_for_retry", try_number: 1 }),
        old: { id: "0195-a" },
        oldKind: "key",
      }),
      tx,
    );
    expect(retry).toMatchObject({ ti_id: "0195-b", previous_state: "running", state: "up_for_retry" });
  });

  it("a row updated in place in the cache: each event keeps its own previous state, and the XCom try and a DELETE see the newest", () => {
    const m = new AirflowMapper(OPTS, log);
    const upd = (over: Row) => m.map(change({ kind: "update", relation: TI3, row: ti3(over), old: null, oldKind: null }), tx);
    const events = [
      m.map(change({ kind: "insert", relation: TI3, row: ti3({ state: "scheduled", try_number: 0 }) }), tx),
      upd({ state: "queued", try_number: 1 }),
      upd({ state: "running", try_number: 1 }),
      upd({ state: "running", try_number: 1, last_heartbeat_at: "2026-11-25T08:00:05.000000Z" }),
      upd({ state: "running", try_number: 2 }),
      upd({ state: "success", try_number: 2 }),
    ];
    expect(events[3]).toBeNull();
    const published = events.filter((e) => e !== null).map((e) => TaskInstanceEvent.parse(e));
    expect(published.map((e) => [e.previous_state, e.state, e.previous_try_number, e.try_number])).toEqual([
      [null, "scheduled", null, 0],
      ["scheduled", "queued", 0, 1],
      ["queued", "running", 1, 1],
      ["running", "running", 1, 2],
      ["running", "success", 2, 2],
    ]);
    const n = m.map(change({ kind: "insert", relation: XCOM, row: xrow({ request_id: "r" }) }), tx);
    expect(n).toMatchObject({ type: "notification", try_number: 2 });
    const d = m.map(change({ kind: "delete", relation: TI3, old: { id: "0195-a" }, oldKind: "key" }), tx);
    expect(d).toMatchObject({ op: "delete", dag_id: "etl", task_id: "extract", run_id: "manual__1", state: "success", try_number: 2 });
  });

  it("names a deleted row it never saw by its id alone", () => {
    const m = new AirflowMapper(OPTS, log);
    const e = m.map(change({ kind: "delete", relation: TI3, old: { id: "0195-z" }, oldKind: "key" }), tx);
    expect(e).toMatchObject({ op: "delete", ti_id: "0195-z", dag_id: null, previous_state_known: false });
    expect(TaskInstanceEvent.parse(e)).toEqual(e);
  });
});

describe("AirflowMapper: DAG runs and the rest", () => {
  it("maps dag_run transitions including a clear back to queued", () => {
    const m = new AirflowMapper(OPTS, log);
    const run = (over: Row): Row => ({
      id: 3,
      dag_id: "etl",
      run_id: "manual__1",
      state: "queued",
      run_type: "manual",
      logical_date: "2026-11-25T00:00:00.000000Z",
      clear_number: 0,
      ...over,
    });
    const out = [
      m.map(change({ kind: "insert", relation: RUN, row: run({}) }), tx),
      m.map(change({ kind: "update", relation: RUN, row: run({ state: "running" }), old: null, oldKind: null }), tx),
      m.map(change({ kind: "update", relation: RUN, row: run({ state: "running" }), old: null, oldKind: null }), tx),
      m.map(change({ kind: "update", relation: RUN, row: run({ state: "success" }), old: null, oldKind: null }), tx),
      m.map(change({ kind: "update", relation: RUN, row: run({ state: "queued", clear_number: 1 }), old: null, oldKind: null }), tx),
    ];
    expect(out[2]).toBeNull();
    const events = out.filter((e) => e !== null).map((e) => DagRunEvent.parse(e));
    expect(events.map((e) => [e.previous_state, e.state])).toEqual([
      [null, "queued"],
      ["queued", "running"],
      ["running", "success"],
      ["success", "queued"],
    ]);
    expect(events[3]).toMatchObject({ clear_number: 1, logical_date: "2026-11-25T00:00:00.000000Z" });
    for (const e of events) expect(DagRunEvent.parse(e)).toEqual(e);
  });

  it("takes execution_date as the logical date on 2.x", () => {
    const m = new AirflowMapper(OPTS, log);
    const rel = relation("dag_run", ["id", "dag_id", "run_id", "state", "execution_date"], ["id"]);
    const e = m.map(
      change({
        kind: "insert",
        relation: rel,
        row: { id: 1, dag_id: "d", run_id: "r", state: "queued", execution_date: "2024-01-01T00:00:00.000000Z" },
      }),
      tx,
    );
    expect(e).toMatchObject({ logical_date: "2024-01-01T00:00:00.000000Z", clear_number: null });
  });

  it("ignores other tables and other schemas", () => {
    const m = new AirflowMapper(OPTS, log);
    const other = relation("job", ["id", "state"], ["id"]);
    expect(m.map(change({ kind: "insert", relation: other, row: { id: 1, state: "running" } }), tx)).toBeNull();
    expect(m.map(change({ kind: "insert", relation: { ...TI2, schema: "elsewhere" }, row: ti2({}) }), tx)).toBeNull();
  });

  it("refuses a task_instance table that lacks Airflow's columns, saying what to check", () => {
    const m = new AirflowMapper(OPTS, log);
    const bad = relation("task_instance", ["dag_id", "task_id"], ["dag_id"]);
    expect(() => m.map(change({ kind: "insert", relation: bad, row: { dag_id: "d", task_id: "t" } }), tx)).toThrow(SchemaError);
  });

  it("forgets the least recently used rows beyond its capacity", () => {
    const m = new AirflowMapper(OPTS, log);
    for (let i = 0; i < 1001; i++)
      m.map(change({ kind: "insert", relation: TI2, row: ti2({ task_id: `t${i}`, state: "queued", try_number: 1 }) }), tx);
    const first = m.map(
      change({ kind: "update", relation: TI2, row: ti2({ task_id: "t0", state: "queued", try_number: 1 }), old: null, oldKind: null }),
      tx,
    );
    expect(first).toMatchObject({ previous_state_known: false });
    const last = m.map(
      change({ kind: "update", relation: TI2, row: ti2({ task_id: "t1000", state: "queued", try_number: 1 }), old: null, oldKind: null }),
      tx,
    );
    expect(last).toBeNull();
  });
});

describe("AirflowMapper: 3.x retry written as two UPDATEs (state, then a new id)", () => {
  it("publishes the state change once and follows the new id silently", () => {
    const m = new AirflowMapper(OPTS, log);
    const row = (over: Row): Row => ({ id: "u1", ...key2, state: "running", try_number: 1, ...over });
    m.map(change({ kind: "insert", relation: TI3, row: row({}) }), tx);
    const first = m.map(change({ kind: "update", relation: TI3, row: row({ state: "up_for_retry" }), old: null, oldKind: null }), tx);
    const second = m.map(
      change({ kind: "update", relation: TI3, row: row({ id: "u2", state: "up_for_retry" }), old: { id: "u1" }, oldKind: "key" }),
      tx,
    );
    expect(first).toMatchObject({ previous_state: "running", state: "up_for_retry" });
    expect(second).toBeNull();
    const next = m.map(
      change({ kind: "update", relation: TI3, row: row({ id: "u2", state: "scheduled", try_number: 2 }), old: null, oldKind: null }),
      tx,
    );
    expect(next).toMatchObject({ previous_state: "up_for_retry", previous_state_known: true, state: "scheduled", ti_id: "u2" });
  });
});

describe("AirflowMapper: mapped expansion on 3.x (id key unchanged)", () => {
  it("emits the map_index -1 -> 0 rewrite though the row's id stays", () => {
    const m = new AirflowMapper(OPTS, log);
    const row = (over: Row): Row => ({ id: "u1", ...key2, state: "scheduled", try_number: 1, ...over });
    m.map(change({ kind: "insert", relation: TI3, row: row({}) }), tx);
    const e = m.map(change({ kind: "update", relation: TI3, row: row({ map_index: 0 }), old: null, oldKind: null }), tx);
    expect(e).toMatchObject({ op: "update", map_index: 0, previous_state: "scheduled", state: "scheduled" });
  });
});

describe("AirflowMapper: run context on task-instance events", () => {
  const RUN3 = relation(
    "dag_run",
    [
      "id",
      "dag_id",
      "run_id",
      "state",
      "run_type",
      "logical_date",
      "data_interval_start",
      "data_interval_end",
      "clear_number",
      "last_scheduling_decision",
    ],
    ["id"],
  );
  const run = (over: Row): Row => ({
    id: 9,
    dag_id: "etl",
    run_id: "manual__1",
    state: "running",
    run_type: "scheduled",
    logical_date: "2026-11-24T00:00:00.000000Z",
    data_interval_start: "2026-11-24T00:00:00.000000Z",
    data_interval_end: "2026-11-25T00:00:00.000000Z",
    clear_number: 0,
    last_scheduling_decision: null,
    ...over,
  });

  it("takes the context from dag_run rows in the stream, and follows clear_number", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: RUN3, row: run({}) }), tx);
    const e = m.map(change({ kind: "insert", relation: TI2, row: ti2({ run_id: "manual__1" }) }), tx);
    expect(e).toMatchObject({
      logical_date: "2026-11-24T00:00:00.000000Z",
      run_type: "scheduled",
      data_interval_start: "2026-11-24T00:00:00.000000Z",
      data_interval_end: "2026-11-25T00:00:00.000000Z",
      clear_number: 0,
    });
    // Churn on the run (a scheduling decision) still refreshes the context; a clear bumps clear_number.
    expect(
      m.map(
        change({
          kind: "update",
          relation: RUN3,
          row: run({ last_scheduling_decision: "2026-11-25T00:00:01.000000Z" }),
          old: null,
          oldKind: null,
        }),
        tx,
      ),
    ).toBeNull();
    m.map(change({ kind: "update", relation: RUN3, row: run({ state: "queued", clear_number: 1 }), old: null, oldKind: null }), tx);
    const after = m.map(
      change({
        kind: "update",
        relation: TI2,
        row: ti2({ run_id: "manual__1", state: "scheduled", try_number: 2 }),
        old: null,
        oldKind: null,
      }),
      tx,
    );
    expect(after).toMatchObject({ clear_number: 1 });
  });

  it("uses the context read at start for runs already under way, and nulls for unknown runs", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seedRunContext("etl", "manual__1", {
      logicalDate: "2026-01-01T00:00:00.000000Z",
      runType: "manual",
      dataIntervalStart: null,
      dataIntervalEnd: null,
      clearNumber: 3,
    });
    expect(m.map(change({ kind: "insert", relation: TI2, row: ti2({ run_id: "manual__1" }) }), tx)).toMatchObject({
      logical_date: "2026-01-01T00:00:00.000000Z",
      run_type: "manual",
      clear_number: 3,
    });
    expect(m.map(change({ kind: "insert", relation: TI2, row: ti2({ run_id: "other" }) }), tx)).toMatchObject({
      logical_date: null,
      run_type: null,
      clear_number: null,
    });
  });
});

describe("AirflowMapper: notifications from XCom", () => {
  const XCOM2 = XCOM;
  const XCOM3 = XCOM;
  const good = {
    request_id: "req-1",
    start: "2026-11-24",
    end: "2026-11-25",
    metadata: { rows: 3 },
    payload: { ok: true },
    payload_uri: "s3://bucket/out/",
    files: { "a.csv": "0123456789abcdef0123456789abcdef" },
  };

  it("publishes a 2.x (bytea JSON) notification with the task's try and the run's logical date", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seedRunContext("etl", "manual__1", {
      logicalDate: "2026-11-24T00:00:00.000000Z",
      runType: "scheduled",
      dataIntervalStart: null,
      dataIntervalEnd: null,
      clearNumber: 0,
    });
    m.map(
      change({
        kind: "update",
        relation: TI2,
        row: ti2({ run_id: "manual__1", state: "running", try_number: 2 }),
        old: null,
        oldKind: null,
      }),
      tx,
    );
    const e = m.map(change({ kind: "insert", relation: XCOM2, row: xrow(Buffer.from(JSON.stringify(good))) }), tx);
    const n = NotificationEvent.parse(e);
    expect(n).toMatchObject({
      type: "notification",
      dag_id: "etl",
      task_id: "extract",
      run_id: "manual__1",
      map_index: -1,
      try_number: 2,
      logical_date: "2026-11-24T00:00:00.000000Z",
      time: "2026-11-25T08:00:03.000001Z",
      xcom_key: "eventstream",
      ...good,
      error: null,
    });
  });

  it("accepts a 3.x (jsonb) value and the original camelCase names", () => {
    const m = new AirflowMapper(OPTS, log);
    const e = m.map(
      change({ kind: "insert", relation: XCOM3, row: xrow({ requestId: "r-9", payloadURI: "gs://x", payload: [1, 2] }) }),
      tx,
    );
    expect(e).toMatchObject({ request_id: "r-9", payload_uri: "gs://x", payload: [1, 2], try_number: null, error: null });
  });

  it("turns an invalid value into a notification that carries the error and the raw value, capped", () => {
    const m = new AirflowMapper(OPTS, log);
    const bad = m.map(
      change({ kind: "insert", relation: XCOM3, row: xrow({ files: { "a.csv": "not-an-md5" }, extra: "x".repeat(200) }) }),
      tx,
    );
    const n = NotificationEvent.parse(bad);
    expect(n.error?.message).toMatch(/files\.a\.csv: must be an MD5/);
    expect(n.error?.message).toMatch(/extra/);
    expect(n.error?.truncated).toBe(true);
    expect(Buffer.byteLength(n.error!.raw)).toBeLessThanOrEqual(64);
    expect(n.request_id).toBeNull();
    const pickled = m.map(change({ kind: "insert", relation: XCOM2, row: xrow(Buffer.from([0x80, 0x04, 0x95, 0xff])) }), tx);
    expect(pickled).toMatchObject({ error: { message: expect.stringMatching(/not JSON/) } });
    const str3 = m.map(change({ kind: "insert", relation: XCOM3, row: xrow("just a string") }), tx);
    expect(str3).toMatchObject({ error: { raw: '"just a string"' } });
    const notJson = m.map(change({ kind: "insert", relation: XCOM2, row: xrow(Buffer.from("{oops")) }), tx);
    expect(notJson).toMatchObject({ error: { message: "the XCom value is not valid JSON", raw: "{oops", truncated: false } });
  });

  it("ignores other keys, deletes, and XComs when notifications are off", () => {
    const m = new AirflowMapper(OPTS, log);
    expect(m.map(change({ kind: "insert", relation: XCOM3, row: xrow(good, { key: "return_value" }) }), tx)).toBeNull();
    expect(m.map(change({ kind: "delete", relation: XCOM3, old: xrow(null), oldKind: "key" }), tx)).toBeNull();
    const off = new AirflowMapper({ ...OPTS, xcomKey: null }, log);
    expect(off.map(change({ kind: "insert", relation: XCOM3, row: xrow(good) }), tx)).toBeNull();
  });
});

/**
 * REPLICA IDENTITY FULL: the WAL carries the old row ('O') of every UPDATE and DELETE, and the
 * Relation message flags every column as key. A fresh mapper stands for a daemon just started:
 * nothing remembered, so anything exact can only have come from the old row.
 */
describe("AirflowMapper: old rows from REPLICA IDENTITY FULL", () => {
  const full = (rel: Relation): Relation => ({ ...rel, replicaIdentity: "f", columns: rel.columns.map((c) => ({ ...c, isKey: true })) });
  const TI2F = full(TI2);
  const TI3F = full(TI3);
  const RUNF = full(RUN);
  const ti3 = (over: Row): Row => ({
    id: "0195-a",
    ...key2,
    state: null,
    try_number: 0,
    max_tries: 1,
    hostname: null,
    operator: "PythonOperator",
    queue: "default",
    pool: "default_pool",
    last_heartbeat_at: null,
    some_future_column: "x",
    ...over,
  });
  const upd = (relation: Relation, old: Row, row: Row) => change({ kind: "update", relation, row, old, oldKind: "full" });

  it("2.x: the first update after a start has the exact previous state and try", () => {
    const m = new AirflowMapper(OPTS, log);
    const e = m.map(
      upd(
        TI2F,
        ti2({ state: "running", try_number: 1, hostname: "w1" }),
        ti2({ state: "success", try_number: 1, hostname: "w1", duration: 2 }),
      ),
      tx,
    );
    expect(TaskInstanceEvent.parse(e)).toMatchObject({
      op: "update",
      previous_state: "running",
      previous_state_known: true,
      previous_try_number: 1,
      state: "success",
      try_number: 1,
    });
  });

  it("a churn-only update right after a start is no event, where DEFAULT has to publish it as unknown", () => {
    const full2 = new AirflowMapper(OPTS, log);
    expect(
      full2.map(upd(TI2F, ti2({ state: "running", try_number: 1 }), ti2({ state: "running", try_number: 1, hostname: "w2" })), tx),
    ).toBeNull();
    const full3 = new AirflowMapper(OPTS, log);
    const hb = { state: "running", try_number: 1, last_heartbeat_at: "2026-11-25T08:00:05.000000Z" };
    expect(full3.map(upd(TI3F, ti3({ ...hb, last_heartbeat_at: "2026-11-25T08:00:00.000000Z" }), ti3(hb)), tx)).toBeNull();
    // The same heartbeat without the old row: the daemon cannot tell it from a transition.
    const dflt = new AirflowMapper(OPTS, log);
    const e = dflt.map(change({ kind: "update", relation: TI3, row: ti3(hb), old: null, oldKind: null }), tx);
    expect(e).toMatchObject({ state: "running", previous_state: null, previous_state_known: false, previous_try_number: null });
  });

  it("3.x: a retry's two UPDATEs (state, then a new id) are one event; the next try's previous state is exact", () => {
    const m = new AirflowMapper(OPTS, log);
    const first = m.map(upd(TI3F, ti3({ state: "running", try_number: 1 }), ti3({ state: "up_for_retry", try_number: 1 })), tx);
    const second = m.map(
      upd(TI3F, ti3({ state: "up_for_retry", try_number: 1 }), ti3({ id: "0195-b", state: "up_for_retry", try_number: 1 })),
      tx,
    );
    expect(first).toMatchObject({ previous_state: "running", previous_state_known: true, state: "up_for_retry", ti_id: "0195-a" });
    expect(second).toBeNull();
    const next = m.map(
      upd(TI3F, ti3({ id: "0195-b", state: "up_for_retry", try_number: 1 }), ti3({ id: "0195-b", state: "scheduled", try_number: 2 })),
      tx,
    );
    expect(next).toMatchObject({
      previous_state: "up_for_retry",
      previous_try_number: 1,
      state: "scheduled",
      try_number: 2,
      ti_id: "0195-b",
      previous_state_known: true,
    });
  });

  it("2.x: a mapped expansion (map_index -1 -> 0) after a start is an event with the exact state", () => {
    const m = new AirflowMapper(OPTS, log);
    const e = m.map(upd(TI2F, ti2({ state: "scheduled", try_number: 1 }), ti2({ map_index: 0, state: "scheduled", try_number: 1 })), tx);
    expect(e).toMatchObject({ map_index: 0, previous_state: "scheduled", previous_state_known: true, state: "scheduled" });
  });

  it("the old row wins over what memory holds", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: TI2F, row: ti2({ state: "queued", try_number: 1 }) }), tx);
    const e = m.map(upd(TI2F, ti2({ state: "running", try_number: 1 }), ti2({ state: "success", try_number: 1 })), tx);
    expect(e).toMatchObject({ previous_state: "running", state: "success" });
  });

  it("keys rows by the primary key, not by the every-column key FULL flags, so DEFAULT picks up where FULL left off", () => {
    for (const [relFull, relDefault, row] of [
      [TI2F, TI2, ti2],
      [TI3F, TI3, ti3],
    ] as const) {
      const m = new AirflowMapper(OPTS, log);
      m.map(upd(relFull, row({ state: "queued", try_number: 1 }), row({ state: "running", try_number: 1, hostname: "w1" })), tx);
      // The table set back to DEFAULT mid-stream: no old row; memory must find the row by its key.
      const hb = m.map(
        change({
          kind: "update",
          relation: relDefault,
          row: row({ state: "running", try_number: 1, hostname: "w2" }),
          old: null,
          oldKind: null,
        }),
        tx,
      );
      expect(hb).toBeNull();
      const e = m.map(
        change({ kind: "update", relation: relDefault, row: row({ state: "success", try_number: 1 }), old: null, oldKind: null }),
        tx,
      );
      expect(e).toMatchObject({ previous_state: "running", previous_state_known: true });
    }
  });

  it("a deleted row carries its own last state and fields, never seen before", () => {
    const m = new AirflowMapper(OPTS, log);
    const e3 = m.map(
      change({ kind: "delete", relation: TI3F, old: ti3({ state: "success", try_number: 2, hostname: "w9" }), oldKind: "full" }),
      tx,
    );
    expect(TaskInstanceEvent.parse(e3)).toMatchObject({
      op: "delete",
      ti_id: "0195-a",
      dag_id: "etl",
      task_id: "extract",
      run_id: "manual__1",
      map_index: -1,
      state: "success",
      previous_state: "success",
      previous_state_known: true,
      try_number: 2,
      previous_try_number: 2,
      hostname: "w9",
    });
    const e2 = m.map(change({ kind: "delete", relation: TI2F, old: ti2({ state: "failed", try_number: 3 }), oldKind: "full" }), tx);
    expect(e2).toMatchObject({ op: "delete", state: "failed", previous_state_known: true, previous_try_number: 3 });
  });

  it("DAG runs: exact previous state after a start, churn dropped, deletes with every field", () => {
    const m = new AirflowMapper(OPTS, log);
    const run = (over: Row): Row => ({
      id: 3,
      dag_id: "etl",
      run_id: "manual__1",
      state: "running",
      run_type: "manual",
      logical_date: "2026-11-25T00:00:00.000000Z",
      clear_number: 0,
      ...over,
    });
    expect(m.map(upd(RUNF, run({}), run({ run_type: "manual" })), tx)).toBeNull();
    const e = m.map(upd(RUNF, run({}), run({ state: "success" })), tx);
    expect(DagRunEvent.parse(e)).toMatchObject({ op: "update", previous_state: "running", previous_state_known: true, state: "success" });
    const fresh = new AirflowMapper(OPTS, log);
    const d = fresh.map(change({ kind: "delete", relation: RUNF, old: run({ state: "failed", clear_number: 2 }), oldKind: "full" }), tx);
    expect(DagRunEvent.parse(d)).toMatchObject({
      op: "delete",
      dag_id: "etl",
      run_id: "manual__1",
      dag_run_id: 3,
      state: "failed",
      previous_state: "failed",
      previous_state_known: true,
      run_type: "manual",
      logical_date: "2026-11-25T00:00:00.000000Z",
      clear_number: 2,
    });
    // DEFAULT: the old tuple is the id alone; an unseen run's delete knows nothing more.
    const d0 = new AirflowMapper(OPTS, log).map(change({ kind: "delete", relation: RUN, old: { id: 3 }, oldKind: "key" }), tx);
    expect(d0).toMatchObject({ state: null, previous_state_known: false, run_type: null, logical_date: null });
  });

  it("with EVENTSTREAM_REPLICA_IDENTITY=full, warns once per Relation that arrives without FULL", () => {
    const lines: string[] = [];
    const m = new AirflowMapper({ ...OPTS, replicaIdentity: "full" }, pino({ level: "warn" }, { write: (l: string) => lines.push(l) }));
    m.map(change({ kind: "insert", relation: TI2F, row: ti2({}) }), tx);
    expect(lines).toHaveLength(0);
    m.map(change({ kind: "insert", relation: TI2, row: ti2({ task_id: "a" }) }), tx);
    m.map(change({ kind: "insert", relation: TI2, row: ti2({ task_id: "b" }) }), tx);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ table: "public.task_instance", replicaIdentity: "d" });
    new AirflowMapper(OPTS, pino({ level: "warn" }, { write: (l: string) => lines.push(l) })).map(
      change({ kind: "insert", relation: TI2, row: ti2({}) }),
      tx,
    );
    expect(lines).toHaveLength(1);
  });
});

describe("AirflowMapper.seed: the state a restart reads back from Kafka", () => {
  const published = (m: AirflowMapper, c: RowChange) => JSON.parse(JSON.stringify(m.map(change(c), tx))) as Record<string, unknown>;

  it("3.x: a heartbeat of a running task is no event; the next transition knows its previous state, also by name after an id change", () => {
    const before = new AirflowMapper(OPTS, log);
    const row = (over: Row): Row => ({ id: "u1", ...key2, state: "running", try_number: 1, ...over });
    const other = { ...key2, task_id: "load" };
    const seeds = [
      published(before, { kind: "insert", relation: TI3, row: row({ state: "queued" }) }),
      published(before, { kind: "update", relation: TI3, row: row({}), old: null, oldKind: null }),
      published(before, { kind: "insert", relation: TI3, row: { id: "v1", ...other, state: "running", try_number: 1 } }),
      published(before, {
        kind: "update",
        relation: TI3,
        row: { id: "v1", ...other, state: "up_for_retry", try_number: 1 },
        old: null,
        oldKind: null,
      }),
    ];
    // Not published: the retry's new id. The restarted mapper never sees it either.
    before.map(
      change({
        kind: "update",
        relation: TI3,
        row: { id: "v2", ...other, state: "up_for_retry", try_number: 1 },
        old: { id: "v1" },
        oldKind: "key",
      }),
      tx,
    );

    const after = new AirflowMapper(OPTS, log);
    for (const s of seeds) after.seed(s);
    expect(
      after.map(
        change({ kind: "update", relation: TI3, row: row({ last_heartbeat_at: "2026-11-25T08:00:05.000000Z" }), old: null, oldKind: null }),
        tx,
      ),
    ).toBeNull();
    expect(
      after.map(change({ kind: "update", relation: TI3, row: row({ state: "success" }), old: null, oldKind: null }), tx),
    ).toMatchObject({ previous_state: "running", previous_state_known: true, previous_try_number: 1 });
    expect(
      after.map(
        change({ kind: "update", relation: TI3, row: { id: "v2", ...other, state: "scheduled", try_number: 2 }, old: null, oldKind: null }),
        tx,
      ),
    ).toMatchObject({
      previous_state: "up_for_retry",
      previous_state_known: true,
      ti_id: "v2",
    });
  });

  it("a seeded DELETE forgets the row; events of another shape are ignored", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seed({ type: "task_instance", op: "update", ...key2, ti_id: null, state: "running", try_number: 1 });
    m.seed({ type: "task_instance", op: "delete", ...key2, ti_id: null, state: "running", try_number: 1 });
    m.seed({ reason: "message_too_large", type: "task_instance", dag_id: "etl" });
    const e = m.map(change({ kind: "update", relation: TI2, row: ti2({ state: "running", try_number: 1 }), old: null, oldKind: null }), tx);
    expect(e).toMatchObject({ previous_state: null, previous_state_known: false });
  });

  it("2.x and DAG runs: seeded by their keys", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seed({ type: "task_instance", op: "update", ...key2, ti_id: null, state: "queued", try_number: 1 });
    m.seed({
      type: "dag_run",
      op: "update",
      dag_id: "etl",
      run_id: "manual__1",
      dag_run_id: 5,
      state: "running",
      clear_number: 0,
      run_type: "manual",
      logical_date: "2026-11-25T08:00:00.000000Z",
    });
    expect(
      m.map(
        change({ kind: "update", relation: TI2, row: ti2({ state: "queued", try_number: 1, hostname: "w2" }), old: null, oldKind: null }),
        tx,
      ),
    ).toBeNull();
    const run = m.map(
      change({
        kind: "update",
        relation: RUN,
        row: {
          id: 5,
          dag_id: "etl",
          run_id: "manual__1",
          state: "success",
          run_type: "manual",
          logical_date: "2026-11-25T08:00:00.000000Z",
          clear_number: 0,
        },
        old: null,
        oldKind: null,
      }),
      tx,
    );
    expect(run).toMatchObject({ previous_state: "running", previous_state_known: true, state: "success" });
  });
});
