import type { Config } from "./config.js";
import type { AckRule } from "./checkpoint/ack.js";
import type { ReplayFilter } from "./checkpoint/replay.js";
import type { TransactionDecoder } from "./decode/transactions.js";
import type { Lsn } from "./lsn.js";
import type { AirflowMapper } from "./airflow/mapper.js";
import type { CloudEvents } from "./sink/cloudevents.js";
import type { SinkRecord } from "./sink/kafka.js";
import type { TopicRouter } from "./sink/routing.js";
import type { SnapshotTap } from "./snapshot/tap.js";
import type { StreamHandlers } from "./source/replication.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./operate/metrics.js";
import { Handoff } from "./loop/handoff.js";
import { RecordMaker } from "./loop/maker.js";

/** What the loop hands each message through. */
export interface LoopParts {
  decoder: TransactionDecoder;
  mapper: AirflowMapper;
  router: TopicRouter;
  sink: { push(rec: SinkRecord): void };
  ack: AckRule;
  life: Lifecycle;
  /** Snapshots (src/snapshot/): told of every change, handed our logical decoding messages; absent: none. */
  snapshots?: SnapshotTap;
  metrics: Metrics;
  /** EVENTSTREAM_CLOUDEVENTS=binary: each event record's CloudEvents headers; absent: none. */
  cloudEvents?: CloudEvents;
}

/** The per-message loop as the session drives it: the stream's handlers, and the replay's skip point. */
export interface Loop extends StreamHandlers {
  skipCovered(replay: ReplayFilter | null): void;
}

/**
 * The per-message loop on one thread: each pgoutput message is decoded, mapped to an event and
 * made into records (src/loop/maker.ts), which are routed to the sink with their sequence numbers
 * (src/loop/handoff.ts), in WAL order; commits and keepalives go to the ack rule. Synchronous: the
 * stream calls it for each message in turn. EVENTSTREAM_MODEL_THREAD runs the maker on a thread of
 * its own instead (src/loop/thread.ts).
 */
export class MessageLoop implements Loop {
  private readonly maker: RecordMaker;
  private readonly handoff: Handoff;

  constructor(
    cfg: Config,
    log: Logger,
    private readonly parts: LoopParts,
  ) {
    this.handoff = new Handoff(cfg, log, parts, (at) => {
      if (at === null) return;
      this.maker.snapshotRows(at.read.relation, at.read.readAt, at.rows, chunkCommitLsn(at.lsn));
      this.handoff.chunkDone();
    });
    const { decoder, mapper, router, cloudEvents, snapshots, metrics } = parts;
    this.maker = new RecordMaker(cfg, log, { decoder, mapper, router, cloudEvents, tap: snapshots, counts: metrics }, this.handoff);
  }

  /** At start: skip the replayed changes `replay` covers (null: publish everything). */
  skipCovered(replay: ReplayFilter | null): void {
    this.handoff.skipCovered(replay);
  }

  onData(payload: Buffer): void {
    if (this.parts.life.halted) return;
    this.maker.push(payload);
  }

  onKeepalive(walEnd: Lsn, replyRequested: boolean): void {
    this.handoff.keepalive(walEnd, this.maker.inTx, replyRequested);
  }
}

/**
 * Where a snapshot chunk's rows are published: one byte before its high watermark. The message's
 * LSN is where its record ends, which is where the next record starts: maybe the commit record of
 * the next transaction, whose events would then share these positions. One byte before lies inside
 * the watermark's own record: after every commit before it, before every commit after it, and no
 * transaction's.
 */
export function chunkCommitLsn(watermarkLsn: Lsn): Lsn {
  return watermarkLsn - 1n;
}
