import type { AirflowMajor } from "../support/harness.js";
import type { DagId, Mode } from "./support/phases.js";

/**
 * The event sequences each DAG of test/dags must produce, per way of running it and per Airflow
 * major version: one string for the DAG run, one per task instance (`task` or `task[map_index]`).
 * Notation (support/sequences.ts): `state/try_number` per event, `none` = Airflow's None, `+` the
 * INSERT, `[i]` the event that moved the row to map index i, `#n` a DAG run's clear_number.
 *
 * Where these come from, and why real Airflow differs from the state machine in Airflow's docs
 * (None → scheduled → queued → running → success/failed/up_for_retry/skipped/deferred), is in
 * docs/airflow-e2e.md: `airflow dags test` writes other states than the scheduler does, the
 * scheduler marks an EmptyOperator successful without running it, and tasks that never run go
 * from None straight to skipped / upstream_failed with try_number 0.
 */

export interface Observed {
  run: string;
  tis: Record<string, string>;
}

// ---- Building blocks ---------------------------------------------------------------------------
/** A task that runs once and succeeds, under the scheduler (both versions) or `dags test` on 3.x. */
const OK = "+none/0 scheduled/1 queued/1 running/1 success/1";
/** Never runs: skipped by its trigger rule, a short circuit, or a zero-length expansion. */
const SKIPPED = "+none/0 skipped/0";
/** Never runs: an upstream task failed. */
const UPSTREAM_FAILED = "+none/0 upstream_failed/0";
/** A mapped task's first row (-1) becomes index 0 when the upstream XCom is known; the event carries the new index. */
const EXPANDED_0 = "+none/0 [0]none/0";

/**
 * `airflow dags test` on 2.x runs each task with TaskInstance._run_raw_task, which writes only the
 * outcome: no `queued`, no `running` (those are written by _check_and_change_state_before_execution,
 * which `dags test` skips); a deferral is run in line and never written either.
 */
const OK_2_DAGS_TEST = "+none/0 scheduled/1 success/1";

const dagsTest2: Partial<Record<DagId, Observed>> = {
  es_chain: {
    run: "+running success", // dag.test() creates the run as running: no queued
    tis: { start: OK_2_DAGS_TEST, extract: OK_2_DAGS_TEST, transform: OK_2_DAGS_TEST, load: OK_2_DAGS_TEST },
  },
  es_retry: {
    run: "+running failed",
    tis: {
      flaky: "+none/0 scheduled/1 up_for_retry/1 scheduled/2 up_for_retry/2 scheduled/3 success/3",
      doomed: "+none/0 scheduled/1 up_for_retry/1 scheduled/2 up_for_retry/2 scheduled/3 failed/3",
    },
  },
  es_skip: {
    run: "+running success",
    tis: { skipper: "+none/0 scheduled/1 skipped/1", after_skip: SKIPPED, gate: OK_2_DAGS_TEST, behind_gate: SKIPPED },
  },
  es_upstream_failed: {
    run: "+running failed",
    tis: { breaks: "+none/0 scheduled/1 failed/1", never_runs: UPSTREAM_FAILED, never_runs_either: UPSTREAM_FAILED },
  },
  es_mapped: {
    run: "+running success",
    tis: {
      items: OK_2_DAGS_TEST,
      no_items: OK_2_DAGS_TEST,
      "process[0]": `${EXPANDED_0} scheduled/1 success/1`,
      "process[1]": OK_2_DAGS_TEST,
      "process[2]": OK_2_DAGS_TEST,
      collect: OK_2_DAGS_TEST,
      process_none: SKIPPED,
      after_none: SKIPPED,
    },
  },
  es_deferrable: {
    run: "+running success",
    tis: { wait: OK_2_DAGS_TEST, after_wait: OK_2_DAGS_TEST }, // the trigger ran in line: no `deferred`
  },
  es_notify: {
    run: "+running success",
    tis: {
      notify: OK_2_DAGS_TEST,
      // expand() over a literal list: both indexes exist from the start, no -1 row.
      "notify_each[0]": OK_2_DAGS_TEST,
      "notify_each[1]": OK_2_DAGS_TEST,
      notify_invalid: OK_2_DAGS_TEST,
      notify_not_a_dict: OK_2_DAGS_TEST,
    },
  },
};

/**
 * `airflow dags test` on 3.x goes through the Task SDK's in-process execution API: the task is set
 * `queued` before it runs (the API expects it), so the lifecycle looks like the scheduler's, except
 * for deferral (see es_deferrable) and the EmptyOperator (run, not short-circuited).
 */
const dagsTest3: Partial<Record<DagId, Observed>> = {
  es_chain: { run: "+running success", tis: { start: OK, extract: OK, transform: OK, load: OK } },
  es_retry: {
    run: "+running failed",
    tis: {
      flaky:
        "+none/0 scheduled/1 queued/1 running/1 up_for_retry/1 scheduled/2 queued/2 running/2 up_for_retry/2 scheduled/3 queued/3 running/3 success/3",
      doomed:
        "+none/0 scheduled/1 queued/1 running/1 up_for_retry/1 scheduled/2 queued/2 running/2 up_for_retry/2 scheduled/3 queued/3 running/3 failed/3",
    },
  },
  es_skip: {
    run: "+running success",
    tis: { skipper: "+none/0 scheduled/1 queued/1 running/1 skipped/1", after_skip: SKIPPED, gate: OK, behind_gate: SKIPPED },
  },
  es_upstream_failed: {
    run: "+running failed",
    tis: { breaks: "+none/0 scheduled/1 queued/1 running/1 failed/1", never_runs: UPSTREAM_FAILED, never_runs_either: UPSTREAM_FAILED },
  },
  es_mapped: {
    run: "+running success",
    tis: {
      items: OK,
      no_items: OK,
      "process[0]": `${EXPANDED_0} scheduled/1 queued/1 running/1 success/1`,
      "process[1]": OK,
      "process[2]": OK,
      collect: OK,
      process_none: SKIPPED,
      after_none: SKIPPED,
    },
  },
  es_deferrable: {
    run: "+running success",
    tis: {
      // dag.test(): deferred, then set queued again while the trigger runs in line, scheduled when it
      // fired, and queued once more before the task resumes.
      wait: "+none/0 scheduled/1 queued/1 running/1 deferred/1 queued/1 scheduled/1 queued/1 running/1 success/1",
      after_wait: OK,
    },
  },
  es_notify: {
    run: "+running success",
    tis: { notify: OK, "notify_each[0]": OK, "notify_each[1]": OK, notify_invalid: OK, notify_not_a_dict: OK },
  },
};

/** The real scheduler (LocalExecutor) writes the same sequences on 2.11 and 3.3. */
const scheduler: Partial<Record<DagId, Observed>> = {
  es_chain: {
    run: "+queued running success",
    // An EmptyOperator without callbacks or outlets is never run: DagRun.schedule_tis sets it to
    // success (try_number + 1) in the transaction that would have scheduled it.
    tis: { start: "+none/0 success/1", extract: OK, transform: OK, load: OK },
  },
  es_retry: {
    run: "+queued running failed",
    tis: {
      flaky:
        "+none/0 scheduled/1 queued/1 running/1 up_for_retry/1 scheduled/2 queued/2 running/2 up_for_retry/2 scheduled/3 queued/3 running/3 success/3",
      doomed:
        "+none/0 scheduled/1 queued/1 running/1 up_for_retry/1 scheduled/2 queued/2 running/2 up_for_retry/2 scheduled/3 queued/3 running/3 failed/3",
    },
  },
  es_skip: {
    run: "+queued running success",
    tis: { skipper: "+none/0 scheduled/1 queued/1 running/1 skipped/1", after_skip: SKIPPED, gate: OK, behind_gate: SKIPPED },
  },
  es_upstream_failed: {
    run: "+queued running failed",
    tis: { breaks: "+none/0 scheduled/1 queued/1 running/1 failed/1", never_runs: UPSTREAM_FAILED, never_runs_either: UPSTREAM_FAILED },
  },
  es_mapped: {
    run: "+queued running success",
    tis: {
      items: OK,
      no_items: OK,
      "process[0]": `${EXPANDED_0} scheduled/1 queued/1 running/1 success/1`,
      "process[1]": OK,
      "process[2]": OK,
      collect: OK,
      process_none: SKIPPED,
      after_none: SKIPPED,
    },
  },
  es_deferrable: {
    run: "+queued running success",
    // The triggerer fires the event, the TI goes back to scheduled, and resumes as a new run of the same try.
    tis: { wait: "+none/0 scheduled/1 queued/1 running/1 deferred/1 scheduled/1 queued/1 running/1 success/1", after_wait: OK },
  },
  es_clear: {
    // `airflow tasks clear -y es_clear` after the run succeeded: the run goes back to queued with
    // clear_number 1, each task to None keeping its try_number, then runs as try 2.
    run: "+queued running success queued#1 running success",
    tis: {
      first: "+none/0 scheduled/1 queued/1 running/1 success/1 none/1 scheduled/2 queued/2 running/2 success/2",
      second: "+none/0 scheduled/1 queued/1 running/1 success/1 none/1 scheduled/2 queued/2 running/2 success/2",
    },
  },
  es_notify: {
    run: "+queued running success",
    tis: { notify: OK, "notify_each[0]": OK, "notify_each[1]": OK, notify_invalid: OK, notify_not_a_dict: OK },
  },
};

export const EXPECTED: Record<Mode, Record<AirflowMajor, Partial<Record<DagId, Observed>>>> = {
  "dags-test": { "2": dagsTest2, "3": dagsTest3 },
  scheduler: { "2": scheduler, "3": scheduler },
};
