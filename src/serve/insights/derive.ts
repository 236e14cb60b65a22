import type { DagRunEvent, StreamEvent } from "../../airflow/events.js";
import { WAITING_STATES, type InsightEvent } from "../schemas.js";
import { isClear } from "../view/rerun.js";
import { isFinishedRun, stateBefore, summarizeRun, taskIdent, type CauseRef, type KeyedTaskEvent, type PartitionView } from "./view.js";

/**
 * The insights, derived without side effects: from one event and the view as it was before it
 * (deriveFromEvent), and from the passing of time (timerStep). The writer applies the event to the
 * view afterwards and publishes what these return; everything here is a function of its arguments,
 * so two replicas that hold the same view derive the same insights with the same ids.
 */

/** A task_stuck published and not yet followed by its task_unstuck, by taskIdent. */
export interface StuckMark {
  insight_id: string;
  state: string;
  try_number: number | null;
  /** Position of the event that put the task in the state. */
  position: string;
  since: string;
}

export type EmittedStuck = Map<string, StuckMark>;

/** Seconds a task instance may stay in a waiting state, per DAG and state; null: never stuck. */
export type StuckThreshold = (dagId: string, state: string) => number | null;

/** What a task_failed_final, run_cleared, ... needs besides the event: where the event was, and the clock. */
export interface DeriveContext {
  cause: CauseRef;
  now: Date;
}

const RESTARTED_RUN_STATES: readonly (string | null)[] = ["queued", "running"];

export function deriveFromEvent(event: StreamEvent, ctx: DeriveContext, view: PartitionView, emitted: EmittedStuck): InsightEvent[] {
  if (event.type === "task_instance") {
    if (event.dag_id === null || event.run_id === null || event.task_id === null || event.map_index === null) return [];
    return deriveTask(event as KeyedTaskEvent, ctx, view, emitted);
  }
  if (event.type === "dag_run") return deriveRun(event, ctx, view);
  return [];
}

function common(e: { dag_id: string; run_id: string }, ctx: DeriveContext) {
  return { dag_id: e.dag_id, run_id: e.run_id, caused_by: ctx.cause, emitted_at: ctx.now.toISOString() };
}

function deriveTask(e: KeyedTaskEvent, ctx: DeriveContext, view: PartitionView, emitted: EmittedStuck): InsightEvent[] {
  const out: InsightEvent[] = [];
  const before = view.task(e.dag_id, e.run_id, e.task_id, e.map_index);
  const prior = stateBefore(e, before?.state);
  const ident = { task_id: e.task_id, map_index: e.map_index };
  // Airflow puts a failing task instance with a retry left in up_for_retry (TaskInstance.handle_failure,
  // is_eligible_to_retry); failed is reached when none is left, when the task fails without retrying
  // (AirflowFailException), or when someone marks it failed: final in every case. A snapshot of a row
  // already failed before it is not a new failure; a delete is not one at all.
  if (e.op !== "delete" && e.state === "failed" && prior !== "failed" && !(e.op === "snapshot" && prior === undefined)) {
    out.push({
      type: "task_failed_final",
      insight_id: `task_failed_final:${e.dag_id}:${e.run_id}:${e.task_id}:${e.map_index}:${e.try_number ?? "null"}:${e.source.position}`,
      ...common(e, ctx),
      ...ident,
      try_number: e.try_number,
      max_tries: e.max_tries,
    });
  }
  // Airflow's clear sets a task instance's state to None (clear_task_instances); a snapshot that finds
  // a known state gone is one too. The next owner of the partition restores the clear from this
  // insight (a task's rerun is counted in its run's summary, and the state topic keeps only the rerun).
  if (e.op !== "delete" && isClear(prior, e.state)) {
    out.push({
      type: "task_cleared",
      insight_id: `task_cleared:${e.dag_id}:${e.run_id}:${e.task_id}:${e.map_index}:${e.source.position}`,
      ...common(e, ctx),
      ...ident,
      try_number: e.try_number,
      previous_state: prior,
    });
  }
  const key = taskIdent(e.dag_id, e.run_id, e.task_id, e.map_index);
  const mark = emitted.get(key);
  const newState = e.op === "delete" ? null : e.state;
  if (mark !== undefined && (newState !== mark.state || e.try_number !== mark.try_number || e.op === "delete")) {
    out.push({
      type: "task_unstuck",
      insight_id: mark.insight_id.replace(/^task_stuck:/, "task_unstuck:"),
      ...common(e, ctx),
      ...ident,
      try_number: e.try_number,
      state: newState,
      stuck_seconds: Math.max(0, (Date.parse(e.source.commit_time) - Date.parse(mark.since)) / 1000),
    });
  }
  return out;
}

function deriveRun(e: DagRunEvent, ctx: DeriveContext, view: PartitionView): InsightEvent[] {
  if (e.op === "delete") return [];
  const before = view.run(e.dag_id, e.run_id);
  const prior = stateBefore(e, before === undefined ? undefined : before.state);
  const out: InsightEvent[] = [];
  // A snapshot of a run the writer did not know before says nothing about when it finished.
  if ((e.state === "success" || e.state === "failed") && prior !== e.state && !(e.op === "snapshot" && prior === undefined)) {
    out.push({
      type: "run_completed",
      insight_id: `run_completed:${e.dag_id}:${e.run_id}:${e.source.position}`,
      ...common(e, ctx),
      logical_date: e.logical_date,
      summary: summarizeRun(before?.tasks.values() ?? [], {
        state: e.state,
        start_date: e.start_date,
        end_date: e.end_date,
        clear_number: e.clear_number,
      }),
    });
  }
  const clearRose = before !== undefined && before.clear_number !== null && e.clear_number !== null && e.clear_number > before.clear_number;
  const restarted = prior !== undefined && isFinishedRun(prior) && RESTARTED_RUN_STATES.includes(e.state);
  if (clearRose || restarted) {
    out.push({
      type: "run_cleared",
      insight_id: `run_cleared:${e.dag_id}:${e.run_id}:${e.source.position}`,
      ...common(e, ctx),
      clear_number: e.clear_number,
      previous_state: prior ?? null,
    });
  }
  return out;
}

/**
 * task_stuck for every task instance of the view in a waiting state for longer than its threshold
 * and not reported yet (for that state and the event that put it there). The cause is that event,
 * so the id is the same whichever replica, and whenever, notices.
 */
export function timerStep(now: Date, view: PartitionView, emitted: EmittedStuck, threshold: StuckThreshold): InsightEvent[] {
  const out: InsightEvent[] = [];
  for (const run of view.allRuns()) {
    for (const [key, t] of run.tasks) {
      if (t.state === null || !(WAITING_STATES as readonly string[]).includes(t.state)) continue;
      const limit = threshold(run.dag_id, t.state);
      if (limit === null) continue;
      const forSeconds = (now.getTime() - Date.parse(t.since)) / 1000;
      if (!(forSeconds > limit)) continue;
      const mark = emitted.get(key);
      if (mark !== undefined && mark.position === t.cause.position && mark.state === t.state) continue;
      out.push({
        type: "task_stuck",
        insight_id: `task_stuck:${run.dag_id}:${run.run_id}:${t.task_id}:${t.map_index}:${t.try_number ?? "null"}:${t.state}:${t.cause.position}`,
        dag_id: run.dag_id,
        run_id: run.run_id,
        caused_by: t.cause,
        emitted_at: now.toISOString(),
        task_id: t.task_id,
        map_index: t.map_index,
        try_number: t.try_number,
        state: t.state,
        since: t.since,
        threshold_seconds: limit,
      });
    }
  }
  return out;
}

/** Keeps `emitted` in step with insights as they are published (or read back from the insights topic). */
export function noteEmitted(emitted: EmittedStuck, insight: InsightEvent): void {
  if (insight.type === "task_stuck") {
    emitted.set(taskIdent(insight.dag_id, insight.run_id, insight.task_id, insight.map_index), {
      insight_id: insight.insight_id,
      state: insight.state,
      try_number: insight.try_number,
      position: insight.caused_by.position,
      since: insight.since,
    });
  } else if (insight.type === "task_unstuck") {
    const key = taskIdent(insight.dag_id, insight.run_id, insight.task_id, insight.map_index);
    if (emitted.get(key)?.insight_id.replace(/^task_stuck:/, "task_unstuck:") === insight.insight_id) emitted.delete(key);
  }
}
