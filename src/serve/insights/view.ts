import type { DagRunEvent, StreamEvent, TaskInstanceEvent } from "../../airflow/events.js";
import { FINISHED_RUN_STATES, type RunSummary } from "../schemas.js";
import { taskLabel } from "../view/records.js";
import { clearStep, isRanState } from "../view/rerun.js";
import { summarize } from "../view/summary.js";

/**
 * What the insights writer remembers of one events partition's DAG runs: the little the derivation
 * needs (states, tries, clear numbers, since when a task is in its state and which event put it
 * there). A fold of its own rather than the query service's RunStore: the writer holds only the
 * partitions it owns, must be able to roll an entry back to before its latest event (see
 * rollBackFrom), and keeps no history.
 */

/** Where the event that put a task in its state was: the events topic's record, or the state topic at a bootstrap (offset null). */
export interface CauseRef {
  position: string;
  topic: string;
  partition: number;
  offset: string | null;
}

export interface TaskMemo {
  task_id: string;
  map_index: number;
  state: string | null;
  try_number: number | null;
  max_tries: number | null;
  /** Commit time of the event that put the task in its state. */
  since: string;
  /** That event. */
  cause: CauseRef;
  /** Cleared (back to None from a state) and not run since. */
  clearPending: boolean;
  /** Ran again after a clear (rerun.ts's rule, as the REST view's). */
  rerun: boolean;
}

export interface RunMemo {
  dag_id: string;
  run_id: string;
  state: string | null;
  clear_number: number | null;
  logical_date: string | null;
  start_date: string | null;
  end_date: string | null;
  tasks: Map<string, TaskMemo>;
  /** Insertion order of finished runs, for eviction. */
  finishedSeq: number | null;
}

export type KeyedTaskEvent = TaskInstanceEvent & { dag_id: string; run_id: string; task_id: string; map_index: number };

export function taskIdent(dagId: string, runId: string, taskId: string, mapIndex: number): string {
  return JSON.stringify([dagId, runId, taskId, mapIndex]);
}

export function runIdent(dagId: string, runId: string): string {
  return JSON.stringify([dagId, runId]);
}

/** The row an event is about (a task instance or a DAG run), as the view keys it; null for other events. */
export function rowIdent(e: StreamEvent): string | null {
  if (e.type === "task_instance")
    return e.dag_id !== null && e.run_id !== null && e.task_id !== null && e.map_index !== null
      ? taskIdent(e.dag_id, e.run_id, e.task_id, e.map_index)
      : null;
  if (e.type === "dag_run") return runIdent(e.dag_id, e.run_id);
  return null;
}

/** Finished runs kept per partition: enough to tell a later clear of a recent run (its clear_number before). */
const FINISHED_KEPT = 2_000;

/**
 * The state before an event: the event's own previous_state when the daemon knew it, else the
 * view's; undefined when neither knows (a row first seen, with REPLICA IDENTITY DEFAULT).
 */
export function stateBefore(e: TaskInstanceEvent | DagRunEvent, viewState: string | null | undefined): string | null | undefined {
  if (e.op === "insert") return null;
  return e.previous_state_known ? e.previous_state : viewState;
}

export class PartitionView {
  private readonly runs = new Map<string, RunMemo>();
  private finishedSeq = 0;
  /** Clears committed by a previous owner whose task instance the view did not hold when they were restored, by taskIdent: whether it had rerun before the last. */
  private readonly restoredClears = new Map<string, boolean>();

  run(dagId: string, runId: string): RunMemo | undefined {
    return this.runs.get(runIdent(dagId, runId));
  }

  task(dagId: string, runId: string, taskId: string, mapIndex: number): TaskMemo | undefined {
    return this.run(dagId, runId)?.tasks.get(taskIdent(dagId, runId, taskId, mapIndex));
  }

  allRuns(): IterableIterator<RunMemo> {
    return this.runs.values();
  }

  applyTask(e: KeyedTaskEvent, cause: CauseRef, commitTime: string): void {
    const run = this.ensureRun(e.dag_id, e.run_id);
    const key = taskIdent(e.dag_id, e.run_id, e.task_id, e.map_index);
    if (e.op === "delete") {
      run.tasks.delete(key);
      return;
    }
    const before = run.tasks.get(key);
    const moved = before === undefined || before.state !== e.state || before.try_number !== e.try_number;
    const restored = before === undefined ? this.restoredClears.get(key) : undefined;
    if (restored !== undefined) this.restoredClears.delete(key);
    const step = clearStep(before?.clearPending ?? restored !== undefined, stateBefore(e, before?.state), e.state);
    run.tasks.set(key, {
      task_id: e.task_id,
      map_index: e.map_index,
      state: e.state,
      try_number: e.try_number,
      max_tries: e.max_tries,
      since: moved ? commitTime : before.since,
      cause: moved ? cause : before.cause,
      clearPending: step.pending,
      rerun: (before?.rerun ?? restored === true) || step.reran,
    });
  }

  /**
   * A clear the previous owner of the partition saw (its task_cleared, at `position`, before the
   * committed offset) and this view, rebuilt from each row's latest state, cannot: the state topic
   * holds a cleared task's latest event, usually its rerun. That latest event came after the clear
   * (the clear is one of the row's events), and so did the state before it that a rollback leaves:
   * a state in which the task runs means it has rerun; any other, that it still waits to.
   * `reranBefore`: it ran between earlier clears (lastClears).
   */
  restoreClear(dagId: string, runId: string, taskId: string, mapIndex: number, position: string, reranBefore: boolean): void {
    const t = this.task(dagId, runId, taskId, mapIndex);
    if (t === undefined) {
      this.restoredClears.set(taskIdent(dagId, runId, taskId, mapIndex), reranBefore);
      return;
    }
    if (reranBefore) t.rerun = true;
    if (t.cause.position > position && isRanState(t.state)) t.rerun = true;
    else t.clearPending = true;
  }

  applyRun(e: DagRunEvent): void {
    const id = runIdent(e.dag_id, e.run_id);
    if (e.op === "delete") {
      this.runs.delete(id);
      return;
    }
    const run = this.ensureRun(e.dag_id, e.run_id);
    run.state = e.state;
    run.clear_number = e.clear_number;
    run.logical_date = e.logical_date;
    run.start_date = e.start_date;
    run.end_date = e.end_date;
    run.finishedSeq = isFinishedRun(e.state) ? (run.finishedSeq ?? this.finishedSeq++) : null;
    if (run.finishedSeq !== null) this.evict();
  }

  /** Every DAG run and task instance of the table is gone (TRUNCATE). */
  truncate(table: "task_instance" | "dag_run" | "xcom"): void {
    if (table === "dag_run") this.runs.clear();
    if (table === "task_instance") for (const run of this.runs.values()) run.tasks.clear();
  }

  private ensureRun(dagId: string, runId: string): RunMemo {
    const id = runIdent(dagId, runId);
    let run = this.runs.get(id);
    if (run === undefined) {
      run = {
        dag_id: dagId,
        run_id: runId,
        state: null,
        clear_number: null,
        logical_date: null,
        start_date: null,
        end_date: null,
        tasks: new Map(),
        finishedSeq: null,
      };
      this.runs.set(id, run);
    }
    return run;
  }

  private evict(): void {
    let finished = 0;
    for (const r of this.runs.values()) if (r.finishedSeq !== null) finished++;
    if (finished <= FINISHED_KEPT) return;
    const oldest = [...this.runs.entries()].filter(([, r]) => r.finishedSeq !== null).sort((a, b) => a[1].finishedSeq! - b[1].finishedSeq!);
    for (const [id] of oldest.slice(0, finished - FINISHED_KEPT)) this.runs.delete(id);
  }
}

export function isFinishedRun(state: string | null): boolean {
  return (FINISHED_RUN_STATES as readonly (string | null)[]).includes(state);
}

/**
 * A finished run in numbers, by the query service's summarize (the same numbers as its REST view),
 * from the run's task instances as the view holds them and the run's event.
 */
export function summarizeRun(
  taskMemos: Iterable<TaskMemo>,
  run: { state: "success" | "failed"; start_date: string | null; end_date: string | null; clear_number: number | null },
): RunSummary {
  const memos = [...taskMemos];
  const tasks = memos.map((t) => ({
    task_id: t.task_id,
    map_index: t.map_index,
    state: t.state,
    try_number: t.try_number,
    max_tries: t.max_tries,
    start_date: null,
    end_date: null,
    duration: null,
    state_since: t.since,
    position: t.cause.position,
  }));
  const rerun = memos.filter((t) => t.rerun).map((t) => taskLabel(t.task_id, t.map_index));
  return summarize({ ...run, tasks }, rerun)!;
}
