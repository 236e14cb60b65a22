import type { DagRunEvent, SourcePosition, TaskInstanceEvent } from "../../src/airflow/events.js";

/**
 * Whole events for unit tests, built from the fields a test cares about over neutral defaults, so a
 * field added to the contract is added here once instead of in every test's builder.
 * test/unit/support/events.test.ts parses the defaults with the zod schemas: the defaults stay valid.
 */

/** A `source.position` as the daemon writes it: commit LSN and index as fixed-width upper-case hex. */
export function position(lsn: number, index = 0): string {
  return `${lsn.toString(16).toUpperCase().padStart(16, "0")}-${index.toString(16).toUpperCase().padStart(8, "0")}`;
}

/** A `source` at `position` (any string the test chooses), committed at `commitTime`. */
export function sourceAt(at: string = position(1), commitTime = "2026-12-01T00:00:00.000000Z"): SourcePosition {
  return { commit_lsn: "0/1", xid: 1, index: 0, position: at, commit_time: commitTime };
}

// Not Partial<TaskInstanceEvent>: that distributes over the union of ops, so fields of one op's
// shape could not be given together with another op.
type TaskInstanceFields = { [K in keyof TaskInstanceEvent]?: TaskInstanceEvent[K] };
type DagRunFields = { [K in keyof DagRunEvent]?: DagRunEvent[K] };

export function taskInstanceEvent(fields: TaskInstanceFields = {}): TaskInstanceEvent {
  return {
    type: "task_instance",
    op: "update",
    dag_id: "dag",
    task_id: "task",
    run_id: "run",
    map_index: -1,
    try_number: 1,
    max_tries: 0,
    state: null,
    previous_state: null,
    previous_state_known: false,
    previous_try_number: null,
    ti_id: null,
    start_date: null,
    end_date: null,
    duration: null,
    hostname: null,
    operator: null,
    queue: null,
    pool: null,
    logical_date: null,
    run_type: null,
    data_interval_start: null,
    data_interval_end: null,
    clear_number: null,
    source: sourceAt(),
    ...fields,
  } as TaskInstanceEvent;
}

export function dagRunEvent(fields: DagRunFields = {}): DagRunEvent {
  return {
    type: "dag_run",
    op: "update",
    dag_id: "dag",
    run_id: "run",
    dag_run_id: 1,
    state: null,
    previous_state: null,
    previous_state_known: false,
    run_type: "manual",
    logical_date: null,
    data_interval_start: null,
    data_interval_end: null,
    start_date: null,
    end_date: null,
    clear_number: 0,
    source: sourceAt(),
    ...fields,
  } as DagRunEvent;
}
