import type { Relation, RowChange } from "../decode/types.js";
import { SchemaError } from "../errors.js";
import type { Logger } from "../log.js";
import { ASSET_EVENT_TABLES, ASSET_TABLES, AssetEventMapper, type AssetRow } from "./asset-event.js";
import { DagRunMapper } from "./dag-run.js";
import { position, type ChangeEvent, type TxContext } from "./envelope.js";
import type { AssetEventEvent, DagRunEvent, StreamEvent, TableTruncatedEvent, TaskInstanceEvent } from "./events.js";
import { NotificationMapper } from "./notification.js";
import { RunContextCache, type RunContext } from "./run-context-cache.js";
import { TaskInstanceMapper } from "./task-instance.js";

export type { TxContext } from "./envelope.js";
export { runCacheSize, type RunContext } from "./run-context-cache.js";
export type { AssetRow } from "./asset-event.js";

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
 * from a bounded memory of the last state per row: empty at a start until the events read back
 * from Kafka seed it (see seed), and emptied by an eviction or a TRUNCATE.
 *
 * This class dispatches by table; the mapping of each lives in task-instance.ts, dag-run.ts,
 * notification.ts and asset-event.ts, over caches this class builds and clears.
 */

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
  /** EVENTSTREAM_ASSET_EVENTS: asset_event/dataset_event inserts become asset_event events. */
  assetEvents?: boolean;
}

const TI_REQUIRED = ["dag_id", "task_id", "run_id", "state", "try_number"] as const;
const RUN_REQUIRED = ["id", "dag_id", "run_id", "state"] as const;
const XCOM_REQUIRED = ["dag_id", "task_id", "run_id", "key", "value"] as const;
const ASSET_REQUIRED = ["id", "uri"] as const;
const ASSET_EVENT_REQUIRED = ["extra", "source_dag_id", "source_task_id", "source_run_id", "source_map_index", "timestamp"] as const;

export class AirflowMapper {
  private readonly schema: string;
  /** Run context by (dag_id, run_id), carried by task-instance and notification events. */
  private readonly contexts: RunContextCache;
  private readonly taskInstances: TaskInstanceMapper;
  private readonly dagRuns: DagRunMapper;
  private readonly notifications: NotificationMapper;
  /** Asset events and the id -> asset map they need; null when EVENTSTREAM_ASSET_EVENTS is off. */
  private readonly assets: AssetEventMapper | null;
  /** Relations already checked for the columns the mapping needs. */
  private readonly checked = new WeakSet<Relation>();
  /** TRUNCATEs of captured tables seen since the start, for the log. */
  private truncations = 0;

  constructor(
    private readonly opts: MapperOptions,
    private readonly log: Logger,
  ) {
    this.schema = opts.schema;
    this.contexts = new RunContextCache(opts.cacheSize);
    this.taskInstances = new TaskInstanceMapper(opts, this.contexts);
    this.dagRuns = new DagRunMapper(opts.cacheSize, this.contexts);
    this.notifications = new NotificationMapper(opts, log, this.taskInstances, this.contexts);
    this.assets = opts.assetEvents === true ? new AssetEventMapper(log) : null;
  }

  /** The state cache's size, hits and misses, and the churn dropped, for the metrics. */
  cacheStats(): { size: number; hits: number; misses: number; churn: number } {
    return { size: this.taskInstances.remembered, ...this.taskInstances.counts };
  }

  /**
   * The last state of a row as published before this start (read back from the event topics at
   * start), as if the change behind `event` had just been mapped: a later change of that row is
   * then a transition, or churn, as it was for the process that published the event.
   * Events must come in position order per row (a partition's order) and only from before the
   * position the replay starts at (the slot's confirmed position): replayed changes then update
   * the state in order, and the state is never newer than the change being mapped. Anything that
   * is not an event of this version's shape is ignored.
   */
  seed(event: Record<string, unknown>): void {
    if (event.type === "task_instance") this.taskInstances.seed(event);
    else if (event.type === "dag_run") this.dagRuns.seed(event);
  }

  /** Context of runs that started before the stream did (read once at start, see src/source/airflow-rows.ts). */
  seedRunContext(dagId: string, runId: string, ctx: RunContext): void {
    this.contexts.set(dagId, runId, ctx);
  }

  /** An asset/dataset row that existed before the stream started (read once at start, see src/source/airflow-rows.ts). */
  seedAsset(row: AssetRow): void {
    this.assets?.seedAsset(row);
  }

  /** The event for one row change, or null when it is not a transition or not an Airflow table. */
  map(ev: ChangeEvent, tx: TxContext): StreamEvent | null {
    const change = ev.change;
    if (change.kind === "truncate") return this.truncate(change, ev, tx);
    const rel = change.relation;
    if (rel.schema !== this.schema) return null;
    if (rel.name === "task_instance") {
      this.check(rel, TI_REQUIRED);
      return this.taskInstances.map(change, ev, tx);
    }
    if (rel.name === "dag_run") {
      this.check(rel, RUN_REQUIRED);
      return this.dagRuns.map(change, ev, tx);
    }
    if (rel.name === "xcom" && this.opts.xcomKey !== null) {
      this.check(rel, XCOM_REQUIRED);
      return this.notifications.map(change, ev, tx);
    }
    if (this.assets !== null) return this.asset(this.assets, change, ev, tx);
    return null;
  }

  /** asset/dataset rows feed the id -> asset map; asset_event/dataset_event inserts are events. */
  private asset(
    assets: AssetEventMapper,
    change: Exclude<RowChange, { kind: "truncate" }>,
    ev: ChangeEvent,
    tx: TxContext,
  ): AssetEventEvent | null {
    const name = change.relation.name;
    if ((ASSET_TABLES as readonly string[]).includes(name)) {
      this.check(change.relation, ASSET_REQUIRED);
      assets.asset(change);
      return null;
    }
    if ((ASSET_EVENT_TABLES as readonly string[]).includes(name)) {
      this.check(change.relation, [name === "asset_event" ? "asset_id" : "dataset_id", ...ASSET_EVENT_REQUIRED]);
      return assets.map(change, ev, tx);
    }
    return null;
  }

  /**
   * A row a snapshot read (src/snapshot/), published at `ev`'s position (a high watermark): an
   * `op: "snapshot"` event, and the row's remembered state from then on. `change.relation`
   * describes the snapshot query's columns.
   */
  snapshot(change: Extract<RowChange, { kind: "insert" }>, ev: ChangeEvent, tx: TxContext): TaskInstanceEvent | DagRunEvent {
    return change.relation.name === "task_instance" ? this.taskInstances.snapshot(change, ev, tx) : this.dagRuns.snapshot(change, ev, tx);
  }

  /**
   * A TRUNCATE of captured tables: one event saying all their state is void, since no per-row
   * events exist for it. The memory of those tables goes with it: a row written anew after it is
   * new (an insert, or an update whose previous state is unknown), never a transition from a
   * state that no longer exists.
   */
  /**
   * After a gap (stream_gap): what the daemon remembers of rows may predate transitions that were
   * lost, so a previous_state from it could be false. Forgotten: each row's next change says
   * previous_state_known false, until it changes or the snapshot reaches it.
   */
  forgetStates(): void {
    this.taskInstances.clear();
    this.dagRuns.clear();
  }

  private truncate(change: Extract<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): TableTruncatedEvent | null {
    const tables: TableTruncatedEvent["tables"] = [];
    for (const r of change.relations) {
      if (r.schema !== this.schema) continue;
      if (r.name === "task_instance" || r.name === "dag_run" || (r.name === "xcom" && this.opts.xcomKey !== null)) tables.push(r.name);
    }
    if (tables.length === 0) return null;
    if (tables.includes("task_instance")) this.taskInstances.clear();
    if (tables.includes("dag_run")) {
      this.dagRuns.clear();
      this.contexts.clear();
    }
    this.truncations++;
    this.log.warn(
      { tables, xid: tx.xid, truncations_total: this.truncations },
      "captured table(s) truncated: publishing table_truncated to every partition",
    );
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
    if (this.opts.replicaIdentity === "full" && (rel.name === "task_instance" || rel.name === "dag_run") && rel.replicaIdentity !== "f") {
      // The Relation message describes the table as of the WAL being decoded: changes written
      // before the start's ALTER TABLE, or after someone set the table back.
      this.log.warn(
        { table: `${rel.schema}.${rel.name}`, replicaIdentity: rel.replicaIdentity },
        "EVENTSTREAM_REPLICA_IDENTITY is full but this part of the WAL has the table without it: previous_state comes from memory for its changes",
      );
    }
    this.checked.add(rel);
  }
}
