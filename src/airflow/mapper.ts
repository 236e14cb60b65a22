import type { ColumnValue, Relation, Row, RowChange, TxEvent } from "../decode/types.js";
import { UNCHANGED } from "../decode/types.js";
import { lsnHex16, formatLsn } from "../checkpoint/lsn.js";
import { SchemaError } from "../errors.js";
import type { Logger } from "../log.js";
import type { AirflowEvent, DagRunEvent, SourcePosition, TaskInstanceEvent } from "./events.js";
import { LruCache } from "./state-cache.js";

/**
 * Row changes of Airflow's tables -> typed events. Columns are found by name in the Relation
 * message, so Airflow 2.x and 3.x schemas both map, and columns Airflow adds later are ignored.
 *
 * A transition is a change of state or try number (task instances), of state or clear number (DAG
 * runs), or of map_index (mapped-task expansion rewrites the -1 row to index 0). Everything
 * else (3.x heartbeats, executor ids, pids) is churn and produces no event.
 */

type ChangeEvent = Extract<TxEvent, { kind: "change" }>;

export interface TxContext {
  xid: number;
  commitTime: string;
}

interface TiState {
  dagId: string;
  taskId: string;
  runId: string;
  mapIndex: number;
  state: string | null;
  tryNumber: number | null;
}

interface RunState {
  dagId: string;
  runId: string;
  state: string | null;
  clearNumber: number | null;
}

const TI_REQUIRED = ["dag_id", "task_id", "run_id", "state", "try_number"] as const;
const RUN_REQUIRED = ["id", "dag_id", "run_id", "state"] as const;

export class AirflowMapper {
  private readonly tis: LruCache<TiState>;
  private readonly runs: LruCache<RunState>;
  /** Relations already checked for the columns the mapping needs. */
  private readonly checked = new WeakSet<Relation>();

  constructor(
    private readonly schema: string,
    cacheSize: number,
    private readonly log: Logger,
  ) {
    this.tis = new LruCache(cacheSize);
    // DAG runs are few next to task instances.
    this.runs = new LruCache(Math.max(1000, Math.ceil(cacheSize / 10)));
  }

  /** The event for one row change, or null when it is not a transition or not an Airflow table. */
  map(ev: ChangeEvent, tx: TxContext): AirflowEvent | null {
    const change = ev.change;
    if (change.kind === "truncate") {
      const names = change.relations.filter((r) => r.schema === this.schema).map((r) => r.name);
      if (names.length > 0) {
        this.log.warn({ tables: names, xid: tx.xid }, "captured table truncated: no per-row events exist for a TRUNCATE");
        if (names.includes("task_instance")) this.tis.clear();
        if (names.includes("dag_run")) this.runs.clear();
      }
      return null;
    }
    const rel = change.relation;
    if (rel.schema !== this.schema) return null;
    if (rel.name === "task_instance") {
      this.check(rel, TI_REQUIRED);
      return this.taskInstance(change, ev, tx);
    }
    if (rel.name === "dag_run") {
      this.check(rel, RUN_REQUIRED);
      return this.dagRun(change, ev, tx);
    }
    return null;
  }

  private check(rel: Relation, required: readonly string[]): void {
    if (this.checked.has(rel)) return;
    const have = new Set(rel.columns.map((c) => c.name));
    const missing = required.filter((c) => !have.has(c));
    if (missing.length > 0) {
      throw new SchemaError(
        `${rel.schema}.${rel.name} has no column(s) ${missing.join(", ")}: this is not an Airflow 2.x/3.x schema the daemon knows. Check EVENTSTREAM_AIRFLOW_SCHEMA and the Airflow version`,
      );
    }
    this.checked.add(rel);
  }

  private taskInstance(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): TaskInstanceEvent | null {
    const rel = change.relation;
    if (change.kind === "delete") {
      const idKey = identityKey(rel, change.old);
      const known = this.tis.get(idKey);
      this.tis.delete(idKey);
      const row = change.old;
      return {
        type: "task_instance",
        op: "delete",
        dag_id: known?.dagId ?? str(row, "dag_id"),
        task_id: known?.taskId ?? str(row, "task_id"),
        run_id: known?.runId ?? str(row, "run_id"),
        map_index: known?.mapIndex ?? int(row, "map_index"),
        try_number: known?.tryNumber ?? int(row, "try_number"),
        max_tries: int(row, "max_tries"),
        state: known ? known.state : str(row, "state"),
        previous_state: known ? known.state : null,
        previous_state_known: known !== undefined,
        previous_try_number: known ? known.tryNumber : null,
        ti_id: str(row, "id"),
        start_date: str(row, "start_date"),
        end_date: str(row, "end_date"),
        duration: num(row, "duration"),
        hostname: str(row, "hostname"),
        operator: str(row, "operator"),
        queue: str(row, "queue"),
        pool: str(row, "pool"),
        source: position(ev, tx),
      };
    }

    const row = change.row;
    const next: TiState = {
      dagId: str(row, "dag_id") ?? "",
      taskId: str(row, "task_id") ?? "",
      runId: str(row, "run_id") ?? "",
      mapIndex: int(row, "map_index") ?? -1,
      state: str(row, "state"),
      tryNumber: int(row, "try_number"),
    };
    const newKey = identityKey(rel, row);
    let prev: TiState | undefined;
    let keyChanged = false;
    if (change.kind === "update") {
      // The old key is in the WAL only when the key changed (2.x map_index -1 -> 0; 3.x new id per try).
      const oldKey = change.old ? identityKey(rel, change.old) : newKey;
      keyChanged = oldKey !== newKey;
      prev = this.tis.get(oldKey);
      if (keyChanged) this.tis.delete(oldKey);
      if (prev && !keyChanged && prev.state === next.state && prev.tryNumber === next.tryNumber && prev.mapIndex === next.mapIndex) {
        return null; // churn: heartbeat, executor id, pid, ...
      }
    }
    this.tis.set(newKey, next);
    const op = change.kind;
    return {
      type: "task_instance",
      op,
      dag_id: next.dagId,
      task_id: next.taskId,
      run_id: next.runId,
      map_index: next.mapIndex,
      try_number: next.tryNumber,
      max_tries: int(row, "max_tries"),
      state: next.state,
      previous_state: prev ? prev.state : null,
      // An insert has no previous state, and that is known.
      previous_state_known: op === "insert" || prev !== undefined,
      previous_try_number: prev ? prev.tryNumber : null,
      ti_id: str(row, "id"),
      start_date: str(row, "start_date"),
      end_date: str(row, "end_date"),
      duration: num(row, "duration"),
      hostname: str(row, "hostname"),
      operator: str(row, "operator"),
      queue: str(row, "queue"),
      pool: str(row, "pool"),
      source: position(ev, tx),
    };
  }

  private dagRun(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): DagRunEvent | null {
    if (change.kind === "delete") {
      const id = int(change.old, "id");
      const key = String(id);
      const known = this.runs.get(key);
      this.runs.delete(key);
      if (id === null) return null;
      return {
        type: "dag_run",
        op: "delete",
        dag_id: known?.dagId ?? str(change.old, "dag_id") ?? "",
        run_id: known?.runId ?? str(change.old, "run_id") ?? "",
        dag_run_id: id,
        state: known ? known.state : null,
        previous_state: known ? known.state : null,
        previous_state_known: known !== undefined,
        run_type: null,
        logical_date: null,
        data_interval_start: null,
        data_interval_end: null,
        start_date: null,
        end_date: null,
        clear_number: known ? known.clearNumber : null,
        source: position(ev, tx),
      };
    }
    const row = change.row;
    const id = int(row, "id") ?? 0;
    const key = String(id);
    const next: RunState = {
      dagId: str(row, "dag_id") ?? "",
      runId: str(row, "run_id") ?? "",
      state: str(row, "state"),
      clearNumber: int(row, "clear_number"),
    };
    const prev = this.runs.get(key);
    if (change.kind === "update" && prev && prev.state === next.state && prev.clearNumber === next.clearNumber && prev.runId === next.runId) {
      return null;
    }
    this.runs.set(key, next);
    return {
      type: "dag_run",
      op: change.kind,
      dag_id: next.dagId,
      run_id: next.runId,
      dag_run_id: id,
      state: next.state,
      previous_state: prev ? prev.state : null,
      previous_state_known: change.kind === "insert" || prev !== undefined,
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

/** The replica identity columns' values, joined: how PostgreSQL names the row in UPDATE/DELETE. */
function identityKey(rel: Relation, row: Row): string {
  let key = "";
  for (const col of rel.columns) {
    if (!col.isKey) continue;
    const v = row[col.name];
    key += `${v === undefined || v === UNCHANGED ? "" : String(v)}\u0000`;
  }
  return key;
}

function position(ev: ChangeEvent, tx: TxContext): SourcePosition {
  return {
    commit_lsn: formatLsn(ev.commitLsn),
    xid: tx.xid,
    index: ev.index,
    position: `${lsnHex16(ev.commitLsn)}-${ev.index.toString(16).toUpperCase().padStart(8, "0")}`,
    commit_time: tx.commitTime,
  };
}

function value(row: Row, name: string): ColumnValue | undefined {
  const v = row[name];
  return v === UNCHANGED ? undefined : v;
}

function str(row: Row, name: string): string | null {
  const v = value(row, name);
  if (v === undefined || v === null) return null;
  return typeof v === "string" ? v : typeof v === "object" && !Buffer.isBuffer(v) ? JSON.stringify(v) : String(v);
}

function int(row: Row, name: string): number | null {
  const v = value(row, name);
  if (typeof v === "number") return Math.trunc(v);
  if (typeof v === "string" && v !== "" && Number.isFinite(Number(v))) return Math.trunc(Number(v));
  return null;
}

function num(row: Row, name: string): number | null {
  const v = value(row, name);
  if (typeof v === "number") return v;
  if (typeof v === "string" && v !== "" && Number.isFinite(Number(v))) return Number(v);
  return null;
}
