import type { ColumnValue, Row } from "../decode/types.js";
import { UNCHANGED } from "../decode/types.js";

/**
 * One column of a decoded row as the type an event field has. A TOASTed value that did not change
 * (UNCHANGED) was not sent, so it reads as absent: null in the event.
 */

function value(row: Row, name: string): ColumnValue | undefined {
  const v = row[name];
  return v === UNCHANGED ? undefined : v;
}

export function str(row: Row, name: string): string | null {
  const v = value(row, name);
  if (v === undefined || v === null) return null;
  return typeof v === "string" ? v : typeof v === "object" && !Buffer.isBuffer(v) ? JSON.stringify(v) : String(v);
}

export function int(row: Row, name: string): number | null {
  const v = value(row, name);
  if (typeof v === "number") return Math.trunc(v);
  if (typeof v === "string" && v !== "" && Number.isFinite(Number(v))) return Math.trunc(Number(v));
  return null;
}

export function num(row: Row, name: string): number | null {
  const v = value(row, name);
  if (typeof v === "number") return v;
  if (typeof v === "string" && v !== "" && Number.isFinite(Number(v))) return Number(v);
  return null;
}

/** A field of an event read back from Kafka (see AirflowMapper.seed): a string, or null for anything else. */
export function text(v: unknown): string | null {
  return typeof v === "string" ? v : null;
}

/** A numeric field of an event read back from Kafka, or null for anything else. */
export function numberField(v: unknown): number | null {
  return typeof v === "number" ? v : null;
}

/** Airflow's task-instance and DAG-run states (2.x and 3.x). */
export const AIRFLOW_STATES: readonly string[] = [
  "scheduled",
  "queued",
  "running",
  "success",
  "failed",
  "up_for_retry",
  "up_for_reschedule",
  "upstream_failed",
  "skipped",
  "removed",
  "restarting",
  "deferred",
  "shutdown",
  "sensing",
];

/** The states as shared constants, so a cache entry never pins the decoded row's own string. */
const STATES = new Map(AIRFLOW_STATES.map((st) => [st, st] as const));

/** The shared constant for a known state, so a cache entry never pins the decoded row's own string. */
export function internState(state: string | null): string | null {
  return state === null ? null : (STATES.get(state) ?? state);
}
