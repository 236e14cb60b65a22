/**
 * What decode/ hands to the rest of the pipeline. decode/ knows pgoutput bytes and PostgreSQL
 * types, never Airflow; airflow/ knows Airflow, never bytes.
 */

import type { Lsn } from "../lsn.js";

/** PostgreSQL's epoch (2000-01-01 UTC) in microseconds since the Unix epoch: its timestamps count from it. */
export const PG_EPOCH_OFFSET_US = 946_684_800_000_000n;

/**
 * A column value after text decoding. Only types Airflow's tables use get a dedicated
 * representation; everything else stays the text PostgreSQL sent.
 * - int2/int4/oid -> number; int8 -> number when safe, else string
 * - float4/float8 -> number (NaN and ±Infinity, which JSON cannot hold, stay text); numeric -> string
 * - bool -> boolean
 * - timestamptz/timestamp -> ISO-8601 string with all six fractional digits kept, "Z" for UTC
 *   ("infinity"/"-infinity", and years beyond Date's range, stay PostgreSQL's text)
 * - json/jsonb -> parsed JSON value (text that does not parse stays text)
 * - bytea -> Buffer
 * - uuid, text, varchar, everything else -> string
 */
export type ColumnValue = null | string | number | boolean | Buffer | JsonValue;
export type JsonValue = null | string | number | boolean | JsonValue[] | { [key: string]: JsonValue };

/** A decoded row: column name -> value. A TOASTed column that did not change is `UNCHANGED`. */
export const UNCHANGED: unique symbol = Symbol("unchanged-toast");
export type Row = Record<string, ColumnValue | typeof UNCHANGED>;

export interface RelationColumn {
  name: string;
  typeOid: number;
  typeMod: number;
  /** Part of the replica identity (the key sent with UPDATE/DELETE). */
  isKey: boolean;
}

export interface Relation {
  id: number;
  schema: string;
  name: string;
  /** 'd' default, 'n' nothing, 'f' full, 'i' index */
  replicaIdentity: "d" | "n" | "f" | "i";
  columns: RelationColumn[];
}

/** A row change; its place in the transaction (`index`) is on the TxEvent that carries it. */
export type RowChange =
  | { kind: "insert"; relation: Relation; row: Row }
  | {
      kind: "update";
      relation: Relation;
      row: Row;
      /** Old key columns ('K') or the full old row ('O'), when PostgreSQL sent them. */
      old: Row | null;
      oldKind: "key" | "full" | null;
    }
  | { kind: "delete"; relation: Relation; old: Row; oldKind: "key" | "full" }
  | { kind: "truncate"; relations: Relation[]; cascade: boolean; restartIdentity: boolean };

/** Messages of the pgoutput protocol (v1), decoded. https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html */
export type PgoutputMessage =
  | { tag: "begin"; finalLsn: Lsn; commitTime: bigint; xid: number }
  | { tag: "commit"; flags: number; commitLsn: Lsn; endLsn: Lsn; commitTime: bigint }
  | { tag: "origin"; originLsn: Lsn; name: string }
  | { tag: "relation"; relation: Relation }
  | { tag: "type"; typeOid: number; schema: string; name: string }
  | { tag: "insert"; relationId: number; row: RawTuple }
  | { tag: "update"; relationId: number; old: RawTuple | null; oldKind: "key" | "full" | null; row: RawTuple }
  | { tag: "delete"; relationId: number; old: RawTuple; oldKind: "key" | "full" }
  | { tag: "truncate"; relationIds: number[]; cascade: boolean; restartIdentity: boolean }
  | { tag: "message"; transactional: boolean; lsn: Lsn; prefix: string; content: Buffer };

/** One column of a tuple as sent: null, unchanged TOAST, or the text bytes (not yet converted). */
export type RawColumn = null | typeof UNCHANGED | Buffer;

/** In RawTuple.at, a column's start when it is NULL or an unchanged TOASTed value (no bytes). */
export const RAW_NULL = -1;
export const RAW_UNCHANGED = -2;

/**
 * A tuple as sent, by offsets into the message: column i's bytes are data[at[2i], at[2i+1]), or
 * at[2i] is RAW_NULL / RAW_UNCHANGED. Offsets rather than a Buffer view per column: a view is an
 * object, and every column of every row (~40 on task_instance) made one for the garbage collector.
 * `rawColumn` (pgoutput.ts) gives a column as a RawColumn.
 */
export interface RawTuple {
  data: Buffer;
  at: number[];
}

/**
 * Transaction framing, what the pipeline consumes. `commitLsn` is the commit record's LSN (from
 * BEGIN's final_lsn), known before the first change; `endLsn` is where that record ends and is the
 * position to acknowledge once every event of the transaction is in Kafka.
 */
export type TxEvent =
  | { kind: "begin"; xid: number; commitLsn: Lsn; commitTime: string; /** The same instant in ms since the Unix epoch. */ commitMs: number }
  | { kind: "change"; xid: number; commitLsn: Lsn; index: number; change: RowChange }
  | { kind: "commit"; xid: number; commitLsn: Lsn; endLsn: Lsn; commitTime: string }
  /**
   * A logical decoding message (pg_logical_emit_message) whose prefix starts with MESSAGE_PREFIX:
   * a transactional one inside its (committed) transaction, a non-transactional one between
   * transactions. `lsn` is the message record's own LSN. A transactional one takes a place in its
   * transaction like a change (`at`: the commit LSN and the next index), so an event made from it
   * has a position of its own; a non-transactional one has none (`at` undefined).
   */
  | {
      kind: "message";
      transactional: boolean;
      lsn: Lsn;
      prefix: string;
      content: Buffer;
      at?: { xid: number; commitLsn: Lsn; index: number };
    };

/** The prefix of the logical decoding messages the decoder passes on; others are dropped. */
export const MESSAGE_PREFIX = "airflow-eventstream.";
