import type { RunSummary, RunView } from "../schemas.js";
import { secondsBetween } from "./fold.js";
import { taskLabel } from "./records.js";

/** What a summary is computed from: a RunView (its `summary` aside) and the task instances that were rerun after a clear. */
export type SummaryInput = Pick<RunView, "state" | "start_date" | "end_date" | "clear_number" | "tasks">;

/**
 * A finished run in numbers (RunSummary); null while the run is not in success or failed. Used by the
 * REST view and by the insights' run_completed, so both say the same. `rerunTasks`: task_id[map_index]
 * of the task instances that went back to None and ran again (RunStore keeps them per run).
 */
export function summarize(run: SummaryInput, rerunTasks: readonly string[] = []): RunSummary | null {
  if (run.state !== "success" && run.state !== "failed") return null;
  const counts: Record<string, number> = {};
  let retries = 0;
  const failed: string[] = [];
  const upstreamFailed: string[] = [];
  for (const t of run.tasks) {
    const state = t.state ?? "none";
    counts[state] = (counts[state] ?? 0) + 1;
    if (t.try_number !== null && t.try_number > 1) retries += t.try_number - 1;
    if (t.state === "failed") failed.push(taskLabel(t.task_id, t.map_index));
    if (t.state === "upstream_failed") upstreamFailed.push(taskLabel(t.task_id, t.map_index));
  }
  return {
    state: run.state,
    counts,
    duration_seconds: secondsBetween(run.start_date, run.end_date),
    retries,
    failed_tasks: failed,
    upstream_failed_tasks: upstreamFailed,
    cleared: { times: run.clear_number ?? 0, rerun_tasks: [...rerunTasks].sort() },
  };
}
