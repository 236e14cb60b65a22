import { describe, expect, it } from "vitest";
import type { DagRunEvent, StreamEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import { OwnedPartition, WindowScan } from "../../../src/serve/insights/partition.js";
import { InsightEvent } from "../../../src/serve/schemas.js";
import type { StateEntry } from "../../../src/sink/state-topic.js";
import { dagRunEvent, position, sourceAt, taskInstanceEvent } from "../../support/events.js";

/**
 * A partition changing owner at any committed offset. The previous owner handled the events before
 * the offset and committed their insights; the new one builds its view from the state topic (each
 * row's latest event, as of any point at or after the offset) and the insights committed, then
 * handles the events from the offset. Together they must publish exactly the insights one owner
 * handling every event publishes: a clear seen by the previous owner and a rerun seen by the new one
 * still make the run's summary name the task as rerun.
 */

const NOW = new Date("2026-12-01T12:00:00Z");

/** Events as the daemon writes them when it knows each row's state before (its cache, or REPLICA IDENTITY FULL). */
class Rows {
  readonly events: StreamEvent[] = [];
  private readonly tis = new Map<string, { state: string | null; try_number: number }>();
  private run: { state: string | null; clear: number } | null = null;

  private at(): ReturnType<typeof sourceAt> {
    const n = this.events.length + 1;
    return sourceAt(position(n), `2026-12-01T10:${String(n).padStart(2, "0")}:00.000000Z`);
  }

  ti(task: string, state: string | null, tryNumber?: number): this {
    const before = this.tis.get(task);
    const next = { state, try_number: tryNumber ?? before?.try_number ?? 0 };
    this.tis.set(task, next);
    const e: TaskInstanceEvent = taskInstanceEvent({
      op: before === undefined ? "insert" : "update",
      dag_id: "etl",
      run_id: "r1",
      task_id: task,
      state,
      try_number: next.try_number,
      max_tries: 1,
      previous_state: before?.state ?? null,
      previous_state_known: before !== undefined,
      previous_try_number: before?.try_number ?? null,
      source: this.at(),
    });
    this.events.push(e);
    return this;
  }

  dagRun(state: string, clear?: number): this {
    const before = this.run;
    this.run = { state, clear: clear ?? before?.clear ?? 0 };
    const e: DagRunEvent = dagRunEvent({
      op: before === null ? "insert" : "update",
      dag_id: "etl",
      run_id: "r1",
      state,
      clear_number: this.run.clear,
      previous_state: before?.state ?? null,
      previous_state_known: before !== null,
      logical_date: "2026-12-01T00:00:00.000000Z",
      start_date: "2026-12-01T10:00:00.000000Z",
      end_date: state === "success" ? "2026-12-01T11:00:00.000000Z" : null,
      source: this.at(),
    });
    this.events.push(e);
    return this;
  }

  runTask(task: string, tryNumber: number): this {
    return this.ti(task, "queued", tryNumber).ti(task, "running").ti(task, "success");
  }
}

/**
 * The day of one run: it completes, is cleared whole and reruns, then one task is cleared and
 * reruns; then that task is cleared once more and the run marked success by hand before it reruns
 * (its earlier rerun still counts).
 */
function day(): StreamEvent[] {
  const r = new Rows().dagRun("running").ti("extract", null).ti("load", null);
  r.runTask("extract", 1).runTask("load", 1).dagRun("success");
  r.ti("extract", null).ti("load", null).dagRun("queued", 1).dagRun("running");
  r.runTask("extract", 2).runTask("load", 2).dagRun("success");
  r.ti("load", null).dagRun("queued", 2).dagRun("running").runTask("load", 3).dagRun("success");
  r.ti("load", null).dagRun("queued", 3).dagRun("running").dagRun("success");
  return r.events;
}

function rowKey(e: StreamEvent): string {
  return e.type === "task_instance" ? `ti ${e.task_id}` : e.type === "dag_run" ? "run" : e.type;
}

/** The state topic after `events`: each row's latest event. */
function stateAfter(events: StreamEvent[]): StateEntry[] {
  const latest = new Map<string, StreamEvent>();
  for (const e of events) latest.set(rowKey(e), e);
  return [...latest.values()].map((e) => ({
    table: e.type === "dag_run" ? "dag_run" : "task_instance",
    position: e.source.position,
    event: e as unknown as Record<string, unknown>,
  }));
}

/** The insights of handling `events` from `from` on; `part` keeps what it saw before. */
function handleFrom(part: OwnedPartition, events: StreamEvent[], from: number): InsightEvent[][] {
  return events.slice(from).map((e, i) => {
    const out = part.handle(Buffer.from(JSON.stringify(e)), String(from + i), NOW);
    for (const insight of out) InsightEvent.parse(insight);
    return out;
  });
}

describe("insights across a change of owner", () => {
  const events = day();
  const one = handleFrom(new OwnedPartition(0, "events", "state", [], 0n, 0n), events, 0);

  it("one owner: the clears and the reruns, each once, and the summaries name the reruns", () => {
    const all = one.flat();
    expect(
      all.filter((i) => i.type === "task_cleared").map((i) => i.type === "task_cleared" && `${i.task_id} ${i.previous_state}`),
    ).toEqual(["extract success", "load success", "load success", "load success"]);
    const summaries = all.flatMap((i) => (i.type === "run_completed" ? [i.summary.cleared] : []));
    expect(summaries).toEqual([
      { times: 0, rerun_tasks: [] },
      { times: 1, rerun_tasks: ["extract", "load"] },
      { times: 2, rerun_tasks: ["extract", "load"] },
      { times: 3, rerun_tasks: ["extract", "load"] },
    ]);
  });

  it("a new owner at any committed offset, its state topic as of any point after it, derives what one owner did", () => {
    for (let cut = 1; cut < events.length; cut++) {
      const committed = one.slice(0, cut).flat();
      for (let stateEnd = cut; stateEnd <= events.length; stateEnd++) {
        // The events topic's end when the partition is taken: at least the state topic's (the daemon
        // writes an event before folding it into the state topic), up to everything.
        for (const eventsEnd of new Set([stateEnd, events.length])) {
          const entries = stateAfter(events.slice(0, stateEnd));
          const scan = new WindowScan(entries);
          for (const e of events.slice(cut, eventsEnd)) if (scan.add(Buffer.from(JSON.stringify(e)))) break;
          const part = new OwnedPartition(0, "events", "state", entries, BigInt(cut), BigInt(eventsEnd), scan);
          part.noteEmitted(committed);
          const after = handleFrom(part, events, cut);
          expect(after, `owner changed at event ${cut}, state as of event ${stateEnd}, events to ${eventsEnd}`).toEqual(one.slice(cut));
        }
      }
    }
  });
});
