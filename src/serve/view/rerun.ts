import type { InsightEvent } from "../schemas.js";

/** States in which a task instance is doing (or has done) work: reaching one after a clear makes it a rerun. */
const RAN_STATES: ReadonlySet<string> = new Set([
  "running",
  "success",
  "failed",
  "up_for_retry",
  "up_for_reschedule",
  "deferred",
  "skipped",
  "upstream_failed",
]);

export function isRanState(state: string | null): boolean {
  return state !== null && RAN_STATES.has(state);
}

/** Airflow's clear: a task instance back to None from a state (`before` undefined: unknown, never a clear). */
export function isClear(before: string | null | undefined, state: string | null): before is string {
  return state === null && before !== null && before !== undefined;
}

/**
 * One step of the rule both folds (the REST view's and the insights writer's) use for
 * `cleared.rerun_tasks`: a task instance that went back to None from a state is cleared (Airflow's
 * clear sets it so); reaching a state in which it runs after that makes it a rerun. `pending`: cleared
 * and not run since.
 */
export function clearStep(pending: boolean, before: string | null | undefined, state: string | null): { pending: boolean; reran: boolean } {
  if (isClear(before, state)) return { pending: true, reran: false };
  if (pending && isRanState(state)) return { pending: false, reran: true };
  return { pending, reran: false };
}

export type TaskCleared = Extract<InsightEvent, { type: "task_cleared" }>;

/**
 * Per task instance, from its task_cleared insights: the last clear, and whether it ran between two
 * of them (the later clear's previous_state is a state it runs in). What a view that starts after
 * them restores (the state topic shows none of it once the task has rerun).
 */
export function lastClears(clears: readonly TaskCleared[]): { clear: TaskCleared; reranBefore: boolean }[] {
  const byTask = new Map<string, { clear: TaskCleared; reranBefore: boolean }>();
  const ordered = [...clears].sort((a, b) =>
    a.caused_by.position < b.caused_by.position ? -1 : a.caused_by.position > b.caused_by.position ? 1 : 0,
  );
  for (const clear of ordered) {
    const key = JSON.stringify([clear.dag_id, clear.run_id, clear.task_id, clear.map_index]);
    const had = byTask.get(key);
    byTask.set(key, { clear, reranBefore: had !== undefined && (had.reranBefore || isRanState(clear.previous_state)) });
  }
  return [...byTask.values()];
}
