import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { AirflowMapper } from "../../../src/airflow/mapper.js";
import { TableTruncatedEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import type { Relation, Row, RowChange, TxEvent } from "../../../src/decode/types.js";

const log = pino({ level: "silent" });
const OPTS = { schema: "public", cacheSize: 1000, xcomKey: "eventstream", notificationRawMaxBytes: 64 };

function relation(name: string, columns: string[], keys: string[], schema = "public"): Relation {
  return {
    id: name.length,
    schema,
    name,
    replicaIdentity: "d",
    columns: columns.map((c) => ({ name: c, typeOid: 25, typeMod: -1, isKey: keys.includes(c) })),
  };
}

const TI = relation(
  "task_instance",
  ["dag_id", "task_id", "run_id", "map_index", "state", "try_number"],
  ["dag_id", "task_id", "run_id", "map_index"],
);
const RUN = relation("dag_run", ["id", "dag_id", "run_id", "state", "run_type", "logical_date", "clear_number"], ["id"]);
const XCOM = relation(
  "xcom",
  ["dag_run_id", "task_id", "map_index", "key", "dag_id", "run_id", "value"],
  ["dag_run_id", "task_id", "map_index", "key"],
);
const OTHER = relation(
  "task_instance",
  TI.columns.map((c) => c.name),
  ["dag_id"],
  "elsewhere",
);

let index = 0;
const change = (c: RowChange): Extract<TxEvent, { kind: "change" }> => ({
  kind: "change",
  xid: 9,
  commitLsn: 0x2000n,
  index: index++,
  change: c,
});
const tx = { xid: 9, commitTime: "2026-12-02T20:00:00.000001Z" };
const truncate = (...relations: Relation[]) => change({ kind: "truncate", relations, cascade: false, restartIdentity: false });
const ti = (state: string): Row => ({ dag_id: "etl", task_id: "t", run_id: "r", map_index: -1, state, try_number: 1 });

describe("AirflowMapper: TRUNCATE", () => {
  it.each([
    ["task_instance", OPTS, [TI], ["task_instance"]],
    ["dag_run", OPTS, [RUN], ["dag_run"]],
    ["task_instance and xcom in one statement (CASCADE)", OPTS, [TI, XCOM], ["task_instance", "xcom"]],
    ["xcom with notifications off: not captured", { ...OPTS, xcomKey: null }, [XCOM], null],
    ["a table of another schema", OPTS, [OTHER], null],
  ] as const)("%s", (_, opts, relations, tables) => {
    const e = new AirflowMapper(opts, log).map(truncate(...relations), tx);
    if (tables === null) {
      expect(e).toBeNull();
      return;
    }
    const parsed = TableTruncatedEvent.parse(e);
    expect(parsed.tables).toEqual(tables);
    expect(parsed.schema).toBe("public");
    expect(parsed.source).toMatchObject({ xid: 9, commit_time: tx.commitTime, commit_lsn: "0/2000" });
  });

  it("forgets the task instances' states: a later update has no previous state", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: TI, row: ti("queued") }), tx);
    m.map(truncate(TI), tx);
    const e = TaskInstanceEvent.parse(m.map(change({ kind: "update", relation: TI, row: ti("running"), old: null, oldKind: null }), tx));
    expect([e.previous_state, e.previous_state_known]).toEqual([null, false]);
  });

  it("keeps the task instances' states when only dag_run is truncated", () => {
    const m = new AirflowMapper(OPTS, log);
    m.map(change({ kind: "insert", relation: TI, row: ti("queued") }), tx);
    m.map(truncate(RUN), tx);
    const e = TaskInstanceEvent.parse(m.map(change({ kind: "update", relation: TI, row: ti("running"), old: null, oldKind: null }), tx));
    expect([e.previous_state, e.previous_state_known]).toEqual(["queued", true]);
  });

  it("forgets the runs' context with dag_run", () => {
    const m = new AirflowMapper(OPTS, log);
    m.seedRunContext("etl", "r", {
      logicalDate: "2026-12-01T00:00:00.000000Z",
      runType: "scheduled",
      dataIntervalStart: null,
      dataIntervalEnd: null,
      clearNumber: 0,
    });
    m.map(truncate(RUN), tx);
    const e = TaskInstanceEvent.parse(m.map(change({ kind: "insert", relation: TI, row: ti("queued") }), tx));
    expect([e.logical_date, e.run_type]).toEqual([null, null]);
  });
});
