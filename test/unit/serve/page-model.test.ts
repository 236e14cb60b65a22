import { describe, expect, it } from "vitest";
import type { AirflowEvent, DagRunEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import type { RunView } from "../../../src/serve/schemas.js";
import {
  applyEvent,
  applyRunView,
  cellKey,
  cellState,
  createDagModel,
  finishedRuns,
  taskIds,
  visibleRuns,
} from "../../../src/serve/page/model.js";
import { dagRunEvent, position, sourceAt, taskInstanceEvent } from "../../support/events.js";

/** The live page's view of a DAG (src/serve/page/model.js): what the grid shows after REST answers and SSE events. */

function ti(runId: string, taskId: string, state: string | null, p: string, extra: Partial<TaskInstanceEvent> = {}): AirflowEvent {
  const run = { logical_date: "2026-12-01T00:00:00.000000Z", run_type: "manual", clear_number: 0 };
  return taskInstanceEvent({ dag_id: "etl", task_id: taskId, run_id: runId, state, ...run, source: sourceAt(p), ...extra });
}

function dr(runId: string, state: string, p: string, extra: Partial<DagRunEvent> = {}): AirflowEvent {
  return dagRunEvent({ dag_id: "etl", run_id: runId, state, logical_date: "2026-12-01T00:00:00.000000Z", source: sourceAt(p), ...extra });
}

function view(runId: string, p: string, tasks: [string, string | null][], extra: Partial<RunView> = {}): RunView {
  return {
    dag_id: "etl",
    run_id: runId,
    logical_date: "2026-12-01T00:00:00.000000Z",
    run_type: "manual",
    state: "running",
    start_date: null,
    end_date: null,
    clear_number: 0,
    complete: false,
    summary: null,
    position: p,
    tasks: tasks.map(([task_id, state]) => ({
      task_id,
      map_index: -1,
      state,
      try_number: 1,
      max_tries: 0,
      start_date: null,
      end_date: null,
      duration: null,
      state_since: "2026-12-01T00:00:00.000Z",
      position: p,
    })),
    ...extra,
  };
}

describe("page model", () => {
  it("changes one cell for a state change and rebuilds only when a task or run appears", () => {
    const m = createDagModel("etl");
    const first = applyEvent(m, ti("r1", "extract", "queued", position(1)));
    expect(first.structural).toBe(true);
    const second = applyEvent(m, ti("r1", "extract", "running", position(2)));
    expect(second.structural).toBe(false);
    expect([...second.cells]).toEqual([cellKey("r1", "extract")]);
    expect(cellState(m.runs.get("r1")!, "extract")).toEqual({ state: "running", label: "extract in r1: running" });
    expect(applyEvent(m, ti("r1", "load", null, position(3))).structural).toBe(true);
    expect(cellState(m.runs.get("r1")!, "load").state).toBe("none");
  });

  it("skips events the REST answer already holds and re-deliveries, applies newer ones", () => {
    const m = createDagModel("etl");
    applyRunView(m, view("r1", position(5), [["extract", "success"]]));
    applyEvent(m, ti("r1", "extract", "running", position(4)));
    expect(cellState(m.runs.get("r1")!, "extract").state).toBe("success");
    applyEvent(m, ti("r1", "extract", "failed", position(6)));
    applyEvent(m, ti("r1", "extract", "running", position(6)));
    expect(cellState(m.runs.get("r1")!, "extract").state).toBe("failed");
    // An answer older than what events brought is not taken.
    applyRunView(m, view("r1", position(5), [["extract", "success"]]));
    expect(cellState(m.runs.get("r1")!, "extract").state).toBe("failed");
  });

  it("ignores other DAGs' events and asks for a reload after a truncate", () => {
    const m = createDagModel("etl");
    applyEvent(m, { ...ti("r1", "extract", "queued", position(1)), dag_id: "other" } as AirflowEvent);
    expect(m.runs.size).toBe(0);
    const truncated = { type: "table_truncated", tables: ["task_instance"] } as unknown as AirflowEvent;
    expect(applyEvent(m, truncated).reload).toBe(true);
  });

  it("reports a run that finished once, and drops its summary when it runs again (cleared)", () => {
    const m = createDagModel("etl");
    expect([...applyEvent(m, dr("r1", "running", position(1))).finished]).toEqual([]);
    expect([...applyEvent(m, dr("r1", "success", position(2))).finished]).toEqual(["r1"]);
    const summary = {
      state: "success" as const,
      counts: { success: 1 },
      duration_seconds: 3,
      retries: 0,
      failed_tasks: [],
      upstream_failed_tasks: [],
      cleared: { times: 0, rerun_tasks: [] },
    };
    applyRunView(m, view("r1", position(2), [["extract", "success"]], { state: "success", complete: true, summary }));
    expect(finishedRuns(m, 10).map((r) => r.run_id)).toEqual(["r1"]);
    applyEvent(m, dr("r1", "queued", position(3), { clear_number: 1 }));
    expect(m.runs.get("r1")!.summary).toBeNull();
    expect(finishedRuns(m, 10)).toEqual([]);
  });

  it("orders runs oldest left, newest right, and keeps the newest `limit`", () => {
    const m = createDagModel("etl");
    for (let i = 0; i < 60; i++) {
      const day = String(1 + (i % 28)).padStart(2, "0");
      const month = i < 28 ? "10" : i < 56 ? "11" : "12";
      applyEvent(m, ti(`r${i}`, "t", "success", position(i + 1), { logical_date: `2026-${month}-${day}T00:00:00.000000Z` }));
    }
    const runs = visibleRuns(m, 50);
    expect(runs).toHaveLength(50);
    expect(runs[0]!.run_id).toBe("r10");
    expect(runs.at(-1)!.run_id).toBe("r59");
    expect(taskIds(runs)).toEqual(["t"]);
  });

  it("shows a mapped task's most urgent state and its counts in words", () => {
    const m = createDagModel("etl");
    applyEvent(m, ti("r1", "fan", "success", position(1), { map_index: 0 }));
    applyEvent(m, ti("r1", "fan", "failed", position(2), { map_index: 1 }));
    applyEvent(m, ti("r1", "fan", "success", position(3), { map_index: 2 }));
    expect(cellState(m.runs.get("r1")!, "fan")).toEqual({ state: "failed", label: "fan in r1: 3 mapped (2 success, 1 failed)" });
  });
});
