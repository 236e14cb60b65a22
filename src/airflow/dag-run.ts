import type { Row, RowChange } from "../decode/types.js";
import { position, type ChangeEvent, type TxContext } from "./envelope.js";
import type { DagRunEvent } from "./events.js";
import { runCacheSize, type RunContextCache } from "./run-context-cache.js";
import { int, internState, numberField, str, text } from "./row-values.js";
import { LruCache } from "./state-cache.js";

type RowWrite = Exclude<RowChange, { kind: "truncate" | "delete" }>;
type RowDelete = Extract<RowChange, { kind: "delete" }>;

interface RunState {
  dagId: string;
  runId: string;
  state: string | null;
  clearNumber: number | null;
}

function runState(row: Row): RunState {
  return {
    dagId: str(row, "dag_id") ?? "",
    runId: str(row, "run_id") ?? "",
    state: internState(str(row, "state")),
    clearNumber: int(row, "clear_number"),
  };
}

/**
 * dag_run row changes -> dag_run events; a transition is a change of state, clear number or run id.
 * Every row also refreshes its run's context, which task-instance events carry.
 */
export class DagRunMapper {
  /** Last state per DAG run, by dag_run.id. */
  private readonly runs: LruCache<RunState>;

  constructor(
    cacheSize: number,
    private readonly contexts: RunContextCache,
  ) {
    this.runs = new LruCache(runCacheSize(cacheSize));
  }

  /** A dag_run event read back from Kafka (see AirflowMapper.seed). */
  seed(event: Record<string, unknown>): void {
    if (typeof event.dag_run_id !== "number") return;
    const key = String(event.dag_run_id);
    if (event.op === "delete") {
      this.runs.delete(key);
      return;
    }
    const dagId = text(event.dag_id);
    const runId = text(event.run_id);
    if (dagId === null || runId === null) return;
    this.runs.set(key, { dagId, runId, state: internState(text(event.state)), clearNumber: numberField(event.clear_number) });
    this.contexts.seed(dagId, runId, event);
  }

  map(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): DagRunEvent | null {
    return change.kind === "delete" ? this.deleted(change, ev, tx) : this.written(change, ev, tx);
  }

  /** A row read by a snapshot (src/snapshot/): always an event, and the run's state and context from then on. */
  snapshot(change: Extract<RowChange, { kind: "insert" }>, ev: ChangeEvent, tx: TxContext): DagRunEvent {
    return this.written(change, ev, tx, true)!;
  }

  /** Forget every DAG run (a TRUNCATE); their contexts are the caller's to clear. */
  clear(): void {
    this.runs.clear();
  }

  private deleted(change: RowDelete, ev: ChangeEvent, tx: TxContext): DagRunEvent | null {
    const old = change.old;
    const id = int(old, "id");
    const key = String(id);
    const cached = this.runs.get(key);
    this.runs.delete(key);
    if (id === null) return null;
    // REPLICA IDENTITY FULL: the deleted row itself, every field exact. Under DEFAULT the old
    // tuple holds the id alone, so the fields read from it below come out null.
    const known = change.oldKind === "full" ? runState(old) : cached;
    return {
      type: "dag_run",
      op: "delete",
      dag_id: known?.dagId ?? str(old, "dag_id") ?? "",
      run_id: known?.runId ?? str(old, "run_id") ?? "",
      dag_run_id: id,
      state: known ? known.state : null,
      previous_state: known ? known.state : null,
      previous_state_known: known !== undefined,
      run_type: str(old, "run_type"),
      logical_date: str(old, "logical_date") ?? str(old, "execution_date"),
      data_interval_start: str(old, "data_interval_start"),
      data_interval_end: str(old, "data_interval_end"),
      start_date: str(old, "start_date"),
      end_date: str(old, "end_date"),
      clear_number: known ? known.clearNumber : null,
      source: position(ev, tx),
    };
  }

  /** An insert or update: an event when it is a transition, null for churn. */
  private written(change: RowWrite, ev: ChangeEvent, tx: TxContext, snapshot = false): DagRunEvent | null {
    const row = change.row;
    const id = int(row, "id") ?? 0;
    const key = String(id);
    const next = runState(row);
    const prev = change.kind === "update" && change.oldKind === "full" && change.old ? runState(change.old) : this.runs.get(key);
    const op = snapshot ? "snapshot" : change.kind;
    // The context changes rarely, but every row carries it: keep it current even on churn.
    this.contexts.set(next.dagId, next.runId, {
      logicalDate: str(row, "logical_date") ?? str(row, "execution_date"),
      runType: str(row, "run_type"),
      dataIntervalStart: str(row, "data_interval_start"),
      dataIntervalEnd: str(row, "data_interval_end"),
      clearNumber: next.clearNumber,
    });
    if (
      snapshot === false &&
      change.kind === "update" &&
      prev &&
      prev.state === next.state &&
      prev.clearNumber === next.clearNumber &&
      prev.runId === next.runId
    ) {
      return null;
    }
    this.runs.set(key, next);
    return {
      type: "dag_run",
      op,
      dag_id: next.dagId,
      run_id: next.runId,
      dag_run_id: id,
      state: next.state,
      previous_state: prev ? prev.state : null,
      previous_state_known: op === "insert" || prev !== undefined,
      run_type: str(row, "run_type"),
      logical_date: str(row, "logical_date") ?? str(row, "execution_date"),
      data_interval_start: str(row, "data_interval_start"),
      data_interval_end: str(row, "data_interval_end"),
      start_date: str(row, "start_date"),
      end_date: str(row, "end_date"),
      clear_number: next.clearNumber,
      source: position(ev, tx),
    };
  }
}
