import { WAITING_STATES, type StuckItem } from "../schemas.js";
import type { RunRecord } from "./records.js";

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
  /** The last p95 worked out, until the next add: /stuck asks it for every running run of the DAG. */
  private cached: { min: number; p95: number | null } | undefined;
  constructor(private readonly keep = 100) {}

  add(seconds: number): void {
    this.values.push(seconds);
    if (this.values.length > this.keep) this.values.shift();
    this.cached = undefined;
  }

  get size(): number {
    return this.values.length;
  }

  /** Nearest-rank p95; null with fewer than `min` durations (too few to say what is usual). */
  p95(min = 5): number | null {
    if (this.cached?.min === min) return this.cached.p95;
    let p95: number | null = null;
    if (this.values.length >= min) {
      const sorted = [...this.values].sort((a, b) => a - b);
      p95 = sorted[Math.ceil(0.95 * sorted.length) - 1]!;
    }
    this.cached = { min, p95 };
    return p95;
  }
}

/** Where are we stuck: over the runs not complete, `p95Of` giving a DAG's p95 run duration (null: too few known). */
export function findStuck(
  runs: Iterable<RunRecord>,
  now: number,
  cfg: StuckConfig,
  p95Of: (dagId: string) => number | null,
  dagId?: string,
): StuckItem[] {
  const out: StuckItem[] = [];
  for (const run of runs) {
    if (dagId !== undefined && run.dagId !== dagId) continue;
    for (const t of run.tasks.values()) {
      if (!isWaiting(t.state)) continue;
      const threshold = thresholdFor(cfg, run.dagId, t.state);
      const forSeconds = (now - Date.parse(t.stateSince)) / 1000;
      if (forSeconds <= threshold) continue;
      const item = { kind: "task" as const, task_id: t.taskId, map_index: t.mapIndex, state: t.state, since: t.stateSince };
      out.push({
        ...item,
        dag_id: run.dagId,
        run_id: run.runId,
        for_seconds: forSeconds,
        threshold_seconds: threshold,
        reason: reason(t.state, forSeconds, threshold),
      });
    }
    const p95 = run.state === "running" ? p95Of(run.dagId) : null;
    if (p95 === null) continue;
    const since = run.startDate ?? run.stateSince;
    const forSeconds = (now - Date.parse(since)) / 1000;
    if (forSeconds > p95)
      out.push({
        kind: "run",
        dag_id: run.dagId,
        run_id: run.runId,
        task_id: null,
        map_index: null,
        state: "running",
        since,
        for_seconds: forSeconds,
        threshold_seconds: p95,
        reason: `running for ${Math.round(forSeconds)} s, longer than the DAG's p95 run duration (${Math.round(p95)} s)`,
      });
  }
  return out.sort((a, b) => b.for_seconds - a.for_seconds);
}

function reason(state: string, forSeconds: number, threshold: number): string {
  return `${state} for ${Math.round(forSeconds)} s (threshold ${threshold} s)`;
}
