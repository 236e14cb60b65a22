import type { ReadyAnswer, RunView } from "../schemas.js";

export type ReadyView = Omit<ReadyAnswer, "waited_seconds">;

/**
 * When can I start: with tasks named, every map index of each named task in success (a task not seen
 * yet is not ready; skipped is done but not success, so not ready); with none named, the run in
 * success.
 */
export function readyOf(run: RunView, tasks: readonly string[]): ReadyView {
  const named = [...new Set(tasks)];
  const perTask = named.map((taskId) => {
    const instances = run.tasks.filter((t) => t.task_id === taskId);
    const states = instances.map((t) => t.state);
    return { task_id: taskId, states, ready: states.length > 0 && states.every((s) => s === "success") };
  });
  const ready = named.length === 0 ? run.state === "success" : perTask.every((t) => t.ready);
  return { dag_id: run.dag_id, run_id: run.run_id, ready, run_state: run.state, tasks: perTask, position: run.position };
}
