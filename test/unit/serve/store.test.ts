import { describe, expect, it } from "vitest";
import { RunStore } from "../../../src/serve/view/store.js";
import { DEFAULT_THRESHOLDS } from "../../../src/serve/view/stuck.js";
import type { StreamEvent } from "../../../src/airflow/events.js";
import { dagRunEvent, sourceAt, taskInstanceEvent } from "../../support/events.js";
import { Stream } from "./events.js";

const at = (iso: string) => iso;

describe("RunStore: is it complete?", () => {
  it("folds a run through its states and summarises it when finished", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "r1", "queued", { op: "insert", logical_date: at("2026-12-01T00:00:00.000000Z") });
    s.dr("d", "r1", "running", { start_date: "2026-12-01T00:00:05.000000Z" });
    for (const t of ["a", "b", "c", "e"]) s.ti("d", "r1", t, null, { op: "insert" });
    s.ti("d", "r1", "a", "running");
    s.ti("d", "r1", "a", "success");
    s.ti("d", "r1", "b", "up_for_retry");
    s.ti("d", "r1", "b", "failed", { try_number: 2, max_tries: 1 });
    s.ti("d", "r1", "c", "upstream_failed");
    s.ti("d", "r1", "e", "skipped");
    expect(s.store.run("d", "r1")!.complete).toBe(false);
    expect(s.store.run("d", "r1")!.summary).toBeNull();
    s.dr("d", "r1", "failed", { start_date: "2026-12-01T00:00:05.000000Z", end_date: "2026-12-01T00:01:05.000000Z" });
    const v = s.store.run("d", "r1")!;
    expect(v.complete).toBe(true);
    expect(v.tasks.map((t) => `${t.task_id}:${t.state}`)).toEqual(["a:success", "b:failed", "c:upstream_failed", "e:skipped"]);
    expect(v.summary).toEqual({
      state: "failed",
      counts: { success: 1, failed: 1, upstream_failed: 1, skipped: 1 },
      duration_seconds: 60,
      retries: 1,
      failed_tasks: ["b"],
      upstream_failed_tasks: ["c"],
      cleared: { times: 0, rerun_tasks: [] },
    });
  });

  it("ignores a re-delivered (older or equal) event of a task instance", () => {
    const s = new Stream(new RunStore());
    s.ti("d", "r", "a", "running");
    const ctx = { position: "0000000000000001-00000000", commitTime: "2026-12-01T00:00:00Z", partition: 0, offset: "0", bootstrap: false };
    s.store.apply(
      taskInstanceEvent({
        dag_id: "d",
        run_id: "r",
        task_id: "a",
        max_tries: 1,
        state: "queued",
        source: sourceAt(ctx.position, ctx.commitTime),
      }),
      ctx,
    );
    expect(s.store.run("d", "r")!.tasks[0]!.state).toBe("running");
  });

  it("lists runs newest first, finds a run by logical date in any ISO spelling, lists DAGs", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "old", "success", { logical_date: "2026-11-01T00:00:00.000000Z" });
    s.dr("d", "new", "running", { logical_date: "2026-11-02T00:00:00.000000Z" });
    s.dr("other", "x", "running");
    expect(s.store.runs("d", { limit: 10 }).map((r) => r.run_id)).toEqual(["new", "old"]);
    expect(s.store.runs("d", { limit: 1 }).map((r) => r.run_id)).toEqual(["new"]);
    expect(s.store.runByLogicalDate("d", "2026-11-01T00:00:00Z")!.run_id).toBe("old");
    expect(s.store.runByLogicalDate("d", "2026-11-03T00:00:00Z")).toBeNull();
    const dags = s.store.dags(s.clock);
    expect(dags.map((d) => [d.dag_id, d.active_runs, d.recent_runs])).toEqual([
      ["d", 1, 1],
      ["other", 1, 0],
    ]);
  });

  it("a dag_run delete removes the run; a truncate of task_instance voids task instances, also late ones from another partition", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "r", "running");
    s.ti("d", "r", "a", "running");
    s.dr("d", "gone", "running");
    s.dr("d", "gone", "running", { op: "delete" });
    expect(s.store.run("d", "gone")).toBeNull();
    const before = s.ti("d", "r", "b", "queued");
    s.raw({ type: "table_truncated", tables: ["task_instance"], schema: "public" });
    expect(s.store.run("d", "r")!.tasks).toEqual([]);
    expect(s.store.run("d", "r")!.state).toBe("running");
    // A record of an earlier position read after the truncate (another partition): void.
    s.store.apply(
      taskInstanceEvent({
        dag_id: "d",
        run_id: "r",
        task_id: "late",
        max_tries: 1,
        state: "queued",
        source: sourceAt(before, "2026-12-01T00:00:00Z"),
      }),
      { position: before, commitTime: "2026-12-01T00:00:00Z", partition: 1, offset: "0", bootstrap: false },
    );
    expect(s.store.run("d", "r")!.tasks).toEqual([]);
    expect(s.store.counters.voided).toBe(1);
  });

  it("a stream gap drops the view; snapshot events after it refill it", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "r", "running");
    s.raw({
      type: "stream_gap",
      reason: "slot_lost",
      from_lsn: null,
      to_lsn: "0/2",
      checkpoint_written_at: null,
      detected_at: "2026-12-01T00:00:00Z",
      snapshot: "s1",
    });
    expect(s.store.run("d", "r")).toBeNull();
    s.dr("d", "r", "success", { op: "snapshot" } as never);
    expect(s.store.run("d", "r")!.state).toBe("success");
  });

  it("wakes change listeners with the run and position", () => {
    const s = new Stream(new RunStore());
    const seen: string[] = [];
    const off = s.store.onChange((d, r, p) => seen.push(`${d}/${r}@${p}`));
    const p = s.ti("d", "r", "a", "queued");
    off();
    s.ti("d", "r", "a", "running");
    expect(seen).toEqual([`d/r@${p}`]);
  });
});

describe("RunStore: history (can I undo and rerun?)", () => {
  it("records state changes, tries, a task cleared back to None and rerun, and the run's clear", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "r", "running", { op: "insert", clear_number: 0 });
    s.ti("d", "r", "a", null, { op: "insert" });
    s.ti("d", "r", "a", "running");
    s.ti("d", "r", "a", "up_for_retry");
    s.ti("d", "r", "a", "running", { try_number: 2 });
    s.ti("d", "r", "a", "failed", { try_number: 2 });
    s.dr("d", "r", "failed", { start_date: "2026-12-01T00:00:00Z", end_date: "2026-12-01T00:00:10Z" });
    // The user clears the run: clear_number up, the run back to queued, the task back to None.
    s.dr("d", "r", "queued", { clear_number: 1 });
    s.ti("d", "r", "a", null, { try_number: 2 });
    s.ti("d", "r", "a", "running", { try_number: 3 });
    s.ti("d", "r", "a", "success", { try_number: 3 });
    s.dr("d", "r", "success", { clear_number: 1, start_date: "2026-12-01T00:01:00Z", end_date: "2026-12-01T00:01:30Z" });
    const h = s.store
      .history("d", "r")!
      .entries.map((e) => `${e.kind}:${e.task_id ?? "-"}:${e.from}->${e.to}:${e.try_number ?? e.clear_number}`);
    expect(h).toEqual([
      "run_state:-:null->running:0",
      "task_state:a:null->running:1",
      "task_state:a:running->up_for_retry:1",
      "task_try:a:up_for_retry->running:2",
      "task_state:a:up_for_retry->running:2",
      "task_state:a:running->failed:2",
      "run_state:-:running->failed:0",
      "run_cleared:-:failed->queued:1",
      "task_cleared:a:failed->null:2",
      "task_try:a:null->running:3",
      "task_state:a:null->running:3",
      "task_state:a:running->success:3",
      "run_state:-:queued->success:1",
    ]);
    expect(s.store.run("d", "r")!.summary!.cleared).toEqual({ times: 1, rerun_tasks: ["a"] });
  });

  it("before clear_number existed, a finished run back to queued is a clear", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "r", "success", { clear_number: null });
    s.dr("d", "r", "queued", { clear_number: null });
    expect(s.store.history("d", "r")!.entries.map((e) => e.kind)).toEqual(["run_state", "run_cleared"]);
  });

  it("a start after a clear and its rerun: the task_cleared insights restore the rerun tasks the state topic cannot show", () => {
    const live = new Stream(new RunStore());
    live.dr("d", "r", "success", { op: "insert", clear_number: 0 });
    for (const t of ["a", "b", "c"]) live.ti("d", "r", t, "success", { op: "insert" });
    const clears = new Map(
      ["a", "b", "c"].map((t) => [t, live.ti("d", "r", t, null, { previous_state: "success", previous_state_known: true })]),
    );
    live.dr("d", "r", "queued", { clear_number: 1 });
    for (const t of ["a", "b"]) for (const st of ["queued", "running", "success"]) live.ti("d", "r", t, st);
    // Only a and b have rerun when the view below starts; c reruns after.
    const store = new RunStore();
    const boot = (e: StreamEvent) =>
      store.apply(e, { position: e.source.position, commitTime: e.source.commit_time, partition: -1, offset: "-1", bootstrap: true });
    const after = (n: number) =>
      sourceAt(`${(0x9000 + n).toString(16).toUpperCase().padStart(16, "0")}-00000000`, "2026-12-01T01:00:00.000000Z");
    boot(dagRunEvent({ dag_id: "d", run_id: "r", state: "queued", clear_number: 1, source: after(0) }));
    for (const [i, t] of ["a", "b"].entries())
      boot(
        taskInstanceEvent({
          dag_id: "d",
          run_id: "r",
          task_id: t,
          state: "success",
          previous_state: "running",
          previous_state_known: true,
          source: after(1 + i),
        }),
      );
    // c's latest event is its clear: the fold marks it itself.
    boot(
      taskInstanceEvent({
        dag_id: "d",
        run_id: "r",
        task_id: "c",
        state: null,
        previous_state: "success",
        previous_state_known: true,
        source: sourceAt(clears.get("c")!),
      }),
    );
    expect(store.rerunTasks("d", "r")).toEqual([]);
    for (const [t, position] of clears) store.restoreClear("d", "r", t, -1, position, false);
    expect(store.rerunTasks("d", "r").sort()).toEqual(["a", "b"]);
    // Then c reruns and the run completes, seen by both: the same summary.
    for (const st of ["queued", "running", "success"]) {
      const e = taskInstanceEvent({ dag_id: "d", run_id: "r", task_id: "c", state: st, source: sourceAt(live.ti("d", "r", "c", st)) });
      store.apply(e, { position: e.source.position, commitTime: e.source.commit_time, partition: 0, offset: "0", bootstrap: false });
    }
    expect(store.rerunTasks("d", "r").sort()).toEqual(["a", "b", "c"]);
    expect(live.store.rerunTasks("d", "r").sort()).toEqual(["a", "b", "c"]);
  });

  it("bootstrap events set state but are not history", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "r", "running", { bootstrap: true });
    s.ti("d", "r", "a", "running", { bootstrap: true });
    expect(s.store.history("d", "r")!.entries).toEqual([]);
    s.ti("d", "r", "a", "success");
    expect(s.store.history("d", "r")!.entries.map((e) => `${e.from}->${e.to}`)).toEqual(["running->success"]);
  });

  it("history is bounded per run, dropping the oldest", () => {
    const s = new Stream(new RunStore({ historyPerRun: 20 }));
    for (let i = 0; i < 50; i++) s.ti("d", "r", "a", i % 2 === 0 ? "running" : "queued");
    const h = s.store.history("d", "r")!;
    expect(h.entries.length).toBeLessThanOrEqual(20);
    expect(h.dropped + h.entries.length).toBe(50);
    expect(h.entries.at(-1)!.to).toBe("queued");
  });
});

describe("RunStore: ready (when can I start?)", () => {
  it("named tasks ready when every map index succeeded; skipped is not success; unseen is not ready", () => {
    const s = new Stream(new RunStore());
    s.dr("d", "r", "running");
    s.ti("d", "r", "m", "success", { map_index: 0 });
    s.ti("d", "r", "m", "running", { map_index: 1 });
    s.ti("d", "r", "sk", "skipped");
    s.ti("d", "r", "ok", "success");
    expect(s.store.ready("d", "r", ["ok"])!.ready).toBe(true);
    const r = s.store.ready("d", "r", ["m", "sk", "nope"])!;
    expect(r.ready).toBe(false);
    expect(r.tasks).toEqual([
      { task_id: "m", states: ["success", "running"], ready: false },
      { task_id: "sk", states: ["skipped"], ready: false },
      { task_id: "nope", states: [], ready: false },
    ]);
    s.ti("d", "r", "m", "success", { map_index: 1 });
    expect(s.store.ready("d", "r", ["m", "ok"])!.ready).toBe(true);
    expect(s.store.ready("d", "r", [])!.ready).toBe(false);
    s.dr("d", "r", "success");
    expect(s.store.ready("d", "r", [])!.ready).toBe(true);
    expect(s.store.ready("d", "unknown", [])).toBeNull();
  });
});

describe("RunStore: stuck (where are we stuck?)", () => {
  it("names task instances past their state's threshold, with per-DAG overrides", () => {
    const store = new RunStore({ stuck: { defaults: DEFAULT_THRESHOLDS, perDag: { fast: { queued: 30 } } } });
    const s = new Stream(store);
    s.dr("d", "r", "running");
    s.ti("d", "r", "q", "queued");
    s.ti("d", "r", "done", "success");
    s.dr("fast", "r", "running");
    s.ti("fast", "r", "q", "queued");
    const since = s.clock;
    expect(store.stuck(since + 31_000).map((i) => `${i.dag_id}:${i.task_id}`)).toEqual(["fast:q"]);
    expect(store.dags(since + 31_000).map((d) => [d.dag_id, d.stuck])).toEqual([
      ["d", 0],
      ["fast", 1],
    ]);
    const late = store.stuck(since + 601_000 + 5_000);
    expect(late.map((i) => `${i.dag_id}:${i.task_id}:${i.threshold_seconds}`).sort()).toEqual(["d:q:600", "fast:q:30"]);
    expect(late.find((i) => i.dag_id === "d")!.reason).toMatch(/^queued for 60\d s \(threshold 600 s\)$/);
    expect(store.stuck(since + 700_000, "fast").every((i) => i.dag_id === "fast")).toBe(true);
    s.ti("fast", "r", "q", "running");
    expect(store.stuck(s.clock + 1_000, "fast")).toEqual([]);
  });

  it("names a run running past its DAG's p95 duration, only with at least 5 past durations", () => {
    const s = new Stream(new RunStore());
    const finish = (id: string, seconds: number) => {
      s.dr("d", id, "running", { start_date: "2026-12-01T00:00:00Z" });
      s.dr("d", id, "success", {
        start_date: "2026-12-01T00:00:00Z",
        end_date: new Date(Date.parse("2026-12-01T00:00:00Z") + seconds * 1000).toISOString(),
      });
    };
    for (let i = 0; i < 4; i++) finish(`p${i}`, 100);
    const start = new Date(s.clock).toISOString();
    s.dr("d", "long", "running", { start_date: start });
    expect(s.store.stuck(s.clock + 500_000)).toEqual([]);
    finish("p4", 100);
    const items = s.store.stuck(Date.parse(start) + 150_000);
    expect(items.map((i) => [i.kind, i.run_id, i.threshold_seconds, i.since])).toEqual([["run", "long", 100, start]]);
    expect(s.store.stuck(Date.parse(start) + 50_000)).toEqual([]);
  });
});

describe("RunStore: bounds", () => {
  it("keeps at most maxRuns active runs (dropping the least recently updated) and recentRuns finished ones (LRU)", () => {
    const s = new Stream(new RunStore({ maxRuns: 3, recentRuns: 2 }));
    for (const r of ["a1", "a2", "a3"]) s.dr("d", r, "running");
    s.dr("d", "a1", "running", { clear_number: 0, start_date: "2026-12-01T00:00:00Z" });
    s.dr("d", "a4", "running");
    expect(s.store.run("d", "a2")).toBeNull();
    expect(s.store.size()).toEqual({ active: 3, recent: 0 });
    expect(s.store.counters.droppedActive).toBe(1);
    for (const r of ["f1", "f2"]) s.dr("d", r, "success");
    s.store.run("d", "f1");
    s.dr("d", "f3", "success");
    expect(s.store.run("d", "f2")).toBeNull();
    expect(s.store.run("d", "f1")).not.toBeNull();
    expect(s.store.size()).toEqual({ active: 3, recent: 2 });
    expect(s.store.counters.droppedRecent).toBe(1);
  });
});
