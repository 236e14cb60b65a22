/**
 * The model thread's entry (EVENTSTREAM_MODEL_THREAD; the main thread's side is thread.ts): the
 * record maker (decode, map, filter, JSON, route, headers, state records) over the frames the main
 * thread sends, in order, its records and positions sent back as ops in the same order. It holds
 * the mapper's state; the main thread holds Kafka, the ack rule and the snapshot coordinator.
 */
import { parentPort, workerData } from "node:worker_threads";
import { DecodeError } from "../decode/errors.js";
import type { Row } from "../decode/types.js";
import { TransientError, UserActionError } from "../errors.js";
import type { Lsn } from "../lsn.js";
import type { Logger } from "../log.js";
import { CloudEvents } from "../sink/cloudevents.js";
import type { SinkRecord } from "../sink/kafka.js";
import { ChangeKeys, type KeySink } from "../snapshot/tap.js";
import { RecordMaker, makerModel, type Made, type MessageEvent, type Oversize } from "./maker.js";
import {
  FRAME_DATA,
  FRAME_DATA_HEAD,
  FRAME_KEEPALIVE_BYTES,
  OP_BEGIN,
  OP_CHUNK_DONE,
  OP_COMMIT,
  OP_KEEPALIVE,
  OP_LOG,
  OP_MESSAGE,
  OP_RECORD,
  OP_TOUCHED,
  OP_TRUNCATED,
  type ErrorFamily,
  type FromModel,
  type ModelThreadData,
  type ToModel,
} from "./protocol.js";

/** What the maker and the tap's key reader hand on, gathered into the next message to the main thread. */
class Outbox implements Made, KeySink {
  ops: unknown[] = [];
  consumed = 0;
  decodedCount = 0;
  filteredTypes: string[] = [];
  /** A MESSAGE op went out: nothing more is read until the main thread answers (a chunk's rows, or none). */
  waiting = false;

  begin(commitMs: number): void {
    this.ops.push(OP_BEGIN, commitMs);
  }

  record(rec: SinkRecord, type: string, stateName: string | null, oversize: Oversize | null, gapNote: object | null): void {
    this.ops.push(OP_RECORD, rec, type, stateName, oversize, gapNote);
  }

  commit(endLsn: Lsn): void {
    this.ops.push(OP_COMMIT, endLsn);
  }

  message(ev: MessageEvent): void {
    this.ops.push(OP_MESSAGE, ev);
    this.waiting = true;
  }

  keepalive(walEnd: Lsn, inTx: boolean, replyRequested: boolean): void {
    this.ops.push(OP_KEEPALIVE, walEnd, inTx, replyRequested);
  }

  touched(xid: number, commitLsn: Lsn, table: string, key: string): void {
    this.ops.push(OP_TOUCHED, xid, commitLsn, table, key);
  }

  truncated(tables: readonly string[]): void {
    this.ops.push(OP_TRUNCATED, [...tables]);
  }

  chunkDone(): void {
    this.ops.push(OP_CHUNK_DONE);
  }

  decoded(): void {
    this.decodedCount++;
  }

  filtered(type: string): void {
    this.filteredTypes.push(type);
  }

  log(level: string, bindings: object, fields: unknown, message: string | undefined): void {
    // Plain data only across the thread boundary (a field could hold a bigint or a class).
    const plain: unknown = JSON.parse(JSON.stringify(fields ?? {}, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)));
    this.ops.push(OP_LOG, level, bindings, plain, message);
  }
}

/**
 * The model's warnings go to the main thread's logger (OP_LOG), in order with the records, with
 * the bindings of the child they were logged on. Only what the model code calls is forwarded: a
 * pino logger of its own here would write around the main thread's (and a test's capture of it).
 */
function forwardingLogger(out: Outbox, bindings: object): Logger {
  const at =
    (level: string) =>
    (fields: unknown, message?: string): void =>
      typeof fields === "string" ? out.log(level, bindings, {}, fields) : out.log(level, bindings, fields, message);
  const log = {
    warn: at("warn"),
    info: at("info"),
    error: at("error"),
    debug: at("debug"),
    child: (more: object) => forwardingLogger(out, { ...bindings, ...more }),
  };
  // The model code uses only these of pino's Logger.
  return log as unknown as Logger;
}

if (parentPort === null) throw new Error("src/loop/worker.ts is the model thread's entry: it runs only as a worker thread");
const port = parentPort;
const { cfg, cloudEventsSource } = workerData as ModelThreadData;
const out = new Outbox();
const log = forwardingLogger(out, {});
const { decoder, mapper, router } = makerModel(cfg, log);
const maker = new RecordMaker(
  cfg,
  log,
  {
    decoder,
    mapper,
    router,
    cloudEvents: cloudEventsSource === null ? undefined : new CloudEvents(cloudEventsSource),
    tap: new ChangeKeys(cfg.airflowSchema, out),
    counts: out,
  },
  out,
);

/** Frame buffers not yet read through, oldest first; `at` is the read offset in the first. */
const queue: Buffer[] = [];
let at = 0;
/** A failure was reported: nothing more is read (the session ends and terminates this thread). */
let failed = false;

port.on("message", (m: ToModel) => {
  if (failed) return;
  try {
    switch (m.kind) {
      case "frames":
        queue.push(Buffer.from(m.buf, 0, m.bytes));
        break;
      case "seed":
        mapper.seed(m.event);
        break;
      case "seedRun":
        mapper.seedRunContext(m.dagId, m.runId, m.ctx);
        break;
      case "seedAsset":
        mapper.seedAsset(m.row);
        break;
      case "chunk":
        out.waiting = false;
        if (m.rows !== null) {
          const { relation, readAt, rows, commitLsn } = m.rows;
          for (const r of rows) buffersBack(r.row);
          maker.snapshotRows(relation, readAt, rows, commitLsn);
        }
        out.chunkDone();
        break;
    }
    read();
  } catch (e: unknown) {
    failed = true;
    flush();
    const err = e instanceof Error ? e : new Error(String(e));
    const family: ErrorFamily =
      err instanceof UserActionError
        ? "user"
        : err instanceof TransientError
          ? "transient"
          : err instanceof DecodeError
            ? "decode"
            : "other";
    const msg: FromModel = { kind: "error", name: err.name, family, message: err.message, stack: err.stack };
    port.postMessage(msg);
  }
});

/**
 * A row's bytea values as Buffers again: structured clone hands a Buffer over as a plain
 * Uint8Array, and the model tells bytes from JSON by Buffer.isBuffer (src/airflow/row-values.ts).
 */
function buffersBack(row: Row): void {
  for (const k of Object.keys(row)) {
    const v: unknown = row[k];
    if (!(v instanceof Uint8Array) || Buffer.isBuffer(v)) continue;
    // Typed as what it was sent as, TypeScript cannot tell the two apart.
    const bytes = v as Uint8Array;
    row[k] = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
}

/** Reads the queued frames through the maker, up to a MESSAGE op that waits for its answer. */
function read(): void {
  while (!out.waiting && queue.length > 0) {
    const buf = queue[0]!;
    while (at < buf.length && !out.waiting) {
      if (buf[at] === FRAME_DATA) {
        const end = at + FRAME_DATA_HEAD + buf.readUInt32BE(at + 1);
        const payload = buf.subarray(at + FRAME_DATA_HEAD, end);
        out.consumed += end - at;
        at = end;
        maker.push(payload);
      } else {
        out.keepalive(buf.readBigUInt64BE(at + 1), maker.inTx, buf[at + 9] === 1);
        out.consumed += FRAME_KEEPALIVE_BYTES;
        at += FRAME_KEEPALIVE_BYTES;
      }
    }
    if (at < buf.length) break;
    queue.shift();
    at = 0;
  }
  flush();
}

function flush(): void {
  if (out.ops.length === 0 && out.consumed === 0) return;
  const msg: FromModel = {
    kind: "ops",
    ops: out.ops,
    consumed: out.consumed,
    decoded: out.decodedCount,
    filtered: out.filteredTypes,
    cache: mapper.cacheStats(),
  };
  out.ops = [];
  out.consumed = 0;
  out.decodedCount = 0;
  out.filteredTypes = [];
  port.postMessage(msg);
}
