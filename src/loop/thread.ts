import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { Config } from "../config.js";
import type { ReplayFilter } from "../checkpoint/replay.js";
import type { AssetRow, RunContext } from "../airflow/mapper.js";
import { DecodeError, FramingError } from "../decode/errors.js";
import { MessageTooLargeError, ReplicaIdentityError, SchemaError, TransientError, UserActionError } from "../errors.js";
import type { Lsn } from "../lsn.js";
import type { Logger } from "../log.js";
import type { SinkRecord } from "../sink/kafka.js";
import type { SourceStream } from "../stages.js";
import type { StreamHandlers } from "../source/replication.js";
import { chunkCommitLsn, type Loop } from "../session-loop.js";
import { Handoff, type HandoffParts } from "./handoff.js";
import { modelConfig, type MessageEvent, type Oversize } from "./maker.js";
import {
  FRAME_DATA,
  FRAME_DATA_HEAD,
  FRAME_KEEPALIVE,
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
  type CacheStats,
  type ErrorFamily,
  type FromModel,
  type ModelThreadData,
  type ToModel,
} from "./protocol.js";

/**
 * Frames handed to the model thread and not yet back as records: past this, reading PostgreSQL
 * pauses until the thread is at half of it. It bounds more than the queue: every frame sent
 * comes back as records that go to the sink even when the in-flight caps have paused the stream
 * (on one thread the same holds for one socket read, ~64 KB), and records are ~4x the frames they
 * come from (an UPDATE's ~350 B as ~1.5 KB of JSON and state records). At 4 MB, one UPDATE of
 * 200,000 task instances filled the main thread's 60 MB heap with ~20 MB of records past the caps
 * (test/integration/big-transaction.test.ts); 512 KB is eight reads: enough to keep the thread busy.
 */
const QUEUE_CAP_BYTES = 512 * 1024;
/** A socket read's frames go in one buffer of at least this size (most reads are smaller). */
const BATCH_MIN_BYTES = 64 * 1024;

/**
 * The model thread's heap: the mapper's run contexts and the frames it is reading (the state
 * cache is outside the heap). Generous against what it holds (~10 MB at the default cache).
 */
export function modelThreadHeapMb(cfg: Pick<Config, "stateCacheSize">): number {
  return 48 + Math.ceil((cfg.stateCacheSize * 100) / 1024 / 1024);
}

/**
 * The per-message loop with the maker on a thread of its own (EVENTSTREAM_MODEL_THREAD): the
 * stream's messages go to the model thread as frames, one buffer per socket read; its records and
 * positions come back as ops, in WAL order, and go through the handoff here exactly as on one
 * thread (src/session-loop.ts). Everything with an order to keep stays on this thread: sequence
 * numbers, the sink, the ack rule, the replay's skip point and the snapshot coordinator. At a
 * snapshot chunk's high watermark the model thread stops reading until this thread has answered
 * with the chunk's rows (or that the message ended no chunk), so the rows are mapped at their place
 * in the stream.
 *
 * Why a worker thread: decode, map and JSON are most of the daemon's CPU, and pure functions of
 * the bytes and the mapper's state; JavaScript runs them on one core. The price is the copy of each
 * record across (structured clone of its strings and objects), a second heap and its collector: on
 * a 2-core machine shared with PostgreSQL and Kafka that price was higher than the gain
 * (bench/README.md#the-model-thread), so it is off by default.
 */
export class ThreadedLoop implements Loop {
  private readonly worker: Worker;
  private readonly handoff: Handoff;
  private batch: Buffer | null = null;
  private used = 0;
  private flushQueued = false;
  /** Bytes of frames sent and not yet read through by the model thread. */
  private queued = 0;
  private cache: CacheStats = { size: 0, hits: 0, misses: 0, churn: 0 };
  private closed = false;
  private failed = false;

  constructor(
    cfg: Config,
    private readonly log: Logger,
    private readonly parts: HandoffParts & { stream: HeldStream },
    init: { cloudEventsSource: string | null },
  ) {
    this.handoff = new Handoff(cfg, log, parts, (at) =>
      this.post({
        kind: "chunk",
        rows: at === null ? null : { relation: at.read.relation, readAt: at.read.readAt, rows: at.rows, commitLsn: chunkCommitLsn(at.lsn) },
      }),
    );
    const data: ModelThreadData = { cfg: modelConfig(cfg), cloudEventsSource: init.cloudEventsSource };
    const mb = modelThreadHeapMb(cfg);
    this.worker = new Worker(workerFile(), {
      workerData: data,
      resourceLimits: { maxOldGenerationSizeMb: mb, maxYoungGenerationSizeMb: 6 },
      // Its stdout and stderr are the process's (a crash's trace still shows).
      stdout: false,
      stderr: false,
    });
    // The thread alone never keeps the process alive: the session's sockets and timers do, and a
    // session that ended without its teardown must not leave a process that cannot exit.
    this.worker.unref();
    log.info({ heapMb: mb }, "decoding and mapping on the model thread (EVENTSTREAM_MODEL_THREAD)");
    this.worker.on("message", (m: FromModel) => this.received(m));
    this.worker.on("error", (e) => this.fail(new TransientError(`the model thread failed: ${e.message}`, { cause: e })));
    this.worker.on("exit", (code) => {
      if (!this.closed) this.fail(new TransientError(`the model thread exited (code ${code}) while the session ran`));
    });
  }

  skipCovered(replay: ReplayFilter | null): void {
    this.handoff.skipCovered(replay);
  }

  onData(payload: Buffer): void {
    if (this.parts.life.halted) return;
    const b = this.room(FRAME_DATA_HEAD + payload.length);
    b[this.used] = FRAME_DATA;
    b.writeUInt32BE(payload.length, this.used + 1);
    payload.copy(b, this.used + FRAME_DATA_HEAD);
    this.used += FRAME_DATA_HEAD + payload.length;
  }

  onKeepalive(walEnd: Lsn, replyRequested: boolean): void {
    if (this.parts.life.halted) return;
    const b = this.room(FRAME_KEEPALIVE_BYTES);
    b[this.used] = FRAME_KEEPALIVE;
    b.writeBigUInt64BE(walEnd, this.used + 1);
    b[this.used + 9] = replyRequested ? 1 : 0;
    this.used += FRAME_KEEPALIVE_BYTES;
  }

  /** The mapper's seeds (start-up), sent ahead of any frame. */
  readonly model = {
    seed: (event: Record<string, unknown>): void => this.post({ kind: "seed", event }),
    seedRunContext: (dagId: string, runId: string, ctx: RunContext): void => this.post({ kind: "seedRun", dagId, runId, ctx }),
    seedAsset: (row: AssetRow): void => this.post({ kind: "seedAsset", row }),
    /** The model thread's last figures (each of its messages carries them). */
    cacheStats: (): CacheStats => this.cache,
  };

  /** Ends the model thread (the session's teardown). */
  async close(): Promise<void> {
    this.closed = true;
    await this.worker.terminate();
  }

  /**
   * Room for `n` bytes in this socket read's buffer; the buffer goes across once the read's
   * messages are all in (a microtask: the stream hands a read's messages over synchronously).
   */
  private room(n: number): Buffer {
    if (this.batch !== null && this.used + n > this.batch.length) this.flush();
    if (this.batch === null) {
      // Its own ArrayBuffer, to transfer: a pooled Buffer shares one with others.
      this.batch = Buffer.from(new ArrayBuffer(Math.max(BATCH_MIN_BYTES, n)));
      this.used = 0;
    }
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => {
        this.flushQueued = false;
        this.flush();
      });
    }
    return this.batch;
  }

  private flush(): void {
    const b = this.batch;
    if (b === null || this.used === 0) return;
    this.batch = null;
    this.queued += this.used;
    const msg: ToModel = { kind: "frames", buf: b.buffer as ArrayBuffer, bytes: this.used };
    this.worker.postMessage(msg, [b.buffer as ArrayBuffer]);
    if (this.queued > QUEUE_CAP_BYTES) this.parts.stream.hold(true);
  }

  /** A control message, after every frame before it. */
  private post(m: ToModel): void {
    this.flush();
    this.worker.postMessage(m);
  }

  private received(m: FromModel): void {
    if (m.kind === "error") return this.fail(modelError(m));
    const { metrics, life } = this.parts;
    this.cache = m.cache;
    metrics.decoded(m.decoded);
    for (const t of m.filtered) metrics.filtered(t);
    this.queued -= m.consumed;
    // Stopping: what the model thread still sends is not handed on. Its commits never reach the
    // ack rule, so PostgreSQL sends those transactions again to the next session.
    if (!life.halted && !life.stopping) {
      try {
        this.apply(m.ops);
      } catch (e: unknown) {
        // As on one thread: a record that cannot be handed on stops the session; nothing after it is.
        return this.fail(e instanceof Error ? e : new Error(String(e)));
      }
    }
    if (this.queued <= QUEUE_CAP_BYTES / 2) this.parts.stream.hold(false);
  }

  private apply(ops: unknown[]): void {
    const h = this.handoff;
    const snapshots = this.parts.snapshots;
    let i = 0;
    while (i < ops.length && !this.parts.life.halted) {
      switch (ops[i] as number) {
        case OP_BEGIN:
          h.begin(ops[i + 1] as number);
          i += 2;
          break;
        case OP_RECORD:
          h.record(
            ops[i + 1] as SinkRecord,
            ops[i + 2] as string,
            ops[i + 3] as string | null,
            ops[i + 4] as Oversize | null,
            ops[i + 5] as object | null,
          );
          i += 6;
          break;
        case OP_COMMIT:
          h.commit(ops[i + 1] as Lsn);
          i += 2;
          break;
        case OP_MESSAGE: {
          // Structured clone gives a Buffer back as a Uint8Array.
          const ev = ops[i + 1] as MessageEvent;
          const c = ev.content as Uint8Array;
          h.message({ ...ev, content: Buffer.from(c.buffer, c.byteOffset, c.byteLength) });
          i += 2;
          break;
        }
        case OP_KEEPALIVE:
          h.keepalive(ops[i + 1] as Lsn, ops[i + 2] as boolean, ops[i + 3] as boolean);
          i += 4;
          break;
        case OP_TOUCHED:
          snapshots?.touched(ops[i + 1] as number, ops[i + 2] as Lsn, ops[i + 3] as string, ops[i + 4] as string);
          i += 5;
          break;
        case OP_TRUNCATED:
          snapshots?.truncated(ops[i + 1] as string[]);
          i += 2;
          break;
        case OP_CHUNK_DONE:
          h.chunkDone();
          i += 1;
          break;
        case OP_LOG: {
          const level = ops[i + 1] as "warn" | "info" | "error" | "debug";
          this.log.child(ops[i + 2] as object)[level](ops[i + 3] as object, ops[i + 4] as string);
          i += 5;
          break;
        }
        default:
          throw new Error(`the model thread sent an unknown op ${String(ops[i])}`);
      }
    }
  }

  /** The session's first failure from here; halted may be set already (the handoff sets it before it throws). */
  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.parts.life.fail(e);
  }
}

/** A failure of the model thread as an error of the main thread, its class rebuilt (see ErrorFamily). */
export function modelError(m: Extract<FromModel, { kind: "error" }>): Error {
  const classes: Record<string, new (message: string) => Error> = {
    SchemaError,
    ReplicaIdentityError,
    MessageTooLargeError,
    UserActionError,
    TransientError,
    DecodeError,
    FramingError,
  };
  const bases: Record<ErrorFamily, new (message: string) => Error> = {
    user: UserActionError,
    transient: TransientError,
    decode: DecodeError,
    other: Error,
  };
  const Known = classes[m.name];
  const e = new (Known ?? bases[m.family])(m.message);
  // A class not listed keeps its own name over its base's (what the logs and the exit message show).
  if (Known === undefined) e.name = m.name;
  if (m.stack !== undefined) e.stack = m.stack;
  return e;
}

/**
 * worker.js beside this file; from the TypeScript sources (the tests run them), the built one in
 * dist/: a worker thread runs plain JavaScript, and the test set-up builds dist/ first.
 */
function workerFile(): URL {
  const here = import.meta.url;
  const url = here.endsWith(".ts") ? new URL("../../dist/loop/worker.js", here) : new URL("./worker.js", here);
  if (!existsSync(fileURLToPath(url))) throw new Error(`the model thread's code is missing at ${fileURLToPath(url)}: run npm run build`);
  return url;
}

/**
 * The stream with a second reason to pause: the model thread's queue is full (hold). The ack rule,
 * the start-up and stop() pause and resume it as before; it reads again only when neither wants it
 * paused. `reportPaused` hears of every change a hold makes to whether the socket reads, so the time paused
 * for the queue is counted with the time paused for Kafka (airflow_eventstream_paused_seconds_total).
 */
export class HeldStream implements SourceStream {
  private wanted = false;
  private held = false;

  constructor(
    private readonly stream: SourceStream,
    private readonly reportPaused: (paused: boolean) => void = () => undefined,
  ) {}

  start(handlers: StreamHandlers): Promise<void> {
    return this.stream.start(handlers);
  }

  get done(): Promise<void> {
    return this.stream.done;
  }

  get isOpen(): boolean {
    return this.stream.isOpen;
  }

  stop(): Promise<void> {
    return this.stream.stop();
  }

  sendStatus(lsn: Lsn): void {
    this.stream.sendStatus(lsn);
  }

  pause(): void {
    this.wanted = true;
    this.apply();
  }

  resume(): void {
    this.wanted = false;
    this.apply();
  }

  get isPaused(): boolean {
    return this.wanted || this.held;
  }

  hold(on: boolean): void {
    if (this.held === on) return;
    this.held = on;
    this.apply();
    this.reportPaused(this.isPaused);
  }

  private apply(): void {
    if (this.wanted || this.held) this.stream.pause();
    else this.stream.resume();
  }
}
