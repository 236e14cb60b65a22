import { WAITING_STATES } from "../schemas.js";

export type WaitingState = (typeof WAITING_STATES)[number];
export type StateThresholds = Record<WaitingState, number>;

/**
 * How long (seconds) a task instance may stay in a waiting state before /stuck names it. queued
 * follows Airflow's own [scheduler] task_queued_timeout (600 s), after which Airflow itself gives up
 * on a queued task; scheduled gets the same (a task scheduled but not queued for 10 minutes means no
 * pool or executor slot). running, deferred and up_for_reschedule are work or waits by design, so an
 * hour; up_for_retry 30 minutes (Airflow's default retry_delay is 5 minutes; several times that is a
 * retry that will not come).
 */
export const DEFAULT_THRESHOLDS: StateThresholds = {
  scheduled: 600,
  queued: 600,
  running: 3600,
  deferred: 3600,
  up_for_retry: 1800,
  up_for_reschedule: 3600,
};

export interface StuckConfig {
  /** Per state, for every DAG. */
  defaults: StateThresholds;
  /** dag_id -> the states whose threshold differs for that DAG. */
  perDag: Record<string, Partial<StateThresholds>>;
}

export function thresholdFor(cfg: StuckConfig, dagId: string, state: WaitingState): number {
  return cfg.perDag[dagId]?.[state] ?? cfg.defaults[state];
}

const waiting = new Set<string>(WAITING_STATES);
export function isWaiting(state: string | null): state is WaitingState {
  return state !== null && waiting.has(state);
}

/** Past run durations of one DAG: the last `keep`, for the p95 a running run is compared with. */
export class DurationHistory {
  private readonly values: number[] = [];
  constructor(private readonly keep = 100) {}

  add(seconds: number): void {
    this.values.push(seconds);
    if (this.values.length > this.keep) this.values.shift();
  }

  get size(): number {
    return this.values.length;
  }

  /** Nearest-rank p95; null with fewer than `min` durations (too few to say what is usual). */
  p95(min = 5): number | null {
    if (this.values.length < min) return null;
    const sorted = [...this.values].sort((a, b) => a - b);
    return sorted[Math.ceil(0.95 * sorted.length) - 1]!;
  }
}
