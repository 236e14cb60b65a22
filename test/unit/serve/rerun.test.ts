import { describe, expect, it } from "vitest";
import { clearStep, lastClears, type TaskCleared } from "../../../src/serve/view/rerun.js";
import { position } from "../../support/events.js";

function cleared(task: string, at: number, previous: string): TaskCleared {
  return {
    type: "task_cleared",
    insight_id: `task_cleared:d:r:${task}:-1:${position(at)}`,
    dag_id: "d",
    run_id: "r",
    task_id: task,
    map_index: -1,
    try_number: 1,
    previous_state: previous,
    caused_by: { position: position(at), topic: "events", partition: 0, offset: String(at) },
    emitted_at: "2026-12-05T00:00:00.000Z",
  };
}

describe("the rerun rule", () => {
  it("a clear is a state back to None; a rerun is reaching a state it runs in after one", () => {
    expect(clearStep(false, "success", null)).toEqual({ pending: true, reran: false });
    expect(clearStep(false, undefined, null)).toEqual({ pending: false, reran: false });
    expect(clearStep(true, null, "scheduled")).toEqual({ pending: true, reran: false });
    expect(clearStep(true, "queued", "running")).toEqual({ pending: false, reran: true });
    expect(clearStep(false, "queued", "running")).toEqual({ pending: false, reran: false });
  });

  it("lastClears: per task the last clear in position order, and whether it ran between two of them", () => {
    const out = lastClears([
      cleared("b", 9, "success"),
      cleared("a", 3, "success"),
      cleared("b", 2, "failed"),
      cleared("c", 5, "queued"),
      cleared("c", 1, "success"),
    ]);
    const byTask = Object.fromEntries(out.map((o) => [o.clear.task_id, [o.clear.caused_by.offset, o.reranBefore]]));
    // b: failed, then (ran again) success before its second clear; c: queued before its second, not known to have run.
    expect(byTask).toEqual({ a: ["3", false], b: ["9", true], c: ["5", false] });
  });
});
