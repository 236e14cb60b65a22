import type { Message, TopicMessages } from "kafkajs";
import type { Config } from "../config.js";
import type { Lsn } from "../lsn.js";
import type { SinkAck } from "../checkpoint/ack.js";
import type { Position } from "../lsn.js";
import { TransientError } from "../errors.js";
import { batchEnd, recordBytesOf, stateBytes } from "./batch.js";
import { stateMessages, type StateRecord } from "./state-topic.js";
import { inTransaction, type SessionProducer } from "./client.js";
import { explain } from "./kafka-errors.js";
import type { Metrics } from "../operate/metrics.js";
import type { ValueFraming } from "./schema-registry.js";
import { WIRE_HEADER_BYTES } from "./wire-format.js";

/** One event ready for Kafka, with the sequence number the checkpoint tracker gave it. */
export interface SinkRecord {
  topic: string;
  key: string | null;
  /** One copy to each partition of the topic, all acknowledged together under this one seq. */
  allPartitions?: boolean;
  /** The event's JSON; null only for a tombstone re-sent to the state topic in a replay (see Handoff.resendState). */
  value: string | null;
  /**
   * The event's records on the current-state topic (cfg.stateTopic; state-topic.ts), sent in the
   * same produce request (exactly-once: the same transaction) and acknowledged with it.
   */
  state?: readonly StateRecord[];
  /** The record's headers (EVENTSTREAM_CLOUDEVENTS, src/sink/cloudevents.ts); absent: none. Never on the state records. */
  headers?: Readonly<Record<string, string>>;
  seq: number;
  /** Position of the row change it comes from: the checkpoint of exactly-once delivery. */
  commitLsn: Lsn;
  index: number;
}

export interface SinkCallbacks {
  /** A batch failed after the client's own retries: the session must stop and resume from the slot. */
  failed(e: Error): void;
  /** The acknowledgement rule (src/checkpoint/ack.ts): told what Kafka acknowledged and made durable, asked what a checkpoint records. */
  ack: SinkAck;
  /** Produce requests, bytes and errors are counted here (src/operate/metrics.ts); absent: not counted. */
  metrics?: Pick<Metrics, "produced" | "kafkaErrors">;
}

/** What the publisher needs of the topic admin (topics.ts). */
export interface PublisherTopics {
  /** Makes sure of the topics not made sure of yet in this session. */
  ensureKnown(topics: string[]): Promise<void>;
  /** Per topic, its partition ids, read now. */
  partitions(topics: string[]): Promise<Map<string, number[]>>;
}

/** What the publisher needs of the checkpoint store (checkpoint-store.ts). */
export interface CheckpointRecords {
  readonly topic: string;
  /** The checkpoint was read at start: checkpoints (and in exactly-once, batches) may be written. */
  readonly ready: boolean;
  /** The checkpoint message for a request whose last event is `last`, recording `ackedLsn`. */
  next(last: SinkRecord | null, ackedLsn: Lsn): TopicMessages;
  /** Kafka acknowledged the events up to this position. */
  acknowledged(position: Position): void;
}

export type PublishProducer = Pick<SessionProducer, "sendBatch" | "transaction">;

/**
 * The Kafka publisher. Records are sent in the order they were pushed, one produce request at a
 * time: while a request is in flight, new records gather into the next batch. That gives large
 * batches under load and an immediate send when idle, with no linger timer and no await per event.
 *
 * The producer is idempotent (acks=all, one request in flight), so a retried request cannot
 * reorder or duplicate within a partition; keys are dag_ids, so each DAG's events keep their order.
 *
 * Exactly-once (EVENTSTREAM_DELIVERY=exactly-once): the producer is transactional, with an id
 * derived from the slot. The checkpoint store's read() fences any older producer of that id and
 * returns the latest checkpoint; then each batch is one Kafka transaction holding its events and a
 * checkpoint record (key = slot, value = the position of the batch's last record) on the checkpoint
 * topic, and `acked` is called only after the transaction committed. So the events a checkpoint
 * covers are committed exactly when it is, and a restarted daemon skips what the checkpoint covers.
 *
 * Both modes (unless EVENTSTREAM_GAP_DETECTION=false): every checkpoint carries acked_lsn, and the
 * ack rule acknowledges PostgreSQL only up to what a durable checkpoint says (`checkpointed`), so
 * a slot found past it later was moved by someone else (src/checkpoint/gap.ts). Every produce
 * request (exactly-once: every transaction) carries a checkpoint, and one goes alone when the
 * ack rule asks (`requestCheckpoint`, rate-limited there) while no events flow. Checkpoints go
 * through the same one-request-at-a-time pump as events: one transaction at a time, and every
 * batch before a checkpoint settled.
 */
export class Publisher {
  private readonly eos: boolean;
  /** A checkpoint is wanted in the next request (requestCheckpoint, checkpointNow). */
  private checkpointWanted = false;
  private checkpointInFlight = false;
  private checkpointWaiters: ((ackedLsn: Lsn | null) => void)[] = [];
  /**
   * Records not yet taken into a request from `head` on; before it, null: a slot taken is cleared at
   * once, so sent events (their JSON) are garbage as soon as their request is answered, not kept
   * until the next compaction (up to ~4,096 of them: several MB of live heap at a drain's peak).
   */
  private readonly queue: (SinkRecord | null)[] = [];
  /** recordBytes() of each queued record, same index. */
  private readonly sizes: number[] = [];
  /** Bytes on the current-state topic of each queued record, same index. */
  private readonly stateSizes: number[] = [];
  private head = 0;
  private sending = false;
  /** stop() was called: nothing more is sent. */
  private stopped = false;
  /** A batch failed: no more events; at-least-once may still write a checkpoint (see checkpointNow). */
  private broken = false;
  private queuedBytes = 0;
  private idleWaiters: (() => void)[] = [];

  /** `checkpoints` null: at-least-once without gap detection, no checkpoint is written. */
  constructor(
    private readonly cfg: Config,
    private readonly producer: PublishProducer,
    private readonly topics: PublisherTopics,
    private readonly checkpoints: CheckpointRecords | null,
    private readonly callbacks: SinkCallbacks,
    /** EVENTSTREAM_SCHEMA_REGISTRY_URL's framing of the values (schema-registry.ts); null: plain JSON. */
    private readonly framing: ValueFraming | null = null,
  ) {
    this.eos = cfg.delivery === "exactly-once";
  }

  /** Queues a record. Never blocks: the ack rule pauses PostgreSQL when `inflightBytes` is too high (AckRule.pauseIfFull). */
  push(rec: SinkRecord): void {
    // A replay's record of the state topic itself counts with the state records (batchEnd).
    // Framed values carry the registry's 5-byte header (wire-format.ts), the state records' as well.
    const header = this.framing === null ? 0 : WIRE_HEADER_BYTES;
    // The value's UTF-8 bytes counted once: an event's state record carries the very same string
    // (state-topic.ts), and counting walks all of it (~850 B per event).
    const valueBytes = rec.value === null ? 0 : Buffer.byteLength(rec.value, "utf8");
    const own =
      recordBytesOf(valueBytes, rec.key, rec.headers) + (rec.value !== null && this.framing?.frames(rec.topic) === true ? header : 0);
    const onState = rec.topic === this.cfg.stateTopic;
    const state = (onState ? own : 0) + stateBytes(rec.state, rec.value, valueBytes) + header * (rec.state?.length ?? 0);
    this.queue.push(rec);
    this.sizes.push(onState ? 0 : own);
    this.stateSizes.push(state);
    this.queuedBytes += (onState ? 0 : own) + state;
    if (!this.sending) this.pump();
  }

  /** Bytes of records not yet acknowledged by Kafka (those queued and those in the request). */
  get inflightBytes(): number {
    return this.queuedBytes;
  }

  /** Resolves when every pushed record is acknowledged (or the publisher stopped). */
  idle(): Promise<void> {
    if (!this.sending && this.head >= this.queue.length) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Asks for a checkpoint in the next produce request (or alone, when idle). */
  requestCheckpoint(): void {
    if (!this.checkpoints?.ready) return;
    this.checkpointWanted = true;
    this.pump();
  }

  /** A checkpoint is asked for or on its way: asking again would add nothing. */
  get checkpointPending(): boolean {
    return this.checkpointWanted || this.checkpointInFlight;
  }

  /**
   * Writes a checkpoint after everything queued so far and resolves with its acked_lsn once Kafka
   * has it; null when it could not be written (no checkpoint topic, not started, stopped, failed).
   * At-least-once also after a batch failed: the checkpoint claims only what Kafka acknowledged
   * before, which a failed request does not change. Never in exactly-once after a failure: a
   * transaction whose commit outcome is unknown may be in Kafka, and a checkpoint-only record
   * with the earlier position would make the next start publish it again.
   */
  checkpointNow(): Promise<Lsn | null> {
    if (!this.checkpoints?.ready || this.stopped || (this.broken && this.eos)) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.checkpointWaiters.push(resolve);
      this.checkpointWanted = true;
      this.pump();
    });
  }

  /** Nothing more is sent; whoever waits is answered now. */
  stop(): void {
    this.stopped = true;
    this.wakeIdle();
    settle(this.checkpointWaiters.splice(0), null);
  }

  private pump(): void {
    if (this.sending || this.stopped) return;
    const haveEvents = !this.broken && this.head < this.queue.length;
    // Every request with events carries a checkpoint (one small record on the checkpoint topic's
    // partition), so PostgreSQL hears of what Kafka has within about a batch: after a crash,
    // at-least-once re-delivers little more than the batch in flight (measured: a checkpoint only
    // once per status interval re-delivered hundreds of times more). Without events, only when
    // asked (the ack rule rate-limits that: keepalives move the safe position often while Airflow
    // is quiet).
    const store = this.checkpoints?.ready && (this.checkpointWanted || haveEvents) && !(this.broken && this.eos) ? this.checkpoints : null;
    if (!haveEvents && store === null) {
      this.wakeIdle();
      return;
    }
    this.sending = true;
    const { batch, bytes } = haveEvents ? this.takeBatch() : { batch: [], bytes: 0 };
    // Waiters are answered by a checkpoint written after they asked, i.e. this one.
    const waiters = store !== null ? this.checkpointWaiters.splice(0) : [];
    if (store !== null) {
      this.checkpointWanted = false;
      this.checkpointInFlight = true;
    }
    const last = batch.length > 0 ? batch[batch.length - 1]! : null;
    const checkpoint =
      store !== null ? checkpointRecord(store, last, this.callbacks.ack.ackedLsnFor(last === null ? null : last.seq)) : null;
    this.send(batch, checkpoint?.message ?? null).then(
      () => {
        this.queuedBytes -= bytes;
        this.sending = false;
        this.callbacks.metrics?.produced(batch.length, bytes);
        this.checkpointInFlight = false;
        if (last !== null) {
          this.checkpoints?.acknowledged({ commitLsn: last.commitLsn, index: last.index });
          this.callbacks.ack.acked(last.seq);
        }
        if (checkpoint !== null) {
          this.callbacks.ack.checkpointed(checkpoint.ackedLsn);
          settle(waiters, checkpoint.ackedLsn);
        }
        this.pump();
      },
      (e: unknown) => {
        this.sending = false;
        this.checkpointInFlight = false;
        this.broken = true;
        this.callbacks.metrics?.kafkaErrors.inc({ kind: e instanceof Error ? e.name : "unknown" });
        this.wakeIdle();
        settle(waiters, null);
        if (batch.length > 0) this.callbacks.failed(explain(this.cfg, e, `publishing ${batch.length} events`));
        else this.callbacks.failed(explain(this.cfg, e, `writing the checkpoint to ${this.checkpoints?.topic}`));
        // At-least-once: a checkpoint asked for meanwhile may still go (checkpointNow).
        settle(this.checkpointWaiters.splice(0), null);
      },
    );
  }

  /**
   * The next batch off the queue. Capped by count and by bytes: Kafka refuses a partition's record
   * batch over max.message.bytes (1 MiB by default), and a burst of one DAG (a big clear, a
   * 1,024-way map) all lands on one partition. Refused, the batch would be retried whole, forever.
   * Counted in bytes (see batch.ts).
   */
  private takeBatch(): { batch: SinkRecord[]; bytes: number } {
    const next = batchEnd(this.sizes, this.head, this.cfg.batchMaxEvents, this.cfg.batchMaxBytes, this.stateSizes);
    const batch = this.queue.slice(this.head, next.end) as SinkRecord[];
    this.queue.fill(null, this.head, next.end);
    this.head = next.end;
    if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.sizes.splice(0, this.head);
      this.stateSizes.splice(0, this.head);
      this.head = 0;
    }
    return { batch, bytes: next.bytes };
  }

  private async send(batch: SinkRecord[], checkpoint: TopicMessages | null): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const r of batch) {
      let msgs = byTopic.get(r.topic);
      if (!msgs) byTopic.set(r.topic, (msgs = []));
      // The record is its own Kafka message (key, value and headers under Message's names): no
      // copy per event. Nothing downstream writes to it; framing and spreading make new objects.
      msgs.push(r);
    }
    if (this.cfg.stateTopic !== null) {
      const state = stateMessages(batch, this.cfg.stateTopic);
      if (state.length > 0) byTopic.set(this.cfg.stateTopic, state);
    }
    await this.topics.ensureKnown([...byTopic.keys()]);
    if (batch.some((r) => r.allPartitions)) await this.spreadToPartitions(batch, byTopic);
    await this.framing?.ensureTopics([...byTopic.keys()]);
    const topicMessages: TopicMessages[] = [];
    for (const [topic, messages] of byTopic)
      topicMessages.push({ topic, messages: this.framing?.frameMessages(topic, messages) ?? messages });
    if (checkpoint !== null) topicMessages.push(checkpoint);
    if (!this.eos) {
      await this.producer.sendBatch({ topicMessages, acks: -1 });
      return;
    }
    await this.sendTransaction(topicMessages);
  }

  /**
   * Rebuilds the messages of topics holding an all-partitions record: that record once per
   * partition (partition count read now, so partitions added since are included), the others as
   * they were, in batch order.
   */
  private async spreadToPartitions(batch: SinkRecord[], byTopic: Map<string, Message[]>): Promise<void> {
    const topics = [...new Set(batch.filter((r) => r.allPartitions).map((r) => r.topic))];
    const partitionsOf = await this.topics.partitions(topics);
    for (const topic of topics) {
      const partitions = partitionsOf.get(topic) ?? [];
      if (partitions.length === 0) throw new TransientError(`no partitions found for topic ${topic}; retrying`);
      const msgs: Message[] = [];
      for (const r of batch) {
        if (r.topic !== topic) continue;
        if (r.allPartitions) for (const partition of partitions) msgs.push({ ...message(r), partition });
        else msgs.push(message(r));
      }
      byTopic.set(topic, msgs);
    }
  }

  /**
   * One Kafka transaction: the batch's events plus its checkpoint, committed together. On any
   * failure the transaction is aborted (best effort: a dead producer's transaction is aborted by
   * its successor's InitProducerId, or by the coordinator at the transaction timeout) and the
   * error ends the session. A commit whose outcome is unknown (a timeout) is safe either way: the
   * next start reads the checkpoint and skips what it covers.
   */
  private async sendTransaction(topicMessages: TopicMessages[]): Promise<void> {
    if (!this.checkpoints?.ready) throw new Error("exactly-once: a batch was sent before the checkpoint was read");
    await inTransaction(this.producer, topicMessages);
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const fn of w) fn();
  }
}

/** The Kafka message of a record: key, value and, when it has them, its headers. */
function message(r: SinkRecord): Message {
  return r.headers === undefined ? { key: r.key, value: r.value } : { key: r.key, value: r.value, headers: r.headers };
}

function checkpointRecord(store: CheckpointRecords, last: SinkRecord | null, ackedLsn: Lsn): { message: TopicMessages; ackedLsn: Lsn } {
  return { message: store.next(last, ackedLsn), ackedLsn };
}

function settle(waiters: ((ackedLsn: Lsn | null) => void)[], ackedLsn: Lsn | null): void {
  for (const w of waiters) w(ackedLsn);
}
