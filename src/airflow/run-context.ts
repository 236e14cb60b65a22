import { decodeTimestamp } from "../decode/values.js";
import type { RunContext } from "./mapper.js";

/**
 * A dag_run row as read at session start (src/source/airflow-rows.ts reads it): timestamps in
 * PostgreSQL's text form, NULL for a column the schema's Airflow version lacks.
 */
export interface DagRunRow {
  dag_id: string;
  run_id: string;
  run_type: string | null;
  /** logical_date on Airflow 3.x, execution_date on 2.x. */
  logical_date: string | null;
  data_interval_start: string | null;
  data_interval_end: string | null;
  clear_number: number | null;
}

/**
 * The context of runs that began before this session, for the mapper to seed: task-instance
 * events of runs already under way then carry their logical date and run type.
 */
export function runContexts(rows: readonly DagRunRow[]): { dagId: string; runId: string; ctx: RunContext }[] {
  const ts = (v: string | null) => (v === null ? null : decodeTimestamp(v, true));
  return rows.map((r) => ({
    dagId: r.dag_id,
    runId: r.run_id,
    ctx: {
      logicalDate: ts(r.logical_date),
      runType: r.run_type,
      dataIntervalStart: ts(r.data_interval_start),
      dataIntervalEnd: ts(r.data_interval_end),
      clearNumber: r.clear_number,
    },
  }));
}
