import { z } from "zod";

/**
 * The contract of `airflow-eventstream serve`: what its REST API answers and what it publishes on
 * the insights topic. The OpenAPI document and the insights' JSON Schema files are generated from
 * these zod schemas (the single source), as the events' are from src/airflow/events.ts.
 *
 * Times are ISO-8601 UTC strings as the events carry them (PostgreSQL's, with microseconds) or, for
 * times the service itself measured (`now`, `since` of a stuck run), with milliseconds.
 */

const timestamp = z.string().describe("ISO-8601 UTC timestamp");
const position = z
  .string()
  .regex(/^[0-9A-F]{16}-[0-9A-F]{8}$/)
  .describe("An event's source.position: increasing per source; compare as strings");

/** Task-instance states in which a task waits or works: the ones that can be stuck. */
export const WAITING_STATES = ["scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule"] as const;
/** Task-instance states after which the task does nothing more unless cleared. */
export const FINISHED_TASK_STATES = ["success", "failed", "skipped", "upstream_failed", "removed"] as const;
/** DAG-run states after which the run is complete. */
export const FINISHED_RUN_STATES = ["success", "failed"] as const;

export const TaskView = z
  .object({
    task_id: z.string(),
    map_index: z.number().int().describe("-1 for an unmapped task"),
    state: z.string().nullable().describe("The task instance's state; null is Airflow's None (not yet scheduled, or cleared)"),
    try_number: z.number().int().nullable(),
    max_tries: z.number().int().nullable(),
    start_date: timestamp.nullable(),
    end_date: timestamp.nullable(),
    duration: z.number().nullable().describe("Seconds, as Airflow recorded it"),
    state_since: timestamp.describe("Commit time of the event that put the task instance in its current state"),
    position: position.describe("The last event applied to this task instance"),
  })
  .describe("A task instance as the service knows it");
export type TaskView = z.infer<typeof TaskView>;

export const RunSummary = z
  .object({
    state: z.enum(FINISHED_RUN_STATES),
    counts: z.record(z.string(), z.number().int()).describe('Task instances per final state (null state counted as "none")'),
    duration_seconds: z.number().nullable().describe("end_date - start_date of the run; null when either is unknown"),
    retries: z.number().int().describe("Tries beyond the first, over all task instances (try_number - 1 summed)"),
    failed_tasks: z.array(z.string()).describe("task_id[map_index] of failed task instances"),
    upstream_failed_tasks: z.array(z.string()),
    cleared: z
      .object({
        times: z.number().int().describe("How often the run was cleared (clear_number)"),
        rerun_tasks: z.array(z.string()).describe("Task instances that went back to none and ran again"),
      })
      .describe("What was cleared and rerun"),
  })
  .describe("A finished run in numbers");
export type RunSummary = z.infer<typeof RunSummary>;

export const RunView = z
  .object({
    dag_id: z.string(),
    run_id: z.string(),
    logical_date: timestamp.nullable(),
    run_type: z.string().nullable(),
    state: z.string().nullable().describe("queued, running, success, failed; null while only its task instances were seen"),
    start_date: timestamp.nullable(),
    end_date: timestamp.nullable(),
    clear_number: z.number().int().nullable(),
    complete: z.boolean().describe("true when the run is in success or failed"),
    tasks: z.array(TaskView).describe("Ordered by task_id, then map_index"),
    summary: RunSummary.nullable().describe("Set when the run is complete"),
    position: position.describe("The last event applied to this run or one of its task instances"),
  })
  .describe("A DAG run and its task instances: is it complete?");
export type RunView = z.infer<typeof RunView>;

export const ReadyAnswer = z
  .object({
    dag_id: z.string(),
    run_id: z.string(),
    ready: z.boolean().describe("true when the named tasks (or, with none named, the run) finished successfully"),
    run_state: z.string().nullable(),
    tasks: z.array(
      z.object({
        task_id: z.string(),
        states: z.array(z.string().nullable()).describe("Per map index; one entry for an unmapped task; empty when not seen yet"),
        ready: z.boolean().describe("Every map index in success (skipped counts as done, not as success: false)"),
      }),
    ),
    waited_seconds: z.number().describe("How long the request waited (wait=)"),
    position: position.nullable().describe("The last event the answer reflects"),
  })
  .describe("When can I start?");
export type ReadyAnswer = z.infer<typeof ReadyAnswer>;

export const StuckItem = z
  .object({
    kind: z.enum(["task", "run"]),
    dag_id: z.string(),
    run_id: z.string(),
    task_id: z.string().nullable(),
    map_index: z.number().int().nullable(),
    state: z.string(),
    since: timestamp.describe("When it entered the state"),
    for_seconds: z.number(),
    threshold_seconds: z.number().describe("The threshold it passed: per state (task) or the DAG's p95 run duration (run)"),
    reason: z.string().describe('In words, e.g. "queued for 612 s (threshold 600 s)"'),
  })
  .describe("Where are we stuck?");
export type StuckItem = z.infer<typeof StuckItem>;

export const HistoryEntry = z
  .object({
    position: position,
    commit_time: timestamp,
    kind: z.enum(["run_state", "run_cleared", "task_state", "task_try", "task_cleared"]),
    task_id: z.string().nullable(),
    map_index: z.number().int().nullable(),
    from: z.string().nullable().describe("The state before (null: None or not known)"),
    to: z.string().nullable(),
    try_number: z.number().int().nullable(),
    clear_number: z.number().int().nullable(),
  })
  .describe("One step of a run's history: can I undo and rerun?");
export type HistoryEntry = z.infer<typeof HistoryEntry>;

export const ApiError = z
  .object({
    error: z.string().describe("What is wrong, in words"),
    parameter: z.string().optional().describe("The parameter at fault, for a 400"),
  })
  .describe("Any 4xx answer");
export type ApiError = z.infer<typeof ApiError>;

/** What caused an insight: the event on the events topic. */
const cause = z
  .object({
    position: position,
    topic: z.string(),
    partition: z.number().int(),
    offset: z
      .string()
      .nullable()
      .describe("null when the writer knew the event from the current-state topic (read at start), not from the events topic"),
  })
  .describe("The event that caused this insight (for task_stuck: the event that put the task in its state)");

const insightFields = {
  insight_id: z
    .string()
    .describe("Deterministic identity: the same insight derived twice has the same id (consumers may de-duplicate by it)"),
  dag_id: z.string(),
  run_id: z.string(),
  caused_by: cause,
  emitted_at: timestamp.describe("When the service published it"),
};

const taskFields = { task_id: z.string(), map_index: z.number().int(), try_number: z.number().int().nullable() };

export const InsightEvent = z
  .discriminatedUnion("type", [
    z
      .object({
        type: z.literal("run_completed"),
        ...insightFields,
        logical_date: timestamp.nullable(),
        summary: RunSummary,
      })
      .describe("A DAG run reached success or failed"),
    z
      .object({
        type: z.literal("task_stuck"),
        ...insightFields,
        ...taskFields,
        state: z.string(),
        since: timestamp,
        threshold_seconds: z.number(),
      })
      .describe("A task instance stayed in a waiting state longer than its threshold"),
    z
      .object({
        type: z.literal("task_unstuck"),
        ...insightFields,
        ...taskFields,
        state: z.string().nullable().describe("The state it moved to"),
        stuck_seconds: z.number().describe("How long it had been in the state it was stuck in"),
      })
      .describe("A task instance reported stuck left that state"),
    z
      .object({
        type: z.literal("task_failed_final"),
        ...insightFields,
        ...taskFields,
        max_tries: z.number().int().nullable(),
      })
      .describe("A task instance failed with no retry left (a try that will be retried is up_for_retry, not this)"),
    z
      .object({
        type: z.literal("task_cleared"),
        ...insightFields,
        ...taskFields,
        previous_state: z.string().describe("The state it was cleared from"),
      })
      .describe("A task instance went back to no state from one: cleared, to run again"),
    z
      .object({
        type: z.literal("run_cleared"),
        ...insightFields,
        clear_number: z.number().int().nullable(),
        previous_state: z.string().nullable(),
      })
      .describe("A DAG run was cleared to run again"),
  ])
  .describe("What the service derived from the events, on the insights topic, keyed by dag_id");
export type InsightEvent = z.infer<typeof InsightEvent>;

export const DagListItem = z
  .object({
    dag_id: z.string(),
    active_runs: z.number().int().describe("Runs known and not complete"),
    recent_runs: z.number().int().describe("Complete runs still held"),
    last_event: timestamp.nullable().describe("Commit time of the newest event of the DAG"),
    stuck: z.number().int().describe("Stuck task instances and runs now"),
  })
  .describe("A DAG the service holds runs of (`GET /dags`; the page's search)");
export type DagListItem = z.infer<typeof DagListItem>;
