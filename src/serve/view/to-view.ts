import type { RunView, TaskView } from "../schemas.js";
import type { RunRecord } from "./records.js";
import { summarize } from "./summary.js";

const FINISHED = new Set(["success", "failed"]);

/** A held run as the API answers it: task instances ordered by task_id then map_index, the summary once complete. */
export function toView(r: RunRecord): RunView {
  const tasks: TaskView[] = [...r.tasks.values()]
    .sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : a.mapIndex - b.mapIndex))
    .map((t) => ({
      task_id: t.taskId,
      map_index: t.mapIndex,
      state: t.state,
      try_number: t.tryNumber,
      max_tries: t.maxTries,
      start_date: t.startDate,
      end_date: t.endDate,
      duration: t.duration,
      state_since: t.stateSince,
      position: t.position,
    }));
  const view = {
    dag_id: r.dagId,
    run_id: r.runId,
    logical_date: r.logicalDate,
    run_type: r.runType,
    state: r.runSeen ? r.state : null,
    start_date: r.startDate,
    end_date: r.endDate,
    clear_number: r.clearNumber,
    complete: r.runSeen && FINISHED.has(r.state ?? ""),
    tasks,
    position: r.position,
  };
  return { ...view, summary: view.complete ? summarize(view, [...r.rerun]) : null };
}
