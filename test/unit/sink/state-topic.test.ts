import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { DagRunEvent, StreamEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import {
  StateRecords,
  applyStateRecord,
  emptyState,
  stateKey,
  stateMessages,
  truncateStateKey,
  type FoldedState,
} from "../../../src/sink/state-topic.js";
import { dagRunEvent, position, sourceAt, taskInstanceEvent } from "../../support/events.js";

const source = (n: number) => sourceAt(position(n), "2026-01-01T00:00:00.000000Z");

function ti(n: number, over: Partial<TaskInstanceEvent> = {}): TaskInstanceEvent {
  return taskInstanceEvent({
    dag_id: "d",
    task_id: "t",
    run_id: "r",
    state: "running",
    previous_state_known: true,
    source: source(n),
    ...over,
  });
}

function run(n: number, over: Partial<DagRunEvent> = {}): DagRunEvent {
  return dagRunEvent({ op: "insert", dag_id: "d", run_id: "r", state: "running", previous_state_known: true, source: source(n), ...over });
}

function truncate(n: number, tables: ("task_instance" | "dag_run" | "xcom")[]): StreamEvent {
  return { type: "table_truncated", tables, schema: "public", source: source(n) };
}

function capture(): { records: StateRecords; warnings: string[] } {
  const warnings: string[] = [];
  const log = pino({ level: "warn" }, { write: (line: string) => warnings.push(line) });
  return { records: new StateRecords(log), warnings };
}

/** Folds events through StateRecords.of and applyStateRecord, as the daemon writes and a reader reads. */
function fold(events: StreamEvent[], state: FoldedState = emptyState()): FoldedState {
  const { records } = capture();
  for (const e of events) for (const r of records.of(e, JSON.stringify(e)) ?? []) applyStateRecord(state, r.key, r.value);
  return state;
}

describe("stateKey", () => {
  it("writes the agreed JSON, fields in a fixed order", () => {
    expect(stateKey(ti(1, { dag_id: "dä", run_id: "manual__1", task_id: "x", map_index: 3 }))).toBe(
      '{"type":"task_instance","dag_id":"dä","run_id":"manual__1","task_id":"x","map_index":3}',
    );
    expect(stateKey(run(1, { dag_id: "d", run_id: "r1" }))).toBe('{"type":"dag_run","dag_id":"d","run_id":"r1"}');
    expect(truncateStateKey("dag_run")).toBe('{"type":"table_truncated","table":"dag_run"}');
  });

  it("is byte for byte JSON.stringify of the key object, whatever the names hold", () => {
    const names = ['q"uote', "back\\slash", "tab\tnew\nline\u0001", "\u2028\u2029", "lone \ud800 surrogate", "émoji 🚀", "</script>"];
    for (const dagId of names)
      for (const runId of names.slice(0, 3))
        for (const mapIndex of [-1, 0, 7, 123456]) {
          const taskId = `${runId}_${dagId}`;
          expect(stateKey(ti(1, { dag_id: dagId, run_id: runId, task_id: taskId, map_index: mapIndex }))).toBe(
            JSON.stringify({ type: "task_instance", dag_id: dagId, run_id: runId, task_id: taskId, map_index: mapIndex }),
          );
          expect(stateKey(run(1, { dag_id: dagId, run_id: runId }))).toBe(
            JSON.stringify({ type: "dag_run", dag_id: dagId, run_id: runId }),
          );
        }
  });

  it("cannot key a delete whose identity the WAL did not carry", () => {
    expect(stateKey(ti(1, { op: "delete", dag_id: null, task_id: null, run_id: null, map_index: null } as never))).toBeNull();
    expect(stateKey(run(1, { op: "delete", dag_id: "", run_id: "" }))).toBeNull();
  });
});

describe("StateRecords", () => {
  it("turns a delete into a tombstone, keeps the value of others as published, leaves notifications out", () => {
    const { records } = capture();
    const e = ti(5);
    expect(records.of(e, "as-published")).toEqual([{ key: stateKey(e), value: "as-published" }]);
    expect(records.of(ti(6, { op: "delete" }), "x")).toEqual([{ key: stateKey(e), value: null }]);
    const note = { type: "notification", source: source(7) } as unknown as StreamEvent;
    expect(records.of(note, "x")).toBeUndefined();
  });

  it("writes a TRUNCATE under each state table's key, never xcom's", () => {
    const { records } = capture();
    expect(records.of(truncate(9, ["task_instance", "dag_run", "xcom"]), "v")).toEqual([
      { key: truncateStateKey("task_instance"), value: "v" },
      { key: truncateStateKey("dag_run"), value: "v" },
    ]);
    expect(records.of(truncate(9, ["xcom"]), "v")).toBeUndefined();
  });

  it("counts unkeyable deletes and warns of them once", () => {
    const { records, warnings } = capture();
    for (let i = 0; i < 3; i++) {
      expect(records.of(ti(i, { op: "delete", dag_id: null, task_id: null, run_id: null, map_index: null } as never), "x")).toBeUndefined();
    }
    expect(records.unkeyed).toBe(3);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("REPLICA IDENTITY FULL");
  });
});

describe("applyStateRecord (the fold readers use)", () => {
  it("keeps the last write per key; a tombstone removes the key", () => {
    const s = fold([ti(1, { state: "queued" }), ti(2, { state: "running" }), run(3), ti(4, { task_id: "u", state: "success" })]);
    expect([...s.entries.values()].map((e) => [e.table, e.event.state, e.position])).toEqual([
      ["task_instance", "running", position(2)],
      ["dag_run", "running", position(3)],
      ["task_instance", "success", position(4)],
    ]);
    fold([ti(5, { op: "delete" })], s);
    expect(s.entries.has(stateKey(ti(0))!)).toBe(false);
    expect(s.entries.size).toBe(2);
    // A tombstone has no value, so no position: the highest seen is the last value's.
    expect(s.position).toBe(position(4));
  });

  it("a truncate removes its table's entries with lower positions, and only those", () => {
    const s = fold([ti(1), run(2), ti(3, { task_id: "u" }), truncate(4, ["task_instance"]), ti(5, { task_id: "v" })]);
    expect([...s.entries.values()].map((e) => [e.table, e.event.task_id ?? null])).toEqual([
      ["dag_run", null],
      ["task_instance", "v"],
    ]);
  });

  it("an entry older than its table's truncate, read after it (another partition, or re-sent in a replay), stays out", () => {
    const s = fold([truncate(4, ["task_instance", "dag_run"]), ti(1), run(2), ti(6, { task_id: "new" })]);
    expect([...s.entries.values()].map((e) => e.event.task_id)).toEqual(["new"]);
    // An older truncate read later does not undo a newer one.
    fold([truncate(3, ["task_instance"]), ti(2, { task_id: "old" })], s);
    expect([...s.entries.values()].map((e) => e.event.task_id)).toEqual(["new"]);
  });

  it("an at-least-once replay's re-sent older records are followed by the newer ones: the fold ends at the latest", () => {
    // First session: 1..4 written; crash; the replay from 2 re-sends 2..4, then goes on with 5.
    const history = [
      ti(1, { state: "queued" }),
      ti(2, { state: "running" }),
      ti(3, { op: "delete" }),
      ti(4, { op: "insert", state: null }),
    ];
    const s = fold([...history, ...history.slice(1), ti(5, { state: "scheduled" })]);
    expect([...s.entries.values()].map((e) => [e.event.state, e.position])).toEqual([["scheduled", position(5)]]);
  });

  it("skips records that are not the state topic's format", () => {
    const s = emptyState();
    applyStateRecord(s, "not json", "{}");
    applyStateRecord(s, '{"type":"dag_run","dag_id":"d","run_id":"r"}', '{"source":{}}');
    applyStateRecord(s, null, "{}");
    expect(s.invalid).toBe(3);
    expect(s.entries.size).toBe(0);
  });
});

describe("stateMessages", () => {
  it("puts each event's state records and the replay's own state-topic records in push order", () => {
    const batch = [
      { topic: "ev", key: "d", value: "e1", state: [{ key: "k1", value: "s1" }] },
      { topic: "st", key: "k2", value: null },
      { topic: "ev", key: "d", value: "e3" },
      {
        topic: "ev",
        key: null,
        value: "e4",
        state: [
          { key: "t1", value: "s4" },
          { key: "t2", value: "s4" },
        ],
      },
    ];
    expect(stateMessages(batch, "st")).toEqual([
      { key: "k1", value: "s1" },
      { key: "k2", value: null },
      { key: "t1", value: "s4" },
      { key: "t2", value: "s4" },
    ]);
  });

  it("writes only each key's last record of the request, in the order of those last records", () => {
    const batch = [
      { topic: "ev", key: "d", value: "e1", state: [{ key: "k1", value: "queued" }] },
      { topic: "ev", key: "d", value: "e2", state: [{ key: "k2", value: "running" }] },
      { topic: "ev", key: "d", value: "e3", state: [{ key: "k1", value: "running" }] },
      { topic: "st", key: "k2", value: null },
      { topic: "ev", key: "d", value: "e5", state: [{ key: "k3", value: "success" }] },
    ];
    expect(stateMessages(batch, "st")).toEqual([
      { key: "k1", value: "running" },
      { key: "k2", value: null },
      { key: "k3", value: "success" },
    ]);
  });
});
