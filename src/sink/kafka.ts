import { isIP } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import { Kafka, Partitioners, logLevel, type Admin, type ConfigResourceTypes, type Producer, type TopicMessages, type Message, type LogEntry, type SASLOptions } from "kafkajs";
import type { Config } from "../config.js";
import type { SourceIdentity } from "../checkpoint/position.js";
import type { SinkAck } from "../checkpoint/ack.js";
import type { Lsn } from "../decode/types.js";
import { CHECKPOINT_FIX, comparePositions, encodeCheckpoint, formatPosition, parseCheckpoint, type Checkpoint, type Position } from "../checkpoint/position.js";
import { formatLsn, maxLsn } from "../checkpoint/lsn.js";
import { CheckpointError, causeChain, PrivilegeError, ProducerFencedError, TlsError, TopicError, TransientError, UserActionError, assertNever, tlsFailure, type TlsFailure } from "../errors.js";
import type { Logger } from "../log.js";
import { TAIL_OFFSETS, newSentinelValue, scanToSentinels, sentinelKey, type ScanOptions } from "./checkpoint-topic.js";
import { batchEnd, recordBytes } from "./batch.js";
import { readBack, type ReadBackResult } from "./read-back.js";
import { TopicRouter } from "./routing.js";

/**
 * kafkajs's retries for the client and the producer. Bounded, unlike kafkajs's idempotent default
 * (infinite): after ~1 min of failures the pipeline restarts from the slot instead, saying so in
 * the logs.
 */
const BOUNDED_RETRY = { initialRetryTime: 300, maxRetryTime: 10_000, retries: 8 } as const;

/** One event ready for Kafka, with the sequence number the checkpoint tracker gave it. */
export interface SinkRecord {
  topic: string;
  key: string | null;
  /** One copy to each partition of the topic, all acknowledged together under this one seq. */
  allPartitions?: boolean;
  value: string;
  seq: number;
  /** Position of the row change it comes from: the checkpoint of exactly-once delivery. */
  commitLsn: Lsn;
  index: number;
}

/** One transactional id per slot: a second daemon on the same slot fences the first. */
export function transactionalIdFor(slot: string): string {
  return `airflow-eventstream.${slot}`;
}

/** kafkajs's ConfigResourceTypes.TOPIC: the enum is not among the names Node's ESM loader finds in kafkajs's CommonJS exports. */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

/**
 * The checkpoint topic is read from its start at every exactly-once start, and takes one record per
 * batch (hundreds a second under load). Compaction never touches the active segment, so small
 * segments keep what a start reads small: at most a few segments of 16 MiB, not Kafka's default of
 * 1 GiB.
 */
const CHECKPOINT_TOPIC_CONFIG = [
  { name: "cleanup.policy", value: "compact" },
  { name: "segment.bytes", value: String(16 * 1024 * 1024) },
  { name: "segment.ms", value: String(60 * 60 * 1000) },
];

/** Longest wait for the checkpoint topic to be read to its end (see checkpoint-topic.ts). */
const CHECKPOINT_READ_TIMEOUT_MS = 120_000;

export interface SinkCallbacks {
  /** A batch failed after the client's own retries: the pipeline must stop and resume from the slot. */
  failed(e: Error): void;
  /** The acknowledgement rule (src/checkpoint/ack.ts): told what Kafka acknowledged and made durable, asked what a checkpoint records. */
  ack: SinkAck;
}

/**
 * The Kafka publisher. Records are sent in the order they were pushed, one produce request at a
 * time: while a request is in flight, new records gather into the next batch. That gives large
 * batches under load and an immediate send when idle, with no linger timer and no await per event.
 *
 * The producer is idempotent (acks=all, one request in flight), so a retried request cannot
 * reorder or duplicate within a partition; keys are dag_ids, so each DAG's events keep their order.
 *
 * Exactly-once (EVENTSTREAM_DELIVERY=exactly-once): the producer is transactional, with an id
 * derived from the slot. `readCheckpoint()` fences any older producer of that id and returns the
 * latest checkpoint; then each batch is one Kafka transaction holding its events and a checkpoint
 * record (key = slot, value = the position of the batch's last record) on the checkpoint topic,
 * and `acked` is called only after the transaction committed. So the events a checkpoint covers
 * are committed exactly when it is, and a restarted daemon skips what the checkpoint covers.
 *
 * Both modes (unless EVENTSTREAM_GAP_DETECTION=false): every checkpoint carries acked_lsn, and the
 * pipeline acknowledges PostgreSQL only up to what a durable checkpoint says (`checkpointed`), so
 * a slot found past it later was moved by someone else (src/checkpoint/gap.ts). Every produce
 * request (exactly-once: every transaction) carries a checkpoint, and one goes alone when the
 * pipeline asks (`requestCheckpoint`, rate-limited there) while no events flow. Checkpoints go
 * through the same one-request-at-a-time pump as events: one transaction at a time, and every
 * batch before a checkpoint settled.
 */
export class KafkaSink {
  private readonly kafka: Kafka;
  private producer: Producer | null = null;
  private admin: Admin | null = null;
  /** Exactly-once only: where the checkpoints go, under which key, with which producer id. */
  private readonly eos: { topic: string; key: string; transactionalId: string } | null;
  /** Where the checkpoints go and under which key; null: at-least-once without gap detection. */
  private readonly ckpt: { topic: string; key: string } | null;
  /** Set by readCheckpoint(): no checkpoint (and in exactly-once no batch) is written before. */
  private source: SourceIdentity | null = null;
  /** The position written into a checkpoint without events: the last event Kafka acknowledged (before any: the one read at start). */
  private lastPosition: Position | null = null;
  /** Every acked_lsn written is at least this: the highest written or read (see setAckedFloor). */
  private ackedFloor: Lsn = 0n;
  /** A checkpoint is wanted in the next request (requestCheckpoint, checkpointNow). */
  private checkpointWanted = false;
  private checkpointInFlight = false;
  private checkpointWaiters: ((ackedLsn: Lsn | null) => void)[] = [];
  private readonly closers: (() => Promise<void>)[] = [];
  private readonly queue: SinkRecord[] = [];
  /** recordBytes() of each queued record, same index. */
  private readonly sizes: number[] = [];
  private head = 0;
  private sending = false;
  /** close() was called: nothing more is sent. */
  private stopped = false;
  /** A batch failed: no more events; at-least-once may still write a checkpoint (see checkpointNow). */
  private broken = false;
  private queuedBytes = 0;
  private readonly knownTopics = new Set<string>();
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly callbacks: SinkCallbacks,
  ) {
    const klog = log.child({ component: "kafkajs" });
    const { ssl, sasl } = cfg.kafka;
    this.kafka = new Kafka({
      clientId: cfg.kafka.clientId,
      brokers: cfg.kafka.brokers,
      ...(ssl ? { ssl: tlsOptions(ssl) } : {}),
      // A union of one object per mechanism; all three used here take a user name and password.
      ...(sasl ? { sasl: sasl as SASLOptions } : {}),
      connectionTimeout: 5_000,
      requestTimeout: 30_000,
      logLevel: logLevel.WARN,
      logCreator: () => (entry: LogEntry) => {
        // kafkajs's own messages, as structured fields; its log objects carry no credentials.
        const { message, ...rest } = entry.log;
        // Retries are bounded on purpose (see connect()); kafkajs warns about that on every start.
        if (message.startsWith("Limiting retries for the idempotent producer")) return;
        // A transaction begun while the coordinator still completes the previous one (or a fenced
        // predecessor's) is refused with CONCURRENT_TRANSACTIONS, logged by kafkajs as an error (in
        // the message, or in `error` of a "Response AddPartitionsToTxn" line), and retried, as it must be.
        if (`${message} ${String(rest.error ?? "")}`.includes("another concurrent operation on the same transaction")) {
          klog.debug({ namespace: entry.namespace }, "CONCURRENT_TRANSACTIONS (retried)");
          return;
        }
        const fields = { namespace: entry.namespace, ...rest };
        if (entry.level <= logLevel.ERROR) klog.error(fields, message);
        else klog.warn(fields, message);
      },
      retry: BOUNDED_RETRY,
    });
    this.eos = cfg.delivery === "exactly-once" ? { topic: cfg.checkpointTopic, key: cfg.slot, transactionalId: transactionalIdFor(cfg.slot) } : null;
    this.ckpt = cfg.gapDetection || this.eos ? { topic: cfg.checkpointTopic, key: cfg.slot } : null;
  }

  /**
   * Connects, and makes sure the single topic and the checkpoint topic exist (per-DAG topics are
   * ensured on first use). `ensureCheckpointTopic: false` for reset-checkpoint, which only needs
   * to know whether it exists.
   */
  async connect(fixedTopic: string | null, { ensureCheckpointTopic = true } = {}): Promise<void> {
    if (this.cfg.kafka.ssl) await this.checkCertificate(tlsOptions(this.cfg.kafka.ssl));
    try {
      this.admin = this.kafka.admin();
      await this.admin.connect();
      this.producer = this.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        createPartitioner: Partitioners.DefaultPartitioner,
        allowAutoTopicCreation: false,
        retry: BOUNDED_RETRY,
        // Exactly-once: kafkajs runs InitProducerId with this id at the first transaction() (not
        // at connect()); that is what fences an older producer (beginExactlyOnce). The retries
        // start short because the common retriable error here is CONCURRENT_TRANSACTIONS: a
        // transaction begun right after a commit, while the coordinator still writes its markers
        // (measured: ~15% of back-to-back transactions, cleared within milliseconds; a 300 ms first
        // retry would cost that much latency each time). ~1 min in all, as above.
        ...(this.eos ? { transactionalId: this.eos.transactionalId, retry: { initialRetryTime: 5, maxRetryTime: 10_000, retries: 17 } } : {}),
      });
      await this.producer.connect();
    } catch (e: unknown) {
      throw this.userAction(e) ?? new TransientError(`Kafka at ${this.cfg.kafka.brokers.join(",")} is unreachable (${(e as Error).message}); retrying`, { cause: e });
    }
    if (fixedTopic !== null) await this.ensureTopics([fixedTopic]);
    if (this.ckpt && ensureCheckpointTopic) await this.ensureCheckpointTopic(this.ckpt.topic);
  }

  /**
   * Reads the latest checkpoint of this slot, once the slot is ours (or, when the slot is missing,
   * before it is created): null when there is none. Must precede every send.
   *
   * Exactly-once: the first transaction() makes kafkajs send InitProducerId with this slot's
   * transactional id: Kafka bumps the epoch, so an older daemon with the same id (a zombie) can
   * never commit again, and any transaction it left open is aborted before the call returns
   * (kafkajs retries the CONCURRENT_TRANSACTIONS answers meanwhile). That transaction commits one
   * sentinel per partition of the checkpoint topic; reading until they arrive reads the topic to
   * its end (see checkpoint-topic.ts). At-least-once writes the sentinels without a transaction:
   * there is no zombie to fence (one daemon holds the slot; a checkpoint is only ever written by
   * the daemon that streams from it), only the end of the topic to find.
   */
  async readCheckpoint(source: SourceIdentity): Promise<Checkpoint | null> {
    const ckpt = this.ckpt;
    if (!ckpt) throw new Error("readCheckpoint() needs a checkpoint topic (exactly-once, or EVENTSTREAM_GAP_DETECTION)");
    const admin = this.admin!;
    const meta = await admin.fetchTopicMetadata({ topics: [ckpt.topic] });
    const partitions = meta.topics[0]?.partitions.map((p) => p.partitionId) ?? [];
    if (partitions.length === 0) throw new TransientError(`no partitions found for the checkpoint topic ${ckpt.topic}; retrying`);
    const sentinels = new Map(partitions.map((p) => [p, newSentinelValue()] as const));
    // The end before the sentinels: start a little before it (see TAIL_OFFSETS).
    const startAt = new Map<number, bigint>();
    for (const o of await admin.fetchTopicOffsets(ckpt.topic)) {
      const start = BigInt(o.high) - TAIL_OFFSETS;
      if (start > BigInt(o.low)) startAt.set(o.partition, start);
    }
    const key = sentinelKey(ckpt.key);
    const sentinelMessages = [{ topic: ckpt.topic, messages: [...sentinels].map(([partition, value]) => ({ key, value, partition })) }];
    const started = Date.now();
    if (this.eos) {
      const tx = await this.producer!.transaction().catch((e: unknown) => {
        throw this.explain(e, "initialising the transactional producer");
      });
      try {
        await tx.sendBatch({ topicMessages: sentinelMessages, acks: -1 });
        await tx.commit();
      } catch (e: unknown) {
        await tx.abort().catch(() => undefined);
        throw this.explain(e, "committing the start sentinel");
      }
    } else {
      await this.producer!.sendBatch({ topicMessages: sentinelMessages, acks: -1 }).catch((e: unknown) => {
        throw this.explain(e, "writing the start sentinel");
      });
    }
    const fencedMs = Date.now() - started;
    const scanOpts: ScanOptions = {
      topic: ckpt.topic,
      key: ckpt.key,
      sentinels,
      clientId: this.cfg.kafka.clientId,
      timeoutMs: CHECKPOINT_READ_TIMEOUT_MS,
      log: this.log,
      track: (close) => this.closers.push(close),
    };
    let scan = await scanToSentinels(this.kafka, { ...scanOpts, startAt });
    let fullRead = false;
    if (scan.unresolved.length > 0) {
      // Not among the last records (a first start, or many other slots' records since): the whole topic.
      fullRead = true;
      scan = await scanToSentinels(this.kafka, scanOpts);
    }
    let latest: Checkpoint | null = null;
    for (const [partition, value] of scan.last) {
      if (value === null) continue;
      const cp = parseCheckpoint(value, `the checkpoint of slot "${ckpt.key}" in ${ckpt.topic} (partition ${partition})`);
      if (cp.systemIdentifier !== null && source.systemIdentifier !== null && cp.systemIdentifier !== source.systemIdentifier) {
        throw new CheckpointError(
          `the checkpoint of slot "${ckpt.key}" in ${ckpt.topic} was written for another PostgreSQL cluster (system identifier ${cp.systemIdentifier}${cp.database ? `, database ${cp.database}` : ""}; this one is ${source.systemIdentifier}): two sources share slot name "${ckpt.key}" on this Kafka cluster, or the database moved to a new cluster. Give each source its own EVENTSTREAM_SLOT (or EVENTSTREAM_CHECKPOINT_TOPIC). ${CHECKPOINT_FIX}`,
        );
      }
      latest = latest === null ? cp : newer(cp, latest);
    }
    this.source = source;
    this.lastPosition = latest?.position ?? null;
    this.ackedFloor = latest?.ackedLsn ?? 0n;
    const fields = {
      topic: ckpt.topic,
      checkpoint: latest?.position ? formatPosition(latest.position) : null,
      ackedLsn: latest?.ackedLsn ? formatLsn(latest.ackedLsn) : null,
      checkpointWrittenAt: latest?.writtenAt ?? null,
      recordsRead: scan.records,
      fullRead,
      fencedMs,
      readMs: Date.now() - started - fencedMs,
    };
    if (this.eos) {
      this.log.info({ transactionalId: this.eos.transactionalId, ...fields }, latest ? "exactly-once: resuming after the checkpoint" : "exactly-once: no checkpoint for this slot yet");
    } else {
      this.log.info(fields, latest ? "read the checkpoint" : "no checkpoint for this slot yet");
    }
    return latest;
  }

  /**
   * Reads back the last `perPartition` records of every partition of the event topics this slot
   * publishes to (see read-back.ts): the single topic (with EVENTSTREAM_TOPIC_TEMPLATE, for events
   * without a dag_id), the topics of `dagIds` (with a template), and the dead-letter topic; those
   * that exist. Must precede every send.
   */
  async readBack(perPartition: number, dagIds: readonly string[], onEvent: (value: Record<string, unknown>) => void): Promise<ReadBackResult> {
    const { cfg } = this;
    const existing = new Set(await this.admin!.listTopics());
    const topics = new Set<string>();
    if (cfg.topicTemplate !== null) {
      const router = new TopicRouter(cfg.topic, cfg.topicTemplate);
      for (const d of dagIds) {
        const t = router.topicFor(d);
        if (existing.has(t)) topics.add(t);
      }
    }
    for (const t of [cfg.topic, cfg.deadLetterTopic]) if (t !== null && existing.has(t)) topics.add(t);
    if (this.ckpt) topics.delete(this.ckpt.topic);
    try {
      return await readBack(this.kafka, this.admin!, {
        topics: [...topics],
        perPartition,
        clientId: cfg.kafka.clientId,
        timeoutMs: CHECKPOINT_READ_TIMEOUT_MS,
        log: this.log,
        track: (close) => this.closers.push(close),
        onEvent,
      });
    } catch (e: unknown) {
      throw this.explain(e, "reading back the event topics");
    }
  }

  /**
   * Every acked_lsn written from now on is at least `lsn`. readCheckpoint() sets it to the acked_lsn
   * read, so the record in Kafka never goes back below what PostgreSQL may already have been told
   * (a session that starts behind its predecessor's last checkpoint would otherwise write a lower
   * one); the pipeline lowers it when that checkpoint belongs to a WAL history the server left.
   */
  setAckedFloor(lsn: Lsn): void {
    this.ackedFloor = lsn;
  }

  /** Asks for a checkpoint in the next produce request (or alone, when idle). */
  requestCheckpoint(): void {
    if (!this.ckpt || this.source === null) return;
    this.checkpointWanted = true;
    this.pump();
  }

  /** A checkpoint is asked for or on its way: asking again would add nothing. */
  get checkpointPending(): boolean {
    return this.checkpointWanted || this.checkpointInFlight;
  }

  /**
   * Writes a checkpoint after everything queued so far and resolves with its acked_lsn once Kafka
   * has it; null when it could not be written (no checkpoint topic, not started, closed, failed).
   * At-least-once also after a batch failed: the checkpoint claims only what Kafka acknowledged
   * before, which a failed request does not change. Never in exactly-once after a failure: a
   * transaction whose commit outcome is unknown may be in Kafka, and a checkpoint-only record
   * with the earlier position would make the next start publish it again.
   */
  checkpointNow(): Promise<Lsn | null> {
    if (!this.ckpt || this.source === null || this.stopped || (this.broken && this.eos)) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.checkpointWaiters.push(resolve);
      this.checkpointWanted = true;
      this.pump();
    });
  }

  /**
   * Deletes this slot's checkpoint (a tombstone), for `airflow-eventstream reset-checkpoint`.
   * Exactly-once in a transaction of this slot's transactional id: that fences any daemon still
   * holding it, whose later checkpoint would otherwise bring the deleted one back. Returns false
   * when the checkpoint topic does not exist (nothing to delete).
   */
  async deleteCheckpoint(): Promise<boolean> {
    const ckpt = this.ckpt;
    if (!ckpt) throw new Error("deleteCheckpoint() needs a checkpoint topic");
    if (!(await this.admin!.listTopics()).includes(ckpt.topic)) return false;
    const topicMessages = [{ topic: ckpt.topic, messages: [{ key: ckpt.key, value: null }] }];
    try {
      if (this.eos) {
        await this.inTransaction(topicMessages);
      } else {
        await this.producer!.sendBatch({ topicMessages, acks: -1 });
      }
    } catch (e: unknown) {
      throw this.explain(e, `writing the tombstone for key "${ckpt.key}" to ${ckpt.topic}`);
    }
    return true;
  }

  /** Queues a record. Never blocks: the pipeline pauses PostgreSQL when `inflightBytes` is too high. */
  push(rec: SinkRecord): void {
    const size = recordBytes(rec.value, rec.key);
    this.queue.push(rec);
    this.sizes.push(size);
    this.queuedBytes += size;
    if (!this.sending) this.pump();
  }

  /** Bytes of records not yet acknowledged by Kafka (those queued and those in the request). */
  get inflightBytes(): number {
    return this.queuedBytes;
  }

  /** Resolves when every pushed record is acknowledged (or the sink stopped). */
  idle(): Promise<void> {
    if (!this.sending && this.head >= this.queue.length) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.wakeIdle();
    this.settleCheckpointWaiters(this.checkpointWaiters.splice(0), null);
    for (const close of this.closers.splice(0)) await close();
    await this.producer?.disconnect().catch(() => undefined);
    await this.admin?.disconnect().catch(() => undefined);
  }

  private pump(): void {
    if (this.sending || this.stopped) return;
    const haveEvents = !this.broken && this.head < this.queue.length;
    // Every request with events carries a checkpoint (one small record on the checkpoint topic's
    // partition), so PostgreSQL hears of what Kafka has within about a batch: after a crash,
    // at-least-once re-delivers little more than the batch in flight (measured: a checkpoint only
    // once per status interval re-delivered hundreds of times more). Without events, only when
    // asked (the pipeline rate-limits that: keepalives move the safe position often while Airflow
    // is quiet).
    const withCheckpoint = this.ckpt !== null && this.source !== null && (this.checkpointWanted || haveEvents) && !(this.broken && this.eos);
    if (!haveEvents && !withCheckpoint) {
      this.wakeIdle();
      return;
    }
    this.sending = true;
    let batch: SinkRecord[] = [];
    let bytes = 0;
    if (haveEvents) {
      // Capped by count and by bytes: Kafka refuses a partition's record batch over max.message.bytes
      // (1 MiB by default), and a burst of one DAG (a big clear, a 1,024-way map) all lands on one
      // partition. Refused, the batch would be retried whole, forever. Counted in bytes (see batch.ts).
      const next = batchEnd(this.sizes, this.head, this.cfg.batchMaxEvents, this.cfg.batchMaxBytes);
      bytes = next.bytes;
      batch = this.queue.slice(this.head, next.end);
      this.head = next.end;
      if (this.head > 4096 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.sizes.splice(0, this.head);
        this.head = 0;
      }
    }
    // Waiters are answered by a checkpoint written after they asked, i.e. this one.
    const waiters = withCheckpoint ? this.checkpointWaiters.splice(0) : [];
    if (withCheckpoint) {
      this.checkpointWanted = false;
      this.checkpointInFlight = true;
    }
    const last = batch.length > 0 ? batch[batch.length - 1]! : null;
    const checkpoint = withCheckpoint ? this.nextCheckpoint(last) : null;
    this.send(batch, checkpoint?.value ?? null).then(
      () => {
        this.queuedBytes -= bytes;
        this.sending = false;
        this.checkpointInFlight = false;
        if (last !== null) {
          this.lastPosition = { commitLsn: last.commitLsn, index: last.index };
          this.callbacks.ack.acked(last.seq);
        }
        if (checkpoint !== null) {
          this.ackedFloor = maxLsn(this.ackedFloor, checkpoint.ackedLsn);
          this.callbacks.ack.checkpointed(checkpoint.ackedLsn);
          this.settleCheckpointWaiters(waiters, checkpoint.ackedLsn);
        }
        this.pump();
      },
      (e: unknown) => {
        this.sending = false;
        this.checkpointInFlight = false;
        this.broken = true;
        this.wakeIdle();
        this.settleCheckpointWaiters(waiters, null);
        if (batch.length > 0) this.callbacks.failed(this.explain(e, `publishing ${batch.length} events`));
        else this.callbacks.failed(this.explain(e, `writing the checkpoint to ${this.ckpt?.topic}`));
        // At-least-once: a checkpoint asked for meanwhile may still go (checkpointNow).
        this.settleCheckpointWaiters(this.checkpointWaiters.splice(0), null);
      },
    );
  }

  /**
   * The checkpoint record for a request whose last event is `last` (null: no events).
   *
   * acked_lsn: the safe position as it will be once this request's events are in Kafka. It only
   * has to be an upper bound of what PostgreSQL is told (that is all the gap check relies on), and
   * PostgreSQL is told nothing before the request succeeds, so a request that fails half-way (some
   * partitions written, others not: a plain produce request can) leaves a record that claims at
   * most one batch too much, which no slot can fall into unnoticed but by being moved into exactly
   * that batch. Recording the position after the batch, rather than before, keeps PostgreSQL's
   * acknowledgement from trailing Kafka by a further batch.
   *
   * position: exactly-once, the last event's: the transaction makes it true together with the
   * events. At-least-once, the last event Kafka had already acknowledged: the position must never
   * claim an event that may be missing, as an exactly-once start would skip by it.
   * acked_lsn never goes below the floor (setAckedFloor).
   */
  private nextCheckpoint(last: SinkRecord | null): { value: string; ackedLsn: Lsn } {
    const source = this.source!;
    const position = this.eos !== null && last !== null ? { commitLsn: last.commitLsn, index: last.index } : this.lastPosition;
    const ackedLsn = maxLsn(this.ackedFloor, this.callbacks.ack.ackedLsnFor(last === null ? null : last.seq));
    const value = encodeCheckpoint({
      position,
      ackedLsn,
      slot: this.ckpt!.key,
      systemIdentifier: source.systemIdentifier,
      database: source.database,
      writtenAt: new Date().toISOString(),
    });
    return { value, ackedLsn };
  }

  private settleCheckpointWaiters(waiters: ((ackedLsn: Lsn | null) => void)[], ackedLsn: Lsn | null): void {
    for (const w of waiters) w(ackedLsn);
  }

  private async send(batch: SinkRecord[], checkpoint: string | null): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const r of batch) {
      let msgs = byTopic.get(r.topic);
      if (!msgs) byTopic.set(r.topic, (msgs = []));
      msgs.push({ key: r.key, value: r.value });
    }
    const missing = [...byTopic.keys()].filter((t) => !this.knownTopics.has(t));
    if (missing.length > 0) await this.ensureTopics(missing);
    if (batch.some((r) => r.allPartitions)) await this.spreadToPartitions(batch, byTopic);
    const topicMessages: TopicMessages[] = [];
    for (const [topic, messages] of byTopic) topicMessages.push({ topic, messages });
    if (checkpoint !== null) topicMessages.push({ topic: this.ckpt!.topic, messages: [{ key: this.ckpt!.key, value: checkpoint }] });
    if (this.eos === null) {
      await this.producer!.sendBatch({ topicMessages, acks: -1 });
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
    const meta = await this.admin!.fetchTopicMetadata({ topics });
    for (const topic of topics) {
      const partitions = meta.topics.find((t) => t.name === topic)?.partitions.map((p) => p.partitionId) ?? [];
      if (partitions.length === 0) throw new TransientError(`no partitions found for topic ${topic}; retrying`);
      const msgs: Message[] = [];
      for (const r of batch) {
        if (r.topic !== topic) continue;
        if (r.allPartitions) for (const partition of partitions) msgs.push({ key: r.key, value: r.value, partition });
        else msgs.push({ key: r.key, value: r.value });
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
    if (this.source === null) throw new Error("exactly-once: a batch was sent before readCheckpoint()");
    await this.inTransaction(topicMessages);
  }

  /** One Kafka transaction: written and committed, or aborted (best effort) and the error thrown. */
  private async inTransaction(topicMessages: TopicMessages[]): Promise<void> {
    const tx = await this.producer!.transaction();
    try {
      await tx.sendBatch({ topicMessages, acks: -1 });
      await tx.commit();
    } catch (e: unknown) {
      await tx.abort().catch(() => undefined);
      throw e;
    }
  }

  /**
   * kafkajs retries a failed TLS handshake like any connection error, for about a minute, and then
   * reports the broker unreachable; yet a certificate the configured CA does not verify will not
   * verify on a retry either. So the first bootstrap broker that answers is checked once, up front,
   * with the options kafkajs will use: a certificate problem stops the daemon at once, saying what to
   * change. A broker that does not answer is left to kafkajs's retries.
   */
  private async checkCertificate(options: ConnectionOptions): Promise<void> {
    for (const broker of this.cfg.kafka.brokers) {
      const sep = broker.lastIndexOf(":");
      const host = broker.slice(0, sep).replace(/^\[(.*)\]$/, "$1");
      const port = Number(broker.slice(sep + 1));
      const outcome = await new Promise<"ok" | "no answer" | TlsFailure>((resolve) => {
        // As kafkajs's socket factory: SNI with host names only.
        const socket = tlsConnect({ host, port, ...(isIP(host) === 0 ? { servername: host } : {}), ...options });
        socket.setTimeout(5_000, () => {
          socket.destroy();
          resolve("no answer");
        });
        socket.once("secureConnect", () => {
          socket.destroy();
          resolve("ok");
        });
        socket.once("error", (e: Error) => {
          socket.destroy();
          resolve(tlsFailure(e) ?? "no answer");
        });
      });
      if (outcome === "ok") return;
      if (outcome !== "no answer") throw new TlsError(this.explainTls(outcome, broker));
    }
  }

  /** A failure the operator must act on (TLS certificate, SASL login), as such; undefined otherwise. */
  private userAction(e: unknown): UserActionError | undefined {
    if (e instanceof UserActionError) return e;
    const tls = tlsFailure(e);
    if (tls) return new TlsError(this.explainTls(tls, this.cfg.kafka.brokers.join(",")), { cause: e });
    const sasl = this.cfg.kafka.sasl;
    if (sasl && hasErrorNamed(e, "KafkaJSSASLAuthenticationError")) {
      const mechanism = sasl.mechanism.toUpperCase();
      const scram = sasl.mechanism === "plain" ? "" : `; for SCRAM: kafka-configs.sh --alter --add-config '${mechanism}=[password=...]' --entity-type users --entity-name ${sasl.username}`;
      return new PrivilegeError(
        `Kafka at ${this.cfg.kafka.brokers.join(",")} refused the SASL ${mechanism} login of user "${sasl.username}" (${(e as Error).message}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, and that KAFKA_SASL_MECHANISM is enabled on the brokers' listener and the user has credentials for it${scram}`,
        { cause: e },
      );
    }
    return undefined;
  }

  private explainTls(tls: TlsFailure, broker: string): string {
    const ca = this.cfg.kafka.ssl?.ca ? `the CA in KAFKA_SSL_CA_FILE (${this.cfg.kafka.ssl.ca.path})` : "the CAs Node.js trusts (KAFKA_SSL_CA_FILE is not set)";
    switch (tls.kind) {
      case "ca":
        return `Kafka broker ${broker} presented a certificate not signed by ${ca} (${tls.code}: ${tls.message}): set KAFKA_SSL_CA_FILE to the PEM file of the CA that signed the brokers' certificates`;
      case "name":
        return (
          `Kafka broker ${broker} presented a certificate that does not name the host connected to (${tls.message}${tls.certificateNames ? `; it names ${tls.certificateNames}` : ""}): ` +
          "list the brokers in KAFKA_BROKERS by names their certificates carry (and advertise such names in the brokers' advertised.listeners), or give the brokers certificates that name their hosts"
        );
      case "date":
        return `Kafka broker ${broker} presented a certificate that is expired or not yet valid (${tls.code}: ${tls.message}): renew the brokers' certificates, or check this machine's clock`;
      case "not-tls":
        return `Kafka broker ${broker} does not speak TLS on that port (KAFKA_SSL=true): point KAFKA_BROKERS at the brokers' SSL or SASL_SSL listener, or set KAFKA_SSL=false`;
      default:
        return assertNever(tls.kind);
    }
  }

  /** The error that ends the session, saying what happened; fencing is named as such. */
  private explain(e: unknown, what: string): Error {
    if (e instanceof TransientError) return e;
    const userAction = this.userAction(e);
    if (userAction) return userAction;
    const message = (e as Error)?.message ?? String(e);
    const denied = authorizationFailure(e);
    if (denied) {
      // Not retried: a missing ACL does not grant itself.
      return new TopicError(
        `${what}: Kafka refused it (${denied}): the daemon's principal needs WRITE and DESCRIBE on its topics${this.ckpt ? ` and READ, WRITE and DESCRIBE on the checkpoint topic ${this.ckpt.topic}, READ on the consumer groups ${this.cfg.kafka.clientId}.checkpoint-reader.*` : ""}, READ on its topics and the consumer groups ${this.cfg.kafka.clientId}.read-back.* (the start reads back their tail)${this.eos ? `, WRITE and DESCRIBE on the transactional id ${this.eos.transactionalId}` : ""} and IDEMPOTENT_WRITE on the cluster (see README, "Setting up PostgreSQL and Kafka for production")${this.ckpt && !this.eos ? "; or set EVENTSTREAM_GAP_DETECTION=false to run at-least-once without the checkpoint topic (a dropped or recreated slot then goes unnoticed)" : ""}`,
        { cause: e },
      );
    }
    if (this.eos && isFenced(e)) {
      return new ProducerFencedError(
        `${what}: Kafka refused transactional id ${this.eos.transactionalId} (${message}): another daemon on slot "${this.eos.key}" has started a producer with it, or a transaction outlived its timeout; restarting from the slot`,
        { cause: e },
      );
    }
    return new TransientError(`${what} to Kafka failed (${message}); resuming from the last acknowledged position`, { cause: e });
  }

  /**
   * The checkpoint topic: compacted (one record per slot is all that matters), one partition,
   * small segments (see CHECKPOINT_TOPIC_CONFIG).
   * An existing topic that is not compacted works, but its checkpoints expire with its retention;
   * a daemon started after that publishes the unacknowledged tail again, so say so.
   */
  private async ensureCheckpointTopic(topic: string): Promise<void> {
    const admin = this.admin!;
    const existing = new Set(await admin.listTopics());
    if (!existing.has(topic)) {
      const create = `kafka-topics.sh --create --topic ${topic} --partitions 1 ${CHECKPOINT_TOPIC_CONFIG.map((c) => `--config ${c.name}=${c.value}`).join(" ")}`;
      // At-least-once needs the topic only for gap detection, which can be switched off: say so.
      const orDisable = this.eos ? "" : "; or set EVENTSTREAM_GAP_DETECTION=false to run at-least-once without it (a dropped or recreated replication slot then goes unnoticed: see README)";
      if (!this.cfg.createTopics) {
        throw new TopicError(
          `the checkpoint topic ${topic} does not exist and EVENTSTREAM_CREATE_TOPICS is false: create it (e.g. ${create}) or set EVENTSTREAM_CREATE_TOPICS=true${orDisable}`,
        );
      }
      try {
        await admin.createTopics({
          waitForLeaders: true,
          topics: [{ topic, numPartitions: 1, replicationFactor: this.cfg.topicReplicationFactor, configEntries: CHECKPOINT_TOPIC_CONFIG }],
        });
      } catch (e: unknown) {
        // Another daemon (another slot) may have created it at the same moment.
        if (!(await admin.listTopics()).includes(topic)) {
          const denied = authorizationFailure(e);
          if (denied) throw new TopicError(`creating the checkpoint topic ${topic} was refused by Kafka (${denied}): create it (e.g. ${create}) and grant the daemon READ, WRITE and DESCRIBE on it${orDisable}`, { cause: e });
          throw e;
        }
      }
      this.log.info({ topic, partitions: 1, cleanupPolicy: "compact" }, "created the checkpoint topic");
    } else {
      const described = await admin.describeConfigs({ resources: [{ type: TOPIC_RESOURCE, name: topic, configNames: ["cleanup.policy"] }], includeSynonyms: false });
      const policy = described.resources[0]?.configEntries.find((c) => c.configName === "cleanup.policy")?.configValue ?? "";
      if (!policy.split(",").includes("compact")) {
        this.log.warn(
          { topic, cleanupPolicy: policy },
          "the checkpoint topic is not compacted: a checkpoint older than its retention is lost, and the next start may then publish unacknowledged events again, and cannot tell a dropped or recreated slot; set cleanup.policy=compact",
        );
      }
    }
    this.knownTopics.add(topic);
  }

  private async ensureTopics(topics: string[]): Promise<void> {
    const admin = this.admin!;
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length > 0) {
      if (!this.cfg.createTopics) {
        throw new TopicError(
          `Kafka topic(s) ${missing.join(", ")} do not exist and EVENTSTREAM_CREATE_TOPICS is false: create them (e.g. kafka-topics.sh --create --topic ${missing[0]} --partitions ${this.cfg.topicPartitions}) or set EVENTSTREAM_CREATE_TOPICS=true`,
        );
      }
      await admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((topic) => ({
          topic,
          numPartitions: this.cfg.topicPartitions,
          replicationFactor: this.cfg.topicReplicationFactor,
        })),
      });
      this.log.info({ topics: missing, partitions: this.cfg.topicPartitions }, "created Kafka topics");
    }
    for (const t of topics) this.knownTopics.add(t);
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const fn of w) fn();
  }
}

/** kafkajs's TLS options: the configured CA only, or Node's list (`true`); certificates always checked. */
function tlsOptions(ssl: NonNullable<Config["kafka"]["ssl"]>): ConnectionOptions {
  return ssl.ca ? { ca: [ssl.ca.pem], rejectUnauthorized: true } : { rejectUnauthorized: true };
}

/** Whether an error named `name` is in the cause chain (kafkajs wraps what its retrier gives up on). */
function hasErrorNamed(e: unknown, name: string): boolean {
  return causeChain(e).some((c) => (c as { name?: unknown }).name === name);
}

/**
 * The later of two checkpoints of one key found in different partitions (a pre-made topic whose
 * partitions changed): positions and acked_lsn only grow, so the larger wins.
 */
function newer(a: Checkpoint, b: Checkpoint): Checkpoint {
  if (a.position !== null && b.position !== null) {
    const c = comparePositions(a.position, b.position);
    if (c !== 0) return c > 0 ? a : b;
  } else if (a.position !== b.position) {
    return a.position !== null ? a : b;
  }
  return (a.ackedLsn ?? -1n) >= (b.ackedLsn ?? -1n) ? a : b;
}

/** TOPIC_ (29), GROUP_ (30), CLUSTER_ (31), TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53), anywhere in the cause chain: its name. */
function authorizationFailure(e: unknown): string | undefined {
  for (const cur of causeChain(e)) {
    const { type, code } = cur as { type?: unknown; code?: unknown };
    if (typeof type === "string" && type.endsWith("_AUTHORIZATION_FAILED")) return type;
    if (code === 29 || code === 30 || code === 31 || code === 53) return `authorization failed, error code ${String(code)}`;
  }
  return undefined;
}

/** INVALID_PRODUCER_EPOCH (47), PRODUCER_FENCED (90), TRANSACTION_COORDINATOR_FENCED (52), anywhere in the cause chain. */
function isFenced(e: unknown): boolean {
  return causeChain(e).some((cur) => {
    const { type, code } = cur as { type?: unknown; code?: unknown };
    return type === "INVALID_PRODUCER_EPOCH" || type === "PRODUCER_FENCED" || type === "TRANSACTION_COORDINATOR_FENCED" || code === 47 || code === 90 || code === 52;
  });
}
