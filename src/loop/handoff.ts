import type { Config } from "../config.js";
import type { AckRule } from "../checkpoint/ack.js";
import { comparePositions, formatPosition, type Position } from "../lsn.js";
import type { ReplayFilter } from "../checkpoint/replay.js";
import type { Lsn } from "../lsn.js";
import type { SinkRecord } from "../sink/kafka.js";
import type { ChunkToPublish, SnapshotTap } from "../snapshot/tap.js";
import { MessageTooLargeError } from "../errors.js";
import type { Lifecycle } from "../lifecycle.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../operate/metrics.js";
import type { Made, MessageEvent, Oversize } from "./maker.js";

/** What the handoff hands records and positions to. */
export interface HandoffParts {
  sink: { push(rec: SinkRecord): void };
  ack: AckRule;
  life: Lifecycle;
  /** Snapshots (src/snapshot/): handed our logical decoding messages; absent: none. */
  snapshots?: SnapshotTap;
  metrics: Metrics;
}

/**
 * The publishing half of the per-message loop, on the thread that holds the Kafka producer and the
 * ack rule: each record the maker made gets its sequence number and goes to the sink, unless a
 * replay finds it in Kafka already; commits and keepalives go to the ack rule; at a snapshot
 * chunk's high watermark, the chunk's rows go back to the maker (`mapChunk`) and its records come
 * through here like a transaction's. Synchronous, in WAL order.
 */
export class Handoff implements Made {
  private txPublished = false;
  /** The commit time of the transaction being read, in ms, for the commit → ack histogram. */
  private commitMs = 0;
  /** Changes whose events are in Kafka already (see ReplayFilter): mapped (the mapper's state must stay exact) but not published. null: none. */
  private replay: ReplayFilter | null = null;
  private replayEnd: Position | null = null;
  private skipped = 0;
  private deadLettered = 0;
  /** The seq of the last record handed to the sink; 0: none yet. */
  private lastSeq = 0;
  /** The snapshot chunk whose rows are being handed on; null: none. */
  private chunk: { at: ChunkToPublish; before: number; published: number } | null = null;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly parts: HandoffParts,
    /** Has the maker map a chunk's rows (or hears that a message was none: null); chunkDone() follows its records. */
    private readonly mapChunk: (at: ChunkToPublish | null) => void,
  ) {}

  /** At start: skip the replayed changes `replay` covers (null: publish everything). */
  skipCovered(replay: ReplayFilter | null): void {
    this.replay = replay;
    this.replayEnd = replay?.last() ?? null;
  }

  begin(commitMs: number): void {
    this.commitMs = this.parts.metrics.began(commitMs);
    this.txPublished = false;
  }

  commit(endLsn: Lsn): void {
    this.parts.ack.commit(endLsn, this.txPublished);
  }

  keepalive(walEnd: Lsn, inTx: boolean, replyRequested: boolean): void {
    this.parts.ack.keepalive(walEnd, inTx, replyRequested);
  }

  record(rec: SinkRecord, type: string, stateName: string | null, oversize: Oversize | null, gapNote: object | null): void {
    const chunk = this.chunk;
    if (chunk !== null) chunk.published++;
    else {
      if (this.covered(rec.topic, rec.key, rec.commitLsn, rec.index)) {
        if (gapNote === null && this.cfg.delivery === "at-least-once") this.resendState(rec);
        return;
      }
      if (gapNote !== null)
        this.log.warn({ ...gapNote }, "publishing stream_gap: events between these LSNs were lost; the snapshot requested with it follows");
      this.txPublished = true;
    }
    if (oversize !== null) this.oversized(oversize, rec.commitLsn, rec.index);
    else {
      rec.seq = this.lastSeq = this.parts.ack.next();
      this.parts.sink.push(rec);
      this.parts.metrics.pushed(type, stateName, this.lastSeq, this.commitMs);
    }
    this.parts.ack.pauseIfFull();
  }

  /**
   * A logical decoding message of ours. At a snapshot chunk's high watermark its rows are published
   * in order at (watermark LSN - 1, 0..n-1), like a transaction's changes at their commit LSN, and the
   * watermark is a commit for the ack rule: PostgreSQL hears of nothing past it before Kafka has
   * every row (keepalives after it are queued behind these events).
   */
  message(ev: MessageEvent): void {
    const at = this.parts.snapshots?.message(ev) ?? null;
    if (at !== null) {
      this.chunk = { at, before: this.lastSeq, published: 0 };
      this.commitMs = Date.parse(at.read.readAt);
    }
    this.mapChunk(at);
  }

  /** The maker handed on every record of the chunk that `message` opened. */
  chunkDone(): void {
    const c = this.chunk;
    if (c === null) return;
    this.chunk = null;
    this.parts.ack.commit(c.at.lsn, c.published > 0);
    c.at.chunk.settle({ kind: "published", events: c.published, lastSeq: this.lastSeq === c.before ? null : this.lastSeq });
  }

  /** True when the replay finds the event at `pos` in Kafka already (see ReplayFilter): it is not published again. */
  private covered(topic: string, key: string | null, commitLsn: Lsn, index: number): boolean {
    if (this.replay === null) return false;
    const pos = { commitLsn, index };
    if (this.replay.covers(topic, key, pos)) {
      this.skipped++;
      return true;
    }
    // Positions only grow along the stream: past the highest one Kafka holds, nothing is covered.
    if (this.replayEnd === null || comparePositions(pos, this.replayEnd) > 0) {
      this.log.info(
        { skipped: this.skipped, inKafkaUpTo: this.replayEnd && formatPosition(this.replayEnd), first: formatPosition(pos) },
        this.cfg.delivery === "exactly-once"
          ? "exactly-once: past the checkpoint; publishing"
          : "replay: past what Kafka holds; publishing everything from here",
      );
      this.replay = null;
    }
    return false;
  }

  /**
   * At-least-once replay: the event of a covered change is in Kafka, but its state records may not
   * be. A produce request is not atomic across partitions, and the state records go to other
   * partitions than their event; the request lost with a crash may have written the event's
   * partition and not theirs. So they are sent again, alone on the state topic. Why the state
   * topic then ends right, for every key K:
   * - every change before the slot's confirmed position had its event and state records in
   *   requests Kafka acknowledged whole (PostgreSQL is told only then), and is not replayed;
   * - every change from that position on is replayed, and each one's state records pushed again:
   *   covered ones here, the others with their event. Pushes follow WAL order, K's records all go
   *   to one partition (the key is K), and the publisher sends one request at a time, idempotent,
   *   in push order. So, once the replay passes K's latest change, K's last record in the
   *   partition is that change's, whatever an earlier session had written: last-write-wins, as
   *   compaction and applyStateRecord fold it, gives K's latest state. A crash during the replay
   *   starts the same argument over from the (possibly further) confirmed position.
   * Until the replay passes it, K's last record may be an older one re-sent (the state goes back
   * by at most the unacknowledged tail, then forward). Exactly-once needs none of this: a covered
   * event's state records were committed in its transaction.
   */
  private resendState({ state, commitLsn, index }: SinkRecord): void {
    const topic = this.cfg.stateTopic;
    if (topic === null || state === undefined) return;
    this.txPublished = true;
    for (const st of state) this.parts.sink.push({ topic, key: st.key, value: st.value, seq: this.parts.ack.next(), commitLsn, index });
    this.parts.ack.pauseIfFull();
  }

  /**
   * An event larger than Kafka will take is never dropped silently: without a dead-letter topic the
   * session stops (nothing after it is acknowledged) with an error naming the row; with one, a
   * summary goes there in the event's place, in order, and is counted.
   */
  private oversized({ where, bytes, summary }: Oversize, commitLsn: Lsn, index: number): void {
    const dlq = this.cfg.deadLetterTopic;
    this.parts.metrics.oversized.inc();
    if (dlq === null || summary === null) {
      this.parts.life.halted = true;
      throw new MessageTooLargeError(
        `the ${where.type} event of dag_id=${where.dag_id} task_id=${where.task_id} run_id=${where.run_id} (position ${where.position}) is ${bytes} bytes, over EVENTSTREAM_MAX_MESSAGE_BYTES=${this.cfg.maxMessageBytes}. Raise max.message.bytes on the topic and EVENTSTREAM_MAX_MESSAGE_BYTES, or set EVENTSTREAM_DEAD_LETTER_TOPIC to divert such events; nothing after it has been acknowledged`,
      );
    }
    this.deadLettered++;
    this.log.warn(
      { ...where, bytes, topic: dlq, dead_lettered_total: this.deadLettered },
      "event over the size limit sent to the dead-letter topic",
    );
    this.lastSeq = this.parts.ack.next();
    this.parts.sink.push({ topic: dlq, key: where.dag_id as string | null, value: summary, seq: this.lastSeq, commitLsn, index });
  }
}
