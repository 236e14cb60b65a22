import type { DagRunEvent, TaskInstanceEvent } from "../../airflow/events.js";
import type { HistoryEntry } from "../schemas.js";
import { clearStep } from "./rerun.js";
import { type Interner, type RunRecord, type TaskRecord, taskKey, taskLabel } from "./records.js";

/** Where an event came from, as the reader hands it over. */
export interface ApplyContext {
  position: string;
  commitTime: string;
  partition: number;
  offset: string;
  /** Read from the current-state topic at start: the latest event of a row, not a transition seen happen. */
  bootstrap: boolean;
}

function pushHistory(run: RunRecord, entry: HistoryEntry, task: TaskRecord | null): void {
  run.history.push(entry, task);
}

/**
 * Folds a task_instance insert/update/snapshot into its run. The state before is the one the view
 * holds; for a task instance it has not seen, the event's previous_state when the daemon knew it.
 * A transition seen during bootstrap is not history: the state topic holds only each row's latest
 * event, so the steps before it are unknown.
 */
export function applyTaskEvent(
  run: RunRecord,
  e: TaskInstanceEvent & { task_id: string; map_index: number },
  ctx: ApplyContext,
  intern: Interner,
): void {
  const key = taskKey(e.task_id, e.map_index);
  const had = run.tasks.get(key);
  if (had !== undefined && had.position >= ctx.position) return;
  const state = intern.of(e.state);
  const before = had !== undefined ? had.state : e.previous_state_known ? e.previous_state : null;
  const beforeTry = had !== undefined ? had.tryNumber : e.previous_try_number;
  const rec: TaskRecord = had ?? {
    taskId: intern.of(e.task_id),
    mapIndex: e.map_index,
    state: null,
    tryNumber: null,
    maxTries: null,
    startDate: null,
    endDate: null,
    duration: null,
    stateSince: ctx.commitTime,
    position: ctx.position,
    cleared: false,
  };
  const stateChanged = had === undefined || had.state !== state;
  rec.state = state;
  rec.tryNumber = e.try_number;
  rec.maxTries = e.max_tries;
  rec.startDate = e.start_date;
  rec.endDate = e.end_date;
  rec.duration = e.duration;
  rec.position = ctx.position;
  if (stateChanged) rec.stateSince = ctx.commitTime;
  if (had === undefined) run.tasks.set(key, rec);
  const step = clearStep(rec.cleared, before, state);
  rec.cleared = step.pending;
  if (step.reran) run.rerun.add(taskLabel(rec.taskId, rec.mapIndex));
  if (ctx.bootstrap) return;
  const base = { position: ctx.position, commit_time: ctx.commitTime, task_id: rec.taskId, map_index: rec.mapIndex, clear_number: null };
  if (beforeTry !== null && e.try_number !== null && e.try_number > beforeTry)
    pushHistory(run, { ...base, kind: "task_try", from: before ?? null, to: state, try_number: e.try_number }, rec);
  if (before !== state && (had !== undefined || state !== null)) {
    const kind = state === null && before !== null ? "task_cleared" : "task_state";
    pushHistory(run, { ...base, kind, from: before ?? null, to: state, try_number: e.try_number }, rec);
  }
}

const FINISHED = new Set(["success", "failed"]);

/**
 * Folds a dag_run insert/update/snapshot. A clear is the clear_number going up, or (before Airflow
 * 2.8, which has no clear_number) a finished run going back to queued or running.
 * Returns true when the run was cleared.
 */
export function applyRunEvent(run: RunRecord, e: DagRunEvent, ctx: ApplyContext, intern: Interner): boolean {
  if (run.runPosition !== null && run.runPosition >= ctx.position) return false;
  run.runPosition = ctx.position;
  const before = run.runSeen ? run.state : e.previous_state_known ? e.previous_state : null;
  const beforeClear = run.runSeen ? run.clearNumber : null;
  const state = intern.of(e.state);
  const stateChanged = !run.runSeen || run.state !== state;
  run.runSeen = true;
  run.logicalDate = e.logical_date;
  run.runType = intern.of(e.run_type);
  run.state = state;
  run.startDate = e.start_date;
  run.endDate = e.end_date;
  run.clearNumber = e.clear_number;
  if (stateChanged) run.stateSince = ctx.commitTime;
  const cleared =
    (beforeClear !== null && e.clear_number !== null && e.clear_number > beforeClear) ||
    (before !== null && FINISHED.has(before) && state !== null && !FINISHED.has(state));
  if (cleared) run.durationCounted = false;
  if (ctx.bootstrap) return false;
  const base = { position: ctx.position, commit_time: ctx.commitTime, task_id: null, map_index: null, try_number: null };
  if (cleared) pushHistory(run, { ...base, kind: "run_cleared", from: before, to: state, clear_number: e.clear_number }, null);
  else if (before !== state) pushHistory(run, { ...base, kind: "run_state", from: before, to: state, clear_number: e.clear_number }, null);
  return cleared;
}

/** Seconds between two ISO timestamps; null when either is missing or unreadable. */
export function secondsBetween(from: string | null, to: string | null): number | null {
  if (from === null || to === null) return null;
  const a = Date.parse(from);
  const b = Date.parse(to);
  return Number.isFinite(a) && Number.isFinite(b) ? (b - a) / 1000 : null;
}
