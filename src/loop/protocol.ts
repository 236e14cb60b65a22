import type { Relation, Row } from "../decode/types.js";
import type { Lsn } from "../lsn.js";
import type { AssetRow, RunContext } from "../airflow/mapper.js";
import type { ModelConfig } from "./maker.js";

/**
 * What the main thread and the model thread (src/loop/thread.ts, worker.ts) say to each other.
 * Structured clone carries it: strings, numbers, bigints, plain objects and arrays.
 */

/** The model thread's start: the session's settings and what the main thread resolved for it. */
export interface ModelThreadData {
  cfg: ModelConfig;
  /** CloudEvents' `ce_source`, resolved on the main thread (it may need the server's identity); null: no CloudEvents. */
  cloudEventsSource: string | null;
}

/**
 * The replication messages go across as frames in one transferred buffer per socket read (no copy
 * on the way): DATA: tag, u32 length, the XLogData payload; KEEPALIVE: tag, u64 WAL end, u8 reply
 * requested. Keepalives go through the model thread too, so that they stay in order with the data
 * (the ack rule must know whether one falls inside a transaction).
 */
export const FRAME_DATA = 0x64;
export const FRAME_KEEPALIVE = 0x6b;
export const FRAME_DATA_HEAD = 5;
export const FRAME_KEEPALIVE_BYTES = 10;

export type ToModel =
  | { kind: "frames"; buf: ArrayBuffer; bytes: number }
  | { kind: "seed"; event: Record<string, unknown> }
  | { kind: "seedRun"; dagId: string; runId: string; ctx: RunContext }
  | { kind: "seedAsset"; row: AssetRow }
  /** The answer to a MESSAGE op: the chunk's rows to map at `commitLsn` (null: the message was no chunk's end). */
  | { kind: "chunk"; rows: { relation: Relation; readAt: string; rows: { row: Row }[]; commitLsn: Lsn } | null };

/** The mapper's cache figures, as the metrics read them. */
export interface CacheStats {
  size: number;
  hits: number;
  misses: number;
  churn: number;
}

export type FromModel =
  | {
      kind: "ops";
      /** Flat: each op's code, then its operands (see OP_*). */
      ops: unknown[];
      /** Bytes of frames consumed since the last message (flow control). */
      consumed: number;
      decoded: number;
      /** Event types filtered out, one entry per event. */
      filtered: string[];
      cache: CacheStats;
    }
  | { kind: "error"; name: string; family: ErrorFamily; message: string; stack: string | undefined };

/**
 * Which base class a failure on the model thread had: the main thread rebuilds the error from its
 * name where it knows the class, and otherwise from this, so an error class it does not list still
 * stops the daemon (a UserActionError, exit 2) or is retried (a TransientError) as on one thread.
 */
export type ErrorFamily = "user" | "transient" | "decode" | "other";

/** Op codes of FromModel.ops, with their operands. */
export const OP_BEGIN = 1; // commitMs
export const OP_RECORD = 2; // the record (seq 0), type, stateName, oversize, gapNote
export const OP_COMMIT = 3; // endLsn
export const OP_MESSAGE = 4; // the message event (content as a Uint8Array)
export const OP_KEEPALIVE = 5; // walEnd, inTx, replyRequested
export const OP_TOUCHED = 6; // xid, commitLsn, table, key
export const OP_TRUNCATED = 7; // tables
export const OP_CHUNK_DONE = 8; // (none)
export const OP_LOG = 9; // level, bindings, fields, message
