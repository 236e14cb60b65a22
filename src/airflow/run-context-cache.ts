import { runKey } from "./row-keys.js";
import { numberField, text } from "./row-values.js";
import { LruCache } from "./state-cache.js";

/** What every task-instance event says about its DAG run. */
export interface RunContext {
  logicalDate: string | null;
  runType: string | null;
  dataIntervalStart: string | null;
  dataIntervalEnd: string | null;
  clearNumber: number | null;
}

/** The run context fields of a task-instance event, as the event names them. */
export interface RunContextFields {
  logical_date: string | null;
  run_type: string | null;
  data_interval_start: string | null;
  data_interval_end: string | null;
  clear_number: number | null;
}

const UNKNOWN_RUN: RunContext = { logicalDate: null, runType: null, dataIntervalStart: null, dataIntervalEnd: null, clearNumber: null };

/** Entries kept per DAG-run cache for a task-instance cache of `cacheSize`: DAG runs are few next to task instances. */
export function runCacheSize(cacheSize: number): number {
  return Math.max(1000, Math.ceil(cacheSize / 10));
}

/**
 * Run context by (dag_id, run_id): from dag_run rows of the stream, from events read back at
 * start, and from the runs under way read from PostgreSQL at start (see run-context.ts).
 */
export class RunContextCache {
  private readonly contexts: LruCache<RunContext>;

  constructor(cacheSize: number) {
    this.contexts = new LruCache(runCacheSize(cacheSize));
  }

  set(dagId: string, runId: string, ctx: RunContext): void {
    this.contexts.set(runKey(dagId, runId), ctx);
  }

  /** The run's context as an event read back from Kafka carried it: as of that position, unlike the one read from PostgreSQL at start. */
  seed(dagId: string, runId: string, event: Record<string, unknown>): void {
    const logicalDate = text(event.logical_date);
    const runType = text(event.run_type);
    // An event of a run the publisher did not know says nothing about it.
    if (logicalDate === null && runType === null) return;
    this.set(dagId, runId, {
      logicalDate,
      runType,
      dataIntervalStart: text(event.data_interval_start),
      dataIntervalEnd: text(event.data_interval_end),
      clearNumber: numberField(event.clear_number),
    });
  }

  /** The run's context; all null when the run is not known. */
  get(dagId: string | null, runId: string | null): RunContext {
    // A lookup only, so a concatenation: runKey's join() is for keys a cache keeps.
    return dagId !== null && runId !== null ? (this.contexts.get(`${dagId}\u0000${runId}`) ?? UNKNOWN_RUN) : UNKNOWN_RUN;
  }

  /** The fields a task-instance event carries for its run: all null when the run is not known. */
  fields(dagId: string | null, runId: string | null): RunContextFields {
    const ctx = this.get(dagId, runId);
    return {
      logical_date: ctx.logicalDate,
      run_type: ctx.runType,
      data_interval_start: ctx.dataIntervalStart,
      data_interval_end: ctx.dataIntervalEnd,
      clear_number: ctx.clearNumber,
    };
  }

  clear(): void {
    this.contexts.clear();
  }
}
