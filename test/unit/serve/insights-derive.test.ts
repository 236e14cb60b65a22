import { describe, expect, it } from "vitest";
import type { DagRunEvent, StreamEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import { deriveFromEvent, noteEmitted, timerStep, type EmittedStuck } from "../../../src/serve/insights/derive.js";
import { OwnedPartition } from "../../../src/serve/insights/partition.js";
import { PartitionView, type CauseRef } from "../../../src/serve/insights/view.js";
import { InsightEvent } from "../../../src/serve/schemas.js";
import { dagRunEvent, sourceAt, taskInstanceEvent } from "../../support/events.js";

let seq = 0;
function pos(): string {
  seq++;
  return `${seq.toString(16).toUpperCase().padStart(16, "0")}-00000000`;
}

function ti(over: Partial<TaskInstanceEvent> & { state: string | null }, t = "2026-12-01T10:00:00.000000Z"): TaskInstanceEvent {
  return taskInstanceEvent({
    dag_id: "etl",
    task_id: "load",
    run_id: "r1",
    max_tries: 1,
    clear_number: 0,
    source: sourceAt(pos(), t),
    ...over,
  });
}

function run(over: Partial<DagRunEvent> & { state: string | null }, t = "2026-12-01T10:00:00.000000Z"): DagRunEvent {
  return dagRunEvent({
    dag_id: "etl",
    run_id: "r1",
    logical_date: "2026-12-01T00:00:00.000000Z",
    start_date: "2026-12-01T10:00:00.000000Z",
    source: sourceAt(pos(), t),
    ...over,
  });
}

/** Derives and applies events in order, as the writer does; returns every insight, each checked against the schema. */
function feed(events: StreamEvent[], view = new PartitionView(), emitted: EmittedStuck = new Map()) {
  const part = new OwnedPartition(0, "events", "state", [], 0n, 0n);
  const out: InsightEvent[] = [];
  let offset = 0;
  for (const e of events) {
    const insights = part.handle(Buffer.from(JSON.stringify(e)), String(offset++), new Date("2026-12-01T12:00:00Z"));
    for (const i of insights) InsightEvent.parse(i);
    out.push(...insights);
  }
  return { out, part, view, emitted };
}

describe("insight derivation", () => {
  it("a failure with a retry left (up_for_retry) is not final; the failure after it is, once", () => {
    const { out } = feed([
      ti({ op: "insert", state: "queued", try_number: 1, max_tries: 1 }),
      ti({ state: "running", try_number: 1 }),
      ti({ state: "up_for_retry", try_number: 1 }),
      ti({ state: "running", try_number: 2 }),
      ti({ state: "failed", try_number: 2 }),
      // A later event about the same failed row (try_number churn of a row already failed) is no new failure.
      ti({ state: "failed", try_number: 2, previous_state: "failed", previous_state_known: true }),
    ]);
    const finals = out.filter((i) => i.type === "task_failed_final");
    expect(finals).toHaveLength(1);
    expect(finals[0]).toMatchObject({ task_id: "load", try_number: 2, max_tries: 1 });
    expect(finals[0]!.insight_id).toBe(`task_failed_final:etl:r1:load:-1:2:${finals[0]!.caused_by.position}`);
  });

  it("a snapshot of a row already failed, unknown before, is not a new failure; an update to failed with no history is", () => {
    expect(feed([ti({ op: "snapshot", state: "failed" })]).out).toEqual([]);
    expect(feed([ti({ op: "update", state: "failed" })]).out.map((i) => i.type)).toEqual(["task_failed_final"]);
  });

  it("run_completed carries the summary of the run's task instances; a second event of the finished run gives none", () => {
    const { out } = feed([
      run({ op: "insert", state: "running" }),
      ti({ op: "insert", state: "success", task_id: "a", try_number: 1 }),
      ti({ op: "insert", state: "failed", task_id: "b", try_number: 3 }),
      ti({ op: "insert", state: "upstream_failed", task_id: "c", try_number: 0 }),
      run({ state: "failed", end_date: "2026-12-01T10:05:00.000000Z" }),
      run({ state: "failed", end_date: "2026-12-01T10:05:00.000000Z", previous_state: "failed", previous_state_known: true }),
    ]);
    const done = out.filter((i) => i.type === "run_completed");
    expect(done).toHaveLength(1);
    const d = done[0]!;
    if (d.type !== "run_completed") throw new Error("unreachable");
    expect(d.summary).toEqual({
      state: "failed",
      counts: { success: 1, failed: 1, upstream_failed: 1 },
      duration_seconds: 300,
      retries: 2,
      failed_tasks: ["b"],
      upstream_failed_tasks: ["c"],
      cleared: { times: 0, rerun_tasks: [] },
    });
    expect(d.insight_id).toBe(`run_completed:etl:r1:${d.caused_by.position}`);
  });

  it("run_cleared when clear_number rises, and when a finished run goes back to queued without it (pre-2.8)", () => {
    const rose = feed([run({ op: "insert", state: "running", clear_number: 0 }), run({ state: "running", clear_number: 1 })]).out;
    expect(rose.map((i) => i.type)).toEqual(["run_cleared"]);
    expect(rose[0]).toMatchObject({ clear_number: 1, previous_state: "running" });
    const requeued = feed([
      run({ op: "insert", state: "success", clear_number: null }),
      run({ state: "queued", clear_number: null, previous_state: "success", previous_state_known: true }),
    ]).out;
    expect(requeued.map((i) => i.type)).toEqual(["run_completed", "run_cleared"]);
    expect(requeued[1]).toMatchObject({ previous_state: "success" });
    // Neither: a run moving on as usual.
    expect(feed([run({ op: "insert", state: "queued" }), run({ state: "running" })]).out).toEqual([]);
  });

  it("task_stuck once past the threshold, not again, and task_unstuck when the task moves; ids derive from the causing event", () => {
    const view = new PartitionView();
    const emitted: EmittedStuck = new Map();
    const e = ti({ op: "insert", state: "queued" }, "2026-12-01T10:00:00.000000Z") as TaskInstanceEvent & {
      task_id: string;
      map_index: number;
    };
    const cause: CauseRef = { position: e.source.position, topic: "events", partition: 0, offset: "7" };
    view.applyTask(e as Parameters<PartitionView["applyTask"]>[0], cause, e.source.commit_time);
    const threshold = (_d: string, s: string) => (s === "queued" ? 60 : null);
    expect(timerStep(new Date("2026-12-01T10:00:59Z"), view, emitted, threshold)).toEqual([]);
    const stuck = timerStep(new Date("2026-12-01T10:01:01Z"), view, emitted, threshold);
    expect(stuck).toHaveLength(1);
    expect(stuck[0]).toMatchObject({ type: "task_stuck", state: "queued", threshold_seconds: 60, caused_by: cause });
    expect(stuck[0]!.insight_id).toBe(`task_stuck:etl:r1:load:-1:1:queued:${cause.position}`);
    for (const i of stuck) noteEmitted(emitted, InsightEvent.parse(i));
    expect(timerStep(new Date("2026-12-01T10:05:00Z"), view, emitted, threshold)).toEqual([]);
    const moved = ti({ state: "running" }, "2026-12-01T10:02:00.000000Z");
    const unstuck = deriveFromEvent(
      moved,
      { cause: { ...cause, position: moved.source.position, offset: "8" }, now: new Date() },
      view,
      emitted,
    );
    expect(unstuck).toHaveLength(1);
    expect(unstuck[0]).toMatchObject({ type: "task_unstuck", state: "running", stuck_seconds: 120 });
    expect(unstuck[0]!.insight_id).toBe(`task_unstuck:etl:r1:load:-1:1:queued:${cause.position}`);
    noteEmitted(emitted, unstuck[0]!);
    expect(emitted.size).toBe(0);
  });

  it("a task that moved on without being reported gives no task_unstuck", () => {
    const { out } = feed([ti({ op: "insert", state: "queued" }), ti({ state: "running" }), ti({ state: "success" })]);
    expect(out).toEqual([]);
  });

  it("the same events give the same insight ids (two replicas, or a replay after a failover)", () => {
    const events = [run({ op: "insert", state: "running" }), ti({ op: "insert", state: "failed" }), run({ state: "failed" })];
    const ids = (xs: InsightEvent[]) => xs.map((i) => i.insight_id);
    expect(ids(feed(events).out)).toEqual(ids(feed(events).out));
    expect(ids(feed(events).out)).toHaveLength(2);
  });

  it("re-delivered events (a position not above the last) give nothing", () => {
    const failed = ti({ state: "failed" });
    expect(feed([failed, failed]).out).toHaveLength(1);
  });

  it("a view rebuilt from state entries ahead of the first replayed event is rolled back to before them", () => {
    // The daemon did not know the state before (previous_state_known false): only the view can say.
    const failed = ti({ state: "failed", previous_state_known: false });
    // The state topic already holds the failure; the committed offset is before it: the view must
    // not take the failure as the state before the failure.
    const entry = {
      table: "task_instance" as const,
      position: failed.source.position,
      event: failed as unknown as Record<string, unknown>,
    };
    const part = new OwnedPartition(0, "events", "state", [entry], 0n, 1n);
    const insights = part.handle(Buffer.from(JSON.stringify(failed)), "0", new Date());
    expect(insights.map((i) => i.type)).toEqual(["task_failed_final"]);
    // Entries before the first replayed event stay as they are.
    const before = new OwnedPartition(0, "events", "state", [entry], 0n, 1n);
    expect(before.handle(Buffer.from(JSON.stringify(ti({ state: "failed" }))), "1", new Date())).toEqual([]);
  });
});
