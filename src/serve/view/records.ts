import { HistoryLog } from "./history.js";

/**
 * What the view holds per task instance and per run. Kept to the fields the answers need (no copy of
 * an event): 10,000 active runs x 50 tasks is half a million of these (docs/serve.md has the
 * measured heap). Strings that repeat across runs (dag_id, task_id, states) are interned, and a
 * run's history is columnar (history.ts).
 */
export interface TaskRecord {
  taskId: string;
  mapIndex: number;
  state: string | null;
  tryNumber: number | null;
  maxTries: number | null;
  startDate: string | null;
  endDate: string | null;
  duration: number | null;
  stateSince: string;
  position: string;
  /** Went back to None after it had run: a later run of it counts as a rerun. */
  cleared: boolean;
}

export interface RunRecord {
  dagId: string;
  runId: string;
  logicalDate: string | null;
  runType: string | null;
  state: string | null;
  startDate: string | null;
  endDate: string | null;
  clearNumber: number | null;
  /** Commit time of the event that put the run in its state (or first named it). */
  stateSince: string;
  /** Highest position applied to the run or one of its task instances. */
  position: string;
  lastCommitTime: string;
  /** A dag_run event (not only task instances) was seen. */
  runSeen: boolean;
  /** Position of the last dag_run event applied: an event not after it is a re-delivery. */
  runPosition: string | null;
  /** Key `${task_id}\u0000${map_index}`. */
  tasks: Map<string, TaskRecord>;
  history: HistoryLog;
  /** task_id[map_index] of task instances that went back to None and ran again. */
  rerun: Set<string>;
  /** This run's duration went into its DAG's duration history (once per run). */
  durationCounted: boolean;
}

export function taskKey(taskId: string, mapIndex: number): string {
  return `${taskId}\u0000${mapIndex}`;
}

export function runKey(dagId: string, runId: string): string {
  return `${dagId}\u0000${runId}`;
}

/** "task_id" for an unmapped task, "task_id[3]" for map index 3: how summaries and reasons name a task instance. */
export function taskLabel(taskId: string, mapIndex: number): string {
  return mapIndex < 0 ? taskId : `${taskId}[${mapIndex}]`;
}

/**
 * Interns repeated strings so half a million task records do not each hold their own copy of the
 * same task_id or state. Bounded: past the cap new strings pass through uninterned (a stream with
 * unbounded distinct ids must not grow this table instead).
 */
export class Interner {
  private readonly table = new Map<string, string>();
  constructor(private readonly cap = 200_000) {}

  of(s: string): string;
  of(s: string | null): string | null;
  of(s: string | null): string | null {
    if (s === null) return null;
    const had = this.table.get(s);
    if (had !== undefined) return had;
    if (this.table.size < this.cap) this.table.set(s, s);
    return s;
  }
}

export function emptyRun(dagId: string, runId: string, position: string, commitTime: string, historyCap: number): RunRecord {
  return {
    dagId,
    runId,
    logicalDate: null,
    runType: null,
    state: null,
    startDate: null,
    endDate: null,
    clearNumber: null,
    stateSince: commitTime,
    position,
    lastCommitTime: commitTime,
    runSeen: false,
    runPosition: null,
    tasks: new Map(),
    history: new HistoryLog(historyCap),
    rerun: new Set(),
    durationCounted: false,
  };
}
