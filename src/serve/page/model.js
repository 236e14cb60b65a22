// The page's view of one DAG: its runs and their task instances, fed by the service's REST answers
// (RunView, src/serve/schemas.ts) and by the events of its SSE stream (src/airflow/events.ts).
// No DOM here, so test/unit/page-model.test.ts runs it under Node.

export const FINISHED_RUN_STATES = ["success", "failed"];

// The order Airflow's grid uses to show one state for a mapped task: the most urgent of its map indexes wins.
const SUMMARY_PRIORITY = [
  "failed",
  "upstream_failed",
  "up_for_retry",
  "up_for_reschedule",
  "queued",
  "scheduled",
  "deferred",
  "running",
  "restarting",
  "shutdown",
  "none",
  "success",
  "skipped",
  "removed",
];

const SEP = "\u0000";

export function cellKey(runId, taskId) {
  return runId + SEP + taskId;
}

export function createDagModel(dagId) {
  return { dagId, runs: new Map() };
}

function newRun(runId) {
  return {
    run_id: runId,
    logical_date: null,
    run_type: null,
    state: null,
    start_date: null,
    end_date: null,
    clear_number: null,
    summary: null,
    position: "",
    tasks: new Map(),
  };
}

/** What applying something changed, for the renderer: it rebuilds the grid only when its shape changed. */
export function emptyChanges() {
  return { structural: false, cells: new Set(), runs: new Set(), finished: new Set(), reload: false };
}

/**
 * A RunView from the REST API. Kept only when it is at least as new as what events already brought:
 * the SSE stream may deliver an event before the answer that already contains it, or after.
 */
export function applyRunView(model, view, changes = emptyChanges()) {
  const existing = model.runs.get(view.run_id);
  if (existing && existing.position > view.position) return changes;
  const run = newRun(view.run_id);
  for (const f of ["logical_date", "run_type", "state", "start_date", "end_date", "clear_number", "summary", "position"]) run[f] = view[f];
  for (const t of view.tasks) run.tasks.set(t.task_id + SEP + t.map_index, { ...t });
  if (!existing || !sameTaskIds(existing, run)) changes.structural = true;
  model.runs.set(run.run_id, run);
  changes.runs.add(run.run_id);
  for (const t of run.tasks.values()) changes.cells.add(cellKey(run.run_id, t.task_id));
  return changes;
}

function sameTaskIds(a, b) {
  const ids = (r) => [...new Set([...r.tasks.values()].map((t) => t.task_id))].sort().join(SEP);
  return ids(a) === ids(b);
}

/**
 * One event of the SSE stream. Events of one DAG arrive in position order (one Kafka partition per
 * DAG), so an event at or before a run's position is already in the view and is skipped: a
 * re-delivery, or one the REST answer already held.
 */
export function applyEvent(model, ev, changes = emptyChanges()) {
  // Rows went without events for each (TRUNCATE), or events were lost (a gap in the stream): read the runs again.
  if (ev.type === "table_truncated" || ev.type === "stream_gap") {
    changes.reload = true;
    return changes;
  }
  if ((ev.type !== "task_instance" && ev.type !== "dag_run") || ev.dag_id !== model.dagId || ev.run_id === null) return changes;
  const position = ev.source.position;
  let run = model.runs.get(ev.run_id);
  if (run && position <= run.position) return changes;
  if (!run) {
    run = newRun(ev.run_id);
    run.logical_date = ev.logical_date ?? null;
    run.run_type = ev.run_type ?? null;
    model.runs.set(run.run_id, run);
    changes.structural = true;
  }
  run.position = position;
  changes.runs.add(run.run_id);
  if (ev.type === "dag_run") applyDagRun(model, run, ev, changes);
  else applyTaskInstance(run, ev, changes);
  return changes;
}

function applyDagRun(model, run, ev, changes) {
  if (ev.op === "delete") {
    model.runs.delete(run.run_id);
    changes.structural = true;
    return;
  }
  const wasFinished = FINISHED_RUN_STATES.includes(run.state);
  for (const f of ["logical_date", "run_type", "state", "start_date", "end_date", "clear_number"]) run[f] = ev[f];
  const finished = FINISHED_RUN_STATES.includes(run.state);
  // The summary is the service's to compute (counts, retries, what was rerun): the page asks for it.
  if (finished && !wasFinished) changes.finished.add(run.run_id);
  if (!finished) run.summary = null;
}

function applyTaskInstance(run, ev, changes) {
  const key = ev.task_id + SEP + ev.map_index;
  const before = run.tasks.get(key);
  const hadTask = hasTask(run, ev.task_id);
  if (ev.op === "delete") {
    run.tasks.delete(key);
    if (!hasTask(run, ev.task_id)) changes.structural = true;
  } else {
    run.tasks.set(key, {
      task_id: ev.task_id,
      map_index: ev.map_index,
      state: ev.state,
      try_number: ev.try_number,
      max_tries: ev.max_tries,
      start_date: ev.start_date,
      end_date: ev.end_date,
      duration: ev.duration,
      state_since: before && before.state === ev.state ? before.state_since : ev.source.commit_time,
      position: ev.source.position,
    });
    if (!hadTask) changes.structural = true;
  }
  changes.cells.add(cellKey(run.run_id, ev.task_id));
}

function hasTask(run, taskId) {
  for (const t of run.tasks.values()) if (t.task_id === taskId) return true;
  return false;
}

function runOrder(run) {
  // Unknown dates sort last ("~" is after every digit): a run seen only through its task instances is a new one.
  return (run.logical_date ?? run.start_date ?? "~") + SEP + run.run_id;
}

/** The newest `limit` runs, oldest first: Airflow's grid puts the newest run on the right. */
export function visibleRuns(model, limit) {
  const runs = [...model.runs.values()].sort((a, b) => (runOrder(a) < runOrder(b) ? -1 : runOrder(a) > runOrder(b) ? 1 : 0));
  return runs.slice(Math.max(0, runs.length - limit));
}

/** The rows of the grid: every task_id of the given runs, sorted. */
export function taskIds(runs) {
  const ids = new Set();
  for (const r of runs) for (const t of r.tasks.values()) ids.add(t.task_id);
  return [...ids].sort();
}

/**
 * One cell: the state of a task in a run, and the same in words (its title and aria-label, so the
 * state is not told by colour alone). A mapped task shows its most urgent state and its counts.
 */
export function cellState(run, taskId) {
  const states = [];
  let tries = null;
  for (const t of run.tasks.values()) {
    if (t.task_id !== taskId) continue;
    states.push(t.state ?? "none");
    tries = t.try_number;
  }
  if (states.length === 0) return { state: "absent", label: `${taskId}: not in run ${run.run_id}` };
  if (states.length === 1) {
    const tryText = tries !== null && tries > 1 ? `, try ${tries}` : "";
    return { state: states[0], label: `${taskId} in ${run.run_id}: ${states[0]}${tryText}` };
  }
  const counts = new Map();
  for (const s of states) counts.set(s, (counts.get(s) ?? 0) + 1);
  const state = SUMMARY_PRIORITY.find((s) => counts.has(s)) ?? states[0];
  const parts = [...counts].map(([s, n]) => `${n} ${s}`).join(", ");
  return { state, label: `${taskId} in ${run.run_id}: ${states.length} mapped (${parts})` };
}

/** Finished runs with their summary, newest first. */
export function finishedRuns(model, limit) {
  return visibleRuns(model, Number.MAX_SAFE_INTEGER)
    .filter((r) => r.summary !== null && FINISHED_RUN_STATES.includes(r.state))
    .reverse()
    .slice(0, limit);
}
