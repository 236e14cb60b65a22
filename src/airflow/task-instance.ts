import type { Row, RowChange } from "../decode/types.js";
import { position, type ChangeEvent, type TxContext } from "./envelope.js";
import type { TaskInstanceEvent } from "./events.js";
import type { RunContextCache } from "./run-context-cache.js";
import { RowKeys, tiKey } from "./row-keys.js";
import { int, internState, num, numberField, str, text } from "./row-values.js";
import { LruCache } from "./state-cache.js";
import { NO_ENTRY, TiStateTable, type TiState, type TiValues } from "./ti-states.js";

type RowWrite = Exclude<RowChange, { kind: "truncate" | "delete" }>;
type RowDelete = Extract<RowChange, { kind: "delete" }>;

/*
 * What the cache keeps per task instance (TiState): as little as the transition check and a later
 * DELETE need, because the cache is most of the daemon's live memory (EVENTSTREAM_STATE_CACHE_SIZE
 * entries, 25,000 by default), kept outside the JavaScript heap (ti-states.ts). The names live
 * only in `key` (dag, task, run, map index joined by NUL, which PostgreSQL text cannot contain),
 * split again on the rare DELETE.
 */

function tiState(row: Row): TiState {
  const mapIndex = int(row, "map_index") ?? -1;
  const key = tiKey(str(row, "dag_id") ?? "", str(row, "task_id") ?? "", str(row, "run_id") ?? "", mapIndex);
  return { key, mapIndex, state: internState(str(row, "state")), tryNumber: int(row, "try_number") };
}

export interface TaskInstanceOptions {
  /** Rows whose last state is remembered. */
  cacheSize: number;
}

/** task_instance row changes -> task_instance events; a transition is a change of state, try number or map_index. */
export class TaskInstanceMapper {
  /** Last state per task instance, by primary key (2.x: the composite key; 3.x: id; see RowKeys). */
  private readonly tis: TiStateTable;
  /**
   * 3.x only: the last published state by name, from seed(), for a row whose id changed after its
   * last event (see seed). Consulted when the id is not known; dropped once the row is mapped.
   */
  private readonly seededByName: LruCache<TiState>;
  private readonly keys = new RowKeys();
  /** For the metrics: updates whose previous state the cache had, or not, and churn dropped. */
  readonly counts = { hits: 0, misses: 0, churn: 0 };

  constructor(
    opts: TaskInstanceOptions,
    private readonly contexts: RunContextCache,
  ) {
    this.tis = new TiStateTable(opts.cacheSize);
    this.seededByName = new LruCache(opts.cacheSize);
  }

  /** Task instances whose last state is remembered. */
  get remembered(): number {
    return this.tis.size;
  }

  /** A task_instance event read back from Kafka (see AirflowMapper.seed). */
  seed(event: Record<string, unknown>): void {
    const dagId = text(event.dag_id);
    const taskId = text(event.task_id);
    const runId = text(event.run_id);
    const mapIndex = numberField(event.map_index);
    if (dagId === null || taskId === null || runId === null || mapIndex === null) return;
    const name = tiKey(dagId, taskId, runId, mapIndex);
    // 3.x rows are keyed by id (see RowKeys); 2.x by the name.
    const id = text(event.ti_id);
    const key = id ?? name;
    this.seededByName.delete(name);
    if (event.op === "delete") {
      this.tis.delete(key);
      return;
    }
    const state: TiState = { key: name, mapIndex, state: internState(text(event.state)), tryNumber: numberField(event.try_number) };
    this.tis.set(key, state);
    if (id !== null) {
      // A retry or clear gives the row a new id after the event carrying the old one was published.
      this.seededByName.set(name, state);
    }
    this.contexts.seed(dagId, runId, event);
  }

  map(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): TaskInstanceEvent | null {
    return change.kind === "delete" ? this.deleted(change, ev, tx) : this.written(change, ev, tx);
  }

  /** The try a task instance named as XComs name it is on, if known. */
  tryOf(name: string): number | null {
    // By name: on 3.x a row's key is its id, and the table indexes names too (ti-states.ts).
    return this.tis.tryByName(name) ?? null;
  }

  /** Forget every task instance (a TRUNCATE). */
  clear(): void {
    this.tis.clear();
    this.seededByName.clear();
  }

  private deleted(change: RowDelete, ev: ChangeEvent, tx: TxContext): TaskInstanceEvent {
    const idKey = this.keys.rowKey(change.relation, change.old);
    const cached = this.tis.get(idKey);
    this.tis.delete(idKey);
    const row = change.old;
    // REPLICA IDENTITY FULL: the deleted row itself, exact; else what memory holds, if anything.
    const known = change.oldKind === "full" ? tiState(row) : cached;
    const [dagId, taskId, runId] = known ? known.key.split("\u0000") : [str(row, "dag_id"), str(row, "task_id"), str(row, "run_id")];
    return {
      type: "task_instance",
      op: "delete",
      dag_id: dagId ?? null,
      task_id: taskId ?? null,
      run_id: runId ?? null,
      map_index: known?.mapIndex ?? int(row, "map_index"),
      try_number: known?.tryNumber ?? int(row, "try_number"),
      max_tries: int(row, "max_tries"),
      state: known ? known.state : str(row, "state"),
      previous_state: known ? known.state : null,
      previous_state_known: known !== undefined,
      previous_try_number: known ? known.tryNumber : null,
      ...detailFields(row),
      ...this.contexts.fields(dagId ?? null, runId ?? null),
      source: position(ev, tx),
    };
  }

  /**
   * A row read by a snapshot (src/snapshot/), as of `ev`'s position: always an event, and the row's
   * state from then on; previous_state is the state remembered for the row, if any.
   */
  snapshot(change: Extract<RowChange, { kind: "insert" }>, ev: ChangeEvent, tx: TxContext): TaskInstanceEvent {
    const row = change.row;
    const rel = change.relation;
    const name = tiKey(str(row, "dag_id") ?? "", str(row, "task_id") ?? "", str(row, "run_id") ?? "", int(row, "map_index") ?? -1);
    const natural = this.keys.keyOf(rel).natural;
    const key = natural ? name : this.keys.rowKey(rel, row);
    const prev = this.tis.get(key) ?? (natural ? undefined : this.seededByName.get(name));
    const next: TiState = {
      key: name,
      mapIndex: int(row, "map_index") ?? -1,
      state: internState(str(row, "state")),
      tryNumber: int(row, "try_number"),
    };
    this.tis.set(key, next);
    if (!natural) this.seededByName.delete(name);
    return this.event(
      "snapshot",
      row,
      str(row, "dag_id") ?? "",
      str(row, "task_id") ?? "",
      str(row, "run_id") ?? "",
      next,
      prev,
      prev !== undefined,
      ev,
      tx,
    );
  }

  /** An insert or update: an event when it is a transition, null for churn. */
  private written(change: RowWrite, ev: ChangeEvent, tx: TxContext): TaskInstanceEvent | null {
    const row = change.row;
    const dagId = str(row, "dag_id") ?? "";
    const taskId = str(row, "task_id") ?? "";
    const runId = str(row, "run_id") ?? "";
    const mapIndex = int(row, "map_index") ?? -1;
    const name = tiKey(dagId, taskId, runId, mapIndex);
    const next: TiState = { key: name, mapIndex, state: internState(str(row, "state")), tryNumber: int(row, "try_number") };
    const prev = this.remember(change, name, next);
    if (prev && prev.state === next.state && prev.tryNumber === next.tryNumber && prev.mapIndex === next.mapIndex) {
      // Churn: heartbeat, executor id, pid, ... and, on 3.x, the new id a retry or clear gives the
      // row, which Airflow writes as a second UPDATE after the state change in the same transaction.
      this.counts.churn++;
      return null;
    }
    // An insert has no previous state, and that is known.
    return this.event(change.kind, row, dagId, taskId, runId, next, prev, change.kind === "insert" || prev !== undefined, ev, tx);
  }

  /**
   * One object literal in the event's field order (the order detailFields and RunContextFields
   * give a delete): no intermediate objects spread into it, since this runs once per event.
   */
  private event(
    op: "insert" | "update" | "snapshot",
    row: Row,
    dagId: string,
    taskId: string,
    runId: string,
    next: TiValues,
    prev: TiValues | undefined,
    known: boolean,
    ev: ChangeEvent,
    tx: TxContext,
  ): TaskInstanceEvent {
    const run = this.contexts.get(dagId, runId);
    return {
      type: "task_instance",
      op,
      dag_id: dagId,
      task_id: taskId,
      run_id: runId,
      map_index: next.mapIndex,
      try_number: next.tryNumber,
      max_tries: int(row, "max_tries"),
      state: next.state,
      previous_state: prev ? prev.state : null,
      previous_state_known: known,
      previous_try_number: prev ? prev.tryNumber : null,
      ti_id: str(row, "id"),
      start_date: str(row, "start_date"),
      end_date: str(row, "end_date"),
      duration: num(row, "duration"),
      hostname: str(row, "hostname"),
      operator: str(row, "operator"),
      queue: str(row, "queue"),
      pool: str(row, "pool"),
      logical_date: run.logicalDate,
      run_type: run.runType,
      data_interval_start: run.dataIntervalStart,
      data_interval_end: run.dataIntervalEnd,
      clear_number: run.clearNumber,
      source: position(ev, tx),
    };
  }

  /**
   * Records `next` as the row's state and returns the state before it, if known. When the row is
   * the one the cache holds under the same key and name (most updates), the held entry is
   * overwritten in place and its old values come back as a new (young) object.
   */
  private remember(change: RowWrite, name: string, next: TiState): TiValues | undefined {
    const rel = change.relation;
    const natural = this.keys.keyOf(rel).natural;
    const newKey = natural ? name : this.keys.rowKey(rel, change.row);
    let prev: TiValues | undefined;
    // The row's entry under its key, when the update keeps the key (most do).
    let held = NO_ENTRY;
    if (change.kind === "update") {
      // Under DEFAULT the old key is in the WAL only when the key changed (2.x map_index -1 -> 0;
      // 3.x new id per try); under FULL the whole old row always is.
      const oldKey = change.old ? this.keys.rowKey(rel, change.old) : newKey;
      const e = this.tis.find(oldKey);
      if (e !== NO_ENTRY) {
        prev = this.tis.values(e);
        if (oldKey === newKey) held = e;
        else this.tis.removeEntry(e);
      }
      if (prev === undefined && !natural) prev = this.seededByName.get(name);
      if (prev === undefined) this.counts.misses++;
      else this.counts.hits++;
      if (change.oldKind === "full" && change.old) prev = tiState(change.old);
    }
    // find() made it the newest entry already.
    if (held !== NO_ENTRY) this.tis.writeAt(held, next);
    else this.tis.set(newKey, next);
    if (!natural) this.seededByName.delete(name);
    return prev;
  }
}

/** The columns a task-instance event copies as they are, in the event's field order (as `event` writes them too). */
function detailFields(row: Row) {
  return {
    ti_id: str(row, "id"),
    start_date: str(row, "start_date"),
    end_date: str(row, "end_date"),
    duration: num(row, "duration"),
    hostname: str(row, "hostname"),
    operator: str(row, "operator"),
    queue: str(row, "queue"),
    pool: str(row, "pool"),
  };
}
