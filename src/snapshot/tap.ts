import type { Relation, Row, TxEvent } from "../decode/types.js";
import type { Lsn } from "../lsn.js";
import { RowKeys } from "../airflow/row-keys.js";
import type { ChunkRead, ChunkRow } from "./chunk-reader.js";
import { REQUEST_PREFIX, SnapshotSpec, WATERMARK_PREFIX, Watermark, parseJson, type SnapshotTable } from "./spec.js";
import { RecentChanges, keysToDrop } from "./window.js";

type ChangeEvent = Extract<TxEvent, { kind: "change" }>;
type MessageEvent = Extract<TxEvent, { kind: "message" }>;

/** How a chunk ended in the stream. */
export type ChunkOutcome = { kind: "published"; events: number; lastSeq: number | null } | { kind: "retry"; reason: string };

/** A chunk registered with the loop before its low watermark is written. */
export interface OpenChunk {
  run: string;
  job: string;
  chunk: number;
  table: SnapshotTable;
  /** The low watermark's LSN, once the stream reached it. */
  low: Lsn | null;
  /** Row keys published events touched since the low watermark. */
  touched: Set<string>;
  /** A TRUNCATE of the table since the low watermark: the chunk is read again. */
  spoiled: boolean;
  /** Set before the high watermark is written. */
  read: ChunkRead | null;
  settle(outcome: ChunkOutcome): void;
}

/** A chunk whose high watermark the stream reached: its rows to publish at `lsn`. */
export interface ChunkToPublish {
  chunk: OpenChunk;
  read: ChunkRead;
  rows: ChunkRow[];
  lsn: Lsn;
}

/**
 * Keys recorded for the window rule, at most (~100 B each). Kept for every published change,
 * snapshot or not, so their number is a cost on the stream itself: with 50,000 the bench's drain
 * ran at 11,000-13,800 events/s, with 5,000 at 16,700, the same as with none recorded (all
 * `node bench/bench.ts --phases drain --transitions 100000`, one sitting): retained strings move to
 * the old generation of an 80 MB heap (the launcher's limit then; 60 MB now). 5,000 covers a few seconds of Airflow's busiest writing; a
 * chunk whose snapshot missed a transaction older than that is read again, never guessed at.
 */
const RECENT_KEYS = 5_000;

/**
 * The loop's side of snapshots, synchronous, in WAL order: records the row keys of published
 * events (window.ts), hands requests to the coordinator, and at a chunk's high watermark says which
 * of its rows to publish.
 */
/** Where ChangeKeys says what it saw. */
export interface KeySink {
  /** A published change of `table` touched the row `key` (table and row key joined), in transaction `xid` committed at `commitLsn`. */
  touched(xid: number, commitLsn: Lsn, table: string, key: string): void;
  /** A TRUNCATE of these tables of Airflow's schema. */
  truncated(tables: readonly string[]): void;
}

/**
 * The tap's reading of the changes: the row keys of published task_instance and dag_run changes,
 * and truncates of Airflow's tables. Apart from SnapshotTap so that it can run where the changes
 * are mapped (the model thread, src/loop/thread.ts) and send only the keys across.
 */
export class ChangeKeys {
  private readonly keys = new RowKeys();

  constructor(
    private readonly schema: string,
    private readonly to: KeySink,
  ) {}

  /** Every row change the loop maps; `published`: it produced an event. */
  changed(ev: ChangeEvent, published: boolean): void {
    const change = ev.change;
    if (change.kind === "truncate") {
      const tables = change.relations.filter((r) => r.schema === this.schema).map((r) => r.name);
      if (tables.length > 0) this.to.truncated(tables);
      return;
    }
    const rel = change.relation;
    if (!published || rel.schema !== this.schema || (rel.name !== "task_instance" && rel.name !== "dag_run")) return;
    // The new row's key, and the old one's when the WAL carried it; no array per change.
    if (change.kind === "delete") return this.touched(ev, rel, change.old);
    this.touched(ev, rel, change.row);
    if (change.kind === "update" && change.old) this.touched(ev, rel, change.old);
  }

  private touched(ev: ChangeEvent, rel: Relation, row: Row): void {
    const table = rel.name;
    // Joined, not a template: the window keeps thousands of these, and a template's cons string
    // would be three heap objects each for the collector instead of one.
    this.to.touched(ev.xid, ev.commitLsn, table, [table, this.keys.rowKey(rel, row)].join("\u0001"));
  }
}

export class SnapshotTap implements KeySink {
  private readonly recent = new RecentChanges(RECENT_KEYS);
  private readonly keys = new RowKeys();
  private readonly feed: ChangeKeys;
  private open: OpenChunk | null = null;

  constructor(
    schema: string,
    private readonly onRequest: (spec: SnapshotSpec) => void,
  ) {
    this.feed = new ChangeKeys(schema, this);
  }

  register(chunk: OpenChunk): void {
    this.open = chunk;
  }

  /** Ends the open chunk (session ending): its job reads it again. */
  abandon(reason: string): void {
    const c = this.open;
    this.open = null;
    c?.settle({ kind: "retry", reason });
  }

  /** Every row change the loop maps; `published`: it produced an event. */
  changed(ev: ChangeEvent, published: boolean): void {
    this.feed.changed(ev, published);
  }

  touched(xid: number, commitLsn: Lsn, table: string, key: string): void {
    this.recent.touch(xid, commitLsn, key);
    const open = this.open;
    if (open !== null && open.low !== null && open.table === table) open.touched.add(key);
  }

  truncated(tables: readonly string[]): void {
    const open = this.open;
    if (open !== null && open.low !== null && tables.includes(open.table)) open.spoiled = true;
  }

  /** A message of ours: a request, or a watermark; returns a chunk to publish at a high watermark. */
  message(ev: MessageEvent): ChunkToPublish | null {
    const text = ev.content.toString("utf8");
    if (ev.prefix === REQUEST_PREFIX) {
      const spec = parseJson(SnapshotSpec, text);
      if (spec !== null) this.onRequest(spec);
      return null;
    }
    if (ev.prefix !== WATERMARK_PREFIX) return null;
    const w = parseJson(Watermark, text);
    const open = this.open;
    // Another session's, a finished chunk's, or re-delivered WAL: nothing to do.
    if (w === null || open === null || w.run !== open.run || w.job !== open.job || w.chunk !== open.chunk) return null;
    if (w.kind === "low") {
      open.low ??= ev.lsn;
      return null;
    }
    this.open = null;
    if (open.low === null || open.read === null) {
      open.settle({ kind: "retry", reason: "high watermark before the low one or the rows" });
      return null;
    }
    if (open.spoiled) {
      open.settle({ kind: "retry", reason: "the table was truncated while the chunk was read" });
      return null;
    }
    const drop = keysToDrop({ low: open.low, touchedInWindow: open.touched, snapshot: open.read.snapshot }, this.recent);
    if (drop === null) {
      open.settle({ kind: "retry", reason: "a transaction the chunk's snapshot missed is no longer remembered" });
      return null;
    }
    const rel = open.read.relation;
    const rows = open.read.rows.filter((r) => !drop.has(`${open.table}\u0001${this.keys.rowKey(rel, r.row)}`));
    return { chunk: open, read: open.read, rows, lsn: ev.lsn };
  }
}
