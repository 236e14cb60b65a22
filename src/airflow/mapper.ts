import type { ColumnValue, Relation, Row, RowChange, TxEvent } from "../decode/types.js";
import { UNCHANGED } from "../decode/types.js";
import { formatLsn } from "../lsn.js";
import { formatPosition } from "../checkpoint/position.js";
import { SchemaError } from "../errors.js";
import type { Logger } from "../log.js";
import { NotificationValue, type StreamEvent, type DagRunEvent, type NotificationEvent, type SourcePosition, type TableTruncatedEvent, type TaskInstanceEvent } from "./events.js";
import { LruCache } from "./state-cache.js";

/**
 * Row changes of Airflow's tables -> typed events. Columns are found by name in the Relation
 * message, so Airflow 2.x and 3.x schemas both map, and columns Airflow adds later are ignored.
 *
 * A transition is a change of state or try number (task instances), of state or clear number (DAG
 * runs), or of map_index (mapped-task expansion rewrites the -1 row to index 0). Everything
 * else (3.x heartbeats, executor ids, pids) is churn and produces no event.
 *
 * The previous state comes from the WAL when it carries the old row (REPLICA IDENTITY FULL: an
 * UPDATE's or DELETE's 'O' tuple), whatever EVENTSTREAM_REPLICA_IDENTITY says: exact, also for a
 * row's first change after a start. Otherwise (DEFAULT: no old row, or only the old key) it comes
 * from a bounded memory of the last state per row, which a start or an eviction empties.
 */

type ChangeEvent = Extract<TxEvent, { kind: "change" }>;

export interface TxContext {
  xid: number;
  commitTime: string;
}

/**
 * What the cache keeps per task instance: as little as the transition check and a later DELETE
 * need, because the cache is most of the daemon's live memory (100,000 entries by default). The
 * names live only in `key` (dag, task, run, map index joined by NUL, which PostgreSQL text cannot
 * contain), split again on the rare DELETE; `state` is one of the interned constants below, so
 * an entry never pins the decoded row's own strings.
 */
interface TiState {
  key: string;
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

/** What every task-instance event says about its DAG run. */
export interface RunContext {
  logicalDate: string | null;
  runType: string | null;
  dataIntervalStart: string | null;
  dataIntervalEnd: string | null;
  clearNumber: number | null;
}

export interface MapperOptions {
  /** Schema holding Airflow's tables. */
  schema: string;
  /** Rows whose last state is remembered. */
  cacheSize: number;
  /** XCom key whose values become notifications; null: XComs are ignored. */
  xcomKey: string | null;
  /** Largest raw value carried by a notification that failed validation. */
  notificationRawMaxBytes: number;
  /** EVENTSTREAM_REPLICA_IDENTITY: with "full", a captured table seen without FULL is logged once. */
  replicaIdentity?: "default" | "full";
}

const UNKNOWN_RUN: RunContext = { logicalDate: null, runType: null, dataIntervalStart: null, dataIntervalEnd: null, clearNumber: null };

/** Airflow's task-instance and DAG-run states (2.x and 3.x), shared by every cache entry. */
const STATES = new Map(
  [
    "scheduled", "queued", "running", "success", "failed", "up_for_retry", "up_for_reschedule",
    "upstream_failed", "skipped", "removed", "restarting", "deferred", "shutdown", "sensing",
  ].map((st) => [st, st] as const),
);

function internState(state: string | null): string | null {
  return state === null ? null : (STATES.get(state) ?? state);
}

const NATURAL_KEY = ["dag_id", "task_id", "run_id", "map_index"];

const TI_REQUIRED = ["dag_id", "task_id", "run_id", "state", "try_number"] as const;
const RUN_REQUIRED = ["id", "dag_id", "run_id", "state"] as const;
const XCOM_REQUIRED = ["dag_id", "task_id", "run_id", "key", "value"] as const;

export class AirflowMapper {
  private readonly schema: string;
  /** Last state per task instance, by primary key (2.x: the composite key; 3.x: id; see rowKeyColumns). */
  private readonly tis: LruCache<TiState>;
  /** 3.x only: latest try per task instance by (dag, task, run, map index), as XComs name it. */
  private readonly tries: LruCache<number | null>;
  /** Last state per DAG run, by dag_run.id. */
  private readonly runs: LruCache<RunState>;
  /** Run context by (dag_id, run_id). */
  private readonly contexts: LruCache<RunContext>;
  /**
   * 3.x only: the last published state by name, from seed(), for a row whose id changed after its
   * last event (see seed). Consulted when the id is not known; dropped once the row is mapped.
   */
  private readonly seededByName: LruCache<TiState>;
  /** Relations already checked for the columns the mapping needs. */
  private readonly checked = new WeakSet<Relation>();
  /**
   * The columns naming a row of each relation (see rowKeyColumns), and whether they are a task
   * instance's natural key (2.x), worked out once per Relation message: rowKey runs for every row.
   */
  private readonly keyColumns = new WeakMap<Relation, { cols: string[]; natural: boolean }>();
  /** TRUNCATEs of captured tables seen since the start, for the log. */
  private truncations = 0;

  constructor(
    private readonly opts: MapperOptions,
    private readonly log: Logger,
  ) {
    this.schema = opts.schema;
    this.tis = new LruCache(opts.cacheSize);
    this.tries = new LruCache(opts.cacheSize);
    this.seededByName = new LruCache(opts.cacheSize);
    const runs = runCacheSize(opts.cacheSize);
    this.runs = new LruCache(runs);
    this.contexts = new LruCache(runs);
  }

  /**
   * The last state of a row as published before this start (read back from Kafka, see
   * KafkaSink.readBack), as if the change behind `event` had just been mapped: a later change of
   * that row is then a transition, or churn, as it was for the process that published the event.
   * Events must come in position order per row (a partition's order) and only from before the
   * position the replay starts at (the slot's confirmed position): replayed changes then update
   * the state in order, and the state is never newer than the change being mapped. Anything that
   * is not an event of this version's shape is ignored.
   */
  seed(event: Record<string, unknown>): void {
    const type = event.type;
    const op = event.op;
    if (type === "task_instance") {
      const dagId = text(event.dag_id);
      const taskId = text(event.task_id);
      const runId = text(event.run_id);
      const mapIndex = typeof event.map_index === "number" ? event.map_index : null;
      if (dagId === null || taskId === null || runId === null || mapIndex === null) return;
      const name = tiKey(dagId, taskId, runId, mapIndex);
      // 3.x rows are keyed by id (see rowKeyColumns); 2.x by the name.
      const id = text(event.ti_id);
      const key = id ?? name;
      this.seededByName.delete(name);
      if (op === "delete") {
        this.tis.delete(key);
        return;
      }
      const state: TiState = { key: name, mapIndex, state: internState(text(event.state)), tryNumber: typeof event.try_number === "number" ? event.try_number : null };
      this.tis.set(key, state);
      if (id !== null) {
        // A retry or clear gives the row a new id after the event carrying the old one was published.
        this.seededByName.set(name, state);
        if (this.opts.xcomKey !== null) this.tries.set(name, state.tryNumber);
      }
      this.seedContext(dagId, runId, event);
      return;
    }
    if (type === "dag_run" && typeof event.dag_run_id === "number") {
      const key = String(event.dag_run_id);
      if (op === "delete") {
        this.runs.delete(key);
        return;
      }
      const dagId = text(event.dag_id);
      const runId = text(event.run_id);
      if (dagId === null || runId === null) return;
      this.runs.set(key, { dagId, runId, state: internState(text(event.state)), clearNumber: typeof event.clear_number === "number" ? event.clear_number : null });
      this.seedContext(dagId, runId, event);
    }
  }

  /** The run's context as the event carried it: as of that position, unlike the one read from PostgreSQL at start. */
  private seedContext(dagId: string, runId: string, event: Record<string, unknown>): void {
    const logicalDate = text(event.logical_date);
    const runType = text(event.run_type);
    // An event of a run the publisher did not know says nothing about it.
    if (logicalDate === null && runType === null) return;
    this.contexts.set(runKey(dagId, runId), {
      logicalDate,
      runType,
      dataIntervalStart: text(event.data_interval_start),
      dataIntervalEnd: text(event.data_interval_end),
      clearNumber: typeof event.clear_number === "number" ? event.clear_number : null,
    });
  }

  /** Context of runs that started before the stream did (read once at start, see src/source/airflow-rows.ts). */
  seedRunContext(dagId: string, runId: string, ctx: RunContext): void {
    this.contexts.set(runKey(dagId, runId), ctx);
  }

  /** The event for one row change, or null when it is not a transition or not an Airflow table. */
  map(ev: ChangeEvent, tx: TxContext): StreamEvent | null {
    const change = ev.change;
    if (change.kind === "truncate") return this.truncate(change, ev, tx);
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
    if (rel.name === "xcom" && this.opts.xcomKey !== null) {
      this.check(rel, XCOM_REQUIRED);
      return this.xcom(change, ev, tx);
    }
    return null;
  }

  /**
   * A TRUNCATE of captured tables: one event saying all their state is void, since no per-row
   * events exist for it. The memory of those tables goes with it: a row written anew after it is
   * new (an insert, or an update whose previous state is unknown), never a transition from a
   * state that no longer exists.
   */
  private truncate(change: Extract<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): TableTruncatedEvent | null {
    const tables: TableTruncatedEvent["tables"] = [];
    for (const r of change.relations) {
      if (r.schema !== this.schema) continue;
      if (r.name === "task_instance" || r.name === "dag_run" || (r.name === "xcom" && this.opts.xcomKey !== null)) tables.push(r.name);
    }
    if (tables.length === 0) return null;
    if (tables.includes("task_instance")) {
      this.tis.clear();
      this.tries.clear();
      this.seededByName.clear();
    }
    if (tables.includes("dag_run")) {
      this.runs.clear();
      this.contexts.clear();
    }
    this.truncations++;
    this.log.warn({ tables, xid: tx.xid, truncations_total: this.truncations }, "captured table(s) truncated: publishing table_truncated to every partition");
    return { type: "table_truncated", tables, schema: this.schema, source: position(ev, tx) };
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
    if (this.opts.replicaIdentity === "full" && rel.name !== "xcom" && rel.replicaIdentity !== "f") {
      // The Relation message describes the table as of the WAL being decoded: changes written
      // before the start's ALTER TABLE, or after someone set the table back.
      this.log.warn(
        { table: `${rel.schema}.${rel.name}`, replicaIdentity: rel.replicaIdentity },
        "EVENTSTREAM_REPLICA_IDENTITY is full but this part of the WAL has the table without it: previous_state comes from memory for its changes",
      );
    }
    this.checked.add(rel);
  }

  /** The columns naming a row of this relation; `natural`: 2.x task instances, named by (dag, task, run, map index), the same string as tiKey, kept once. */
  private keyOf(rel: Relation): { cols: string[]; natural: boolean } {
    let key = this.keyColumns.get(rel);
    if (key === undefined) {
      const cols = rowKeyColumns(rel);
      key = { cols, natural: rel.name === "task_instance" && cols.length === NATURAL_KEY.length && NATURAL_KEY.every((k) => cols.includes(k)) };
      this.keyColumns.set(rel, key);
    }
    return key;
  }

  /** The row's primary-key values, joined (flat, see tiKey): the key of the state caches. */
  private rowKey(rel: Relation, row: Row): string {
    const { cols, natural } = this.keyOf(rel);
    if (natural) {
      return tiKey(str(row, "dag_id") ?? "", str(row, "task_id") ?? "", str(row, "run_id") ?? "", int(row, "map_index") ?? -1);
    }
    const parts: string[] = [];
    for (const name of cols) {
      const v = row[name];
      parts.push(v === undefined || v === UNCHANGED ? "" : String(v));
    }
    return parts.length === 1 ? parts[0]! : parts.join("\u0000");
  }

  private taskInstance(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): TaskInstanceEvent | null {
    const rel = change.relation;
    if (change.kind === "delete") {
      const idKey = this.rowKey(rel, change.old);
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
        ti_id: str(row, "id"),
        start_date: str(row, "start_date"),
        end_date: str(row, "end_date"),
        duration: num(row, "duration"),
        hostname: str(row, "hostname"),
        operator: str(row, "operator"),
        queue: str(row, "queue"),
        pool: str(row, "pool"),
        ...this.runContextFields(dagId ?? null, runId ?? null),
        source: position(ev, tx),
      };
    }

    const row = change.row;
    const dagId = str(row, "dag_id") ?? "";
    const taskId = str(row, "task_id") ?? "";
    const runId = str(row, "run_id") ?? "";
    const mapIndex = int(row, "map_index") ?? -1;
    const name = tiKey(dagId, taskId, runId, mapIndex);
    const next: TiState = { key: name, mapIndex, state: internState(str(row, "state")), tryNumber: int(row, "try_number") };
    const natural = this.keyOf(rel).natural;
    const newKey = natural ? name : this.rowKey(rel, row);
    let prev: TiState | undefined;
    if (change.kind === "update") {
      // Under DEFAULT the old key is in the WAL only when the key changed (2.x map_index -1 -> 0;
      // 3.x new id per try); under FULL the whole old row always is.
      const oldKey = change.old ? this.rowKey(rel, change.old) : newKey;
      prev = this.tis.get(oldKey);
      if (prev === undefined && !natural) prev = this.seededByName.get(name);
      if (oldKey !== newKey) this.tis.delete(oldKey);
      if (change.oldKind === "full" && change.old) prev = tiState(change.old);
    }
    this.tis.set(newKey, next);
    if (!natural) this.seededByName.delete(name);
    // XComs name a task instance by (dag, task, run, map index): on 2.x that is the cache's key
    // already; on 3.x (keyed by id) a second, smaller map answers it.
    if (!natural && this.opts.xcomKey !== null) this.tries.set(name, next.tryNumber);
    if (prev && prev.state === next.state && prev.tryNumber === next.tryNumber && prev.mapIndex === next.mapIndex) {
      // Churn: heartbeat, executor id, pid, ... and, on 3.x, the new id a retry or clear gives the
      // row, which Airflow writes as a second UPDATE after the state change in the same transaction.
      return null;
    }
    const op = change.kind;
    return {
      type: "task_instance",
      op,
      dag_id: dagId,
      task_id: taskId,
      run_id: runId,
      map_index: mapIndex,
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
      ...this.runContextFields(dagId, runId),
      source: position(ev, tx),
    };
  }

  private tryOf(name: string): number | null {
    const t = this.tries.get(name);
    return t !== undefined ? t : (this.tis.get(name)?.tryNumber ?? null);
  }

  private runContextFields(dagId: string | null, runId: string | null) {
    const ctx = dagId !== null && runId !== null ? (this.contexts.get(runKey(dagId, runId)) ?? UNKNOWN_RUN) : UNKNOWN_RUN;
    return {
      logical_date: ctx.logicalDate,
      run_type: ctx.runType,
      data_interval_start: ctx.dataIntervalStart,
      data_interval_end: ctx.dataIntervalEnd,
      clear_number: ctx.clearNumber,
    };
  }

  private dagRun(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): DagRunEvent | null {
    if (change.kind === "delete") {
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
    const row = change.row;
    const id = int(row, "id") ?? 0;
    const key = String(id);
    const next = runState(row);
    const prev = change.kind === "update" && change.oldKind === "full" && change.old ? runState(change.old) : this.runs.get(key);
    // The context changes rarely, but every row carries it: keep it current even on churn.
    this.contexts.set(runKey(next.dagId, next.runId), {
      logicalDate: str(row, "logical_date") ?? str(row, "execution_date"),
      runType: str(row, "run_type"),
      dataIntervalStart: str(row, "data_interval_start"),
      dataIntervalEnd: str(row, "data_interval_end"),
      clearNumber: next.clearNumber,
    });
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

  /** A task's notification: an XCom written under the configured key. Setting an XCom is DELETE + INSERT. */
  private xcom(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): NotificationEvent | null {
    if (change.kind === "delete") return null;
    const row = change.row;
    const key = str(row, "key");
    if (key === null || key !== this.opts.xcomKey) return null;
    const dagId = str(row, "dag_id") ?? "";
    const taskId = str(row, "task_id") ?? "";
    const runId = str(row, "run_id") ?? "";
    const mapIndex = int(row, "map_index") ?? -1;
    const base = {
      type: "notification" as const,
      dag_id: dagId,
      task_id: taskId,
      run_id: runId,
      map_index: mapIndex,
      try_number: this.tryOf(tiKey(dagId, taskId, runId, mapIndex)),
      logical_date: this.runContextFields(dagId, runId).logical_date,
      time: str(row, "timestamp") ?? tx.commitTime,
      xcom_key: key,
      source: position(ev, tx),
    };
    const empty = { request_id: null, start: null, end: null, metadata: null, payload: null, payload_uri: null, files: null };
    const raw = row.value;
    const parsed = parseXComValue(raw === UNCHANGED ? undefined : raw);
    if (!parsed.ok) return this.invalid(base, empty, parsed.error, parsed.rawText);
    const checked = NotificationValue.safeParse(withSnakeCase(parsed.value));
    if (!checked.success) {
      const message = checked.error.issues.map((i) => `${i.path.join(".") || "value"}: ${i.message}`).join("; ");
      return this.invalid(base, empty, message, parsed.rawText);
    }
    const v = checked.data;
    return {
      ...base,
      request_id: v.request_id ?? null,
      start: v.start ?? null,
      end: v.end ?? null,
      metadata: v.metadata ?? null,
      payload: v.payload ?? null,
      payload_uri: v.payload_uri ?? null,
      files: v.files ?? null,
      error: null,
    };
  }

  private invalid<B extends { dag_id: string; task_id: string; run_id: string }, E>(base: B, empty: E, message: string, rawText: string) {
    const max = this.opts.notificationRawMaxBytes;
    const bytes = Buffer.byteLength(rawText);
    const truncated = bytes > max;
    const raw = truncated ? Buffer.from(rawText).subarray(0, max).toString("utf8") : rawText;
    this.log.warn({ dag_id: base.dag_id, task_id: base.task_id, run_id: base.run_id, error: message }, "notification XCom does not validate; published with its error");
    return { ...base, ...empty, error: { message, raw, truncated } };
  }
}

type Parsed = { ok: true; value: unknown; rawText: string } | { ok: false; error: string; rawText: string };

/** 3.x stores XCom values as jsonb (decoded already); 2.x as bytea holding JSON, or a pickle. */
function parseXComValue(v: ColumnValue | undefined): Parsed {
  if (v === undefined || v === null) return { ok: false, error: "the XCom value is empty", rawText: "" };
  if (Buffer.isBuffer(v)) {
    const text = v.toString("utf8");
    if (!Buffer.from(text, "utf8").equals(v)) {
      return { ok: false, error: "the XCom value is not JSON (a pickled XCom? enable_xcom_pickling must be off)", rawText: v.toString("base64") };
    }
    try {
      return { ok: true, value: JSON.parse(text) as unknown, rawText: text };
    } catch {
      return { ok: false, error: "the XCom value is not valid JSON", rawText: text };
    }
  }
  // jsonb arrives parsed: the raw text is its JSON form (a JSON string keeps its quotes, as on 2.x).
  return { ok: true, value: v, rawText: JSON.stringify(v) };
}

/** The original PushOperator's camelCase names, accepted as aliases. */
function withSnakeCase(v: unknown): unknown {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return v;
  const o = { ...(v as Record<string, unknown>) };
  for (const [from, to] of [
    ["requestId", "request_id"],
    ["payloadURI", "payload_uri"],
    ["payloadUri", "payload_uri"],
  ] as const) {
    if (from in o && !(to in o)) {
      o[to] = o[from];
      delete o[from];
    }
  }
  return o;
}

function text(v: unknown): string | null {
  return typeof v === "string" ? v : null;
}

function runKey(dagId: string, runId: string): string {
  return [dagId, runId].join("\u0000");
}

/**
 * join(), not a template: a template builds a tree of cons strings that keeps the decoded row's
 * strings alive for as long as the key sits in a cache (measured: ~250 B more per entry).
 */
function tiKey(dagId: string, taskId: string, runId: string, mapIndex: number): string {
  return [dagId, taskId, runId, mapIndex].join("\u0000");
}

/**
 * Airflow's primary keys, by table and version. Under REPLICA IDENTITY FULL the Relation message
 * flags every column as part of the key, so the flags would make the whole row its own key (every
 * heartbeat a row never seen before). Known by name rather than read from pg_index at start: the
 * key must follow the Relation messages of the WAL being decoded, not the catalog as it is now
 * (Airflow 3.0's migration turns the composite key into `id`; a slot may still hold 2.x changes),
 * and the mapper stays a pure function of the stream. The two shapes are Airflow's since 2.3
 * (map_index) and 3.0 (id); a version that changed them would need a line here.
 */
function airflowPrimaryKey(rel: Relation): readonly string[] {
  if (rel.name === "task_instance") {
    // 3.x: id uuid (a new one per try); 2.x has no id column.
    return rel.columns.some((c) => c.name === "id") ? ["id"] : ["dag_id", "task_id", "run_id", "map_index"];
  }
  return ["id"];
}

/**
 * The columns that name a row, in column order. The Relation's key flags when they name it (DEFAULT:
 * the primary key; USING INDEX: a unique index, and then the old key tuple holds only those
 * columns), so that under DEFAULT keys are what they always were; Airflow's primary key by name
 * under FULL (every column flagged) and NOTHING (none).
 */
function rowKeyColumns(rel: Relation): string[] {
  if (rel.replicaIdentity === "d" || rel.replicaIdentity === "i") {
    const flagged = rel.columns.filter((c) => c.isKey).map((c) => c.name);
    if (flagged.length > 0) return flagged;
  }
  const pk = new Set(airflowPrimaryKey(rel));
  return rel.columns.filter((c) => pk.has(c.name)).map((c) => c.name);
}

function tiState(row: Row): TiState {
  const mapIndex = int(row, "map_index") ?? -1;
  const key = tiKey(str(row, "dag_id") ?? "", str(row, "task_id") ?? "", str(row, "run_id") ?? "", mapIndex);
  return { key, mapIndex, state: internState(str(row, "state")), tryNumber: int(row, "try_number") };
}

function runState(row: Row): RunState {
  return {
    dagId: str(row, "dag_id") ?? "",
    runId: str(row, "run_id") ?? "",
    state: internState(str(row, "state")),
    clearNumber: int(row, "clear_number"),
  };
}

/** Entries kept per DAG-run cache for a task-instance cache of `cacheSize`: DAG runs are few next to task instances. */
export function runCacheSize(cacheSize: number): number {
  return Math.max(1000, Math.ceil(cacheSize / 10));
}

function position(ev: ChangeEvent, tx: TxContext): SourcePosition {
  return {
    commit_lsn: formatLsn(ev.commitLsn),
    xid: tx.xid,
    index: ev.index,
    position: formatPosition({ commitLsn: ev.commitLsn, index: ev.index }),
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
