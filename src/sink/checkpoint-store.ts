import type { Kafka, TopicMessages } from "kafkajs";
import type { Config } from "../config.js";
import type { Lsn } from "../lsn.js";
import { CHECKPOINT_FIX, encodeCheckpoint, parseCheckpoint, type Checkpoint, type SourceIdentity } from "../checkpoint/position.js";
import { comparePositions, formatPosition, type Position } from "../lsn.js";
import { formatLsn } from "../lsn.js";
import { CheckpointError, TransientError } from "../errors.js";
import type { Logger } from "../log.js";
import { TAIL_OFFSETS, newSentinelValue, scanToSentinels, sentinelKey, type CheckpointScan, type ScanOptions } from "./checkpoint-topic.js";
import { connectClients, createClients, disconnectClients, inTransaction, type SessionProducer } from "./client.js";
import { deliveryMode, type CheckpointTarget, type DeliveryMode } from "./delivery.js";
import { explain } from "./kafka-errors.js";
import type { CheckpointRecords, SinkRecord } from "./publisher.js";
import { TopicAdmin } from "./topics.js";

/** Longest wait for the checkpoint topic to be read to its end (see checkpoint-topic.ts). */
const CHECKPOINT_READ_TIMEOUT_MS = 120_000;

/**
 * This slot's checkpoint in the checkpoint topic: read at start (by sentinel, fencing any older
 * producer in exactly-once), the record each produce request carries, and the tombstone of
 * reset-checkpoint.
 *
 * The acked_lsn each record carries is the ack rule's (src/checkpoint/ack.ts), as given. The
 * position written into a checkpoint without events is the last event Kafka acknowledged
 * (before any: the one read at start).
 */
export class CheckpointStore implements CheckpointRecords {
  private readonly mode: DeliveryMode;
  private readonly target: CheckpointTarget;
  /** Set by read(): no checkpoint (and in exactly-once no batch) is written before. */
  private source: SourceIdentity | null = null;
  private lastPosition: Position | null = null;
  /**
   * Snapshot jobs' progress (src/snapshot/), written with every checkpoint record: read at start
   * with the checkpoint, so a job resumes after a crash or takeover, and compaction keeps it with
   * the key. The coordinator sets it only once Kafka holds the chunks it covers.
   */
  snapshotProgress: unknown = null;

  /** `track` is handed the close of each consumer the read opens, so a teardown mid-read closes it. */
  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly kafka: Kafka,
    private readonly producer: Pick<SessionProducer, "sendBatch" | "transaction">,
    private readonly topics: TopicAdmin,
    private readonly track: (close: () => Promise<void>) => void,
  ) {
    this.mode = deliveryMode(cfg);
    if (!this.mode.ckpt) throw new Error("a checkpoint store needs a checkpoint topic (exactly-once, or EVENTSTREAM_GAP_DETECTION)");
    this.target = this.mode.ckpt;
  }

  get topic(): string {
    return this.target.topic;
  }

  get ready(): boolean {
    return this.source !== null;
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
  async read(source: SourceIdentity): Promise<Checkpoint | null> {
    const { topic } = this.target;
    const partitions = (await this.topics.partitions([topic])).get(topic) ?? [];
    if (partitions.length === 0) throw new TransientError(`no partitions found for the checkpoint topic ${topic}; retrying`);
    const sentinels = new Map(partitions.map((p) => [p, newSentinelValue()] as const));
    // The end before the sentinels: start a little before it (see TAIL_OFFSETS).
    const startAt = new Map<number, bigint>();
    for (const o of await this.topics.offsets(topic)) {
      const start = BigInt(o.high) - TAIL_OFFSETS;
      if (start > BigInt(o.low)) startAt.set(o.partition, start);
    }
    const started = Date.now();
    await this.writeSentinels(sentinels);
    const fencedMs = Date.now() - started;
    const { scan, fullRead } = await this.scan(sentinels, startAt);
    const latest = this.latestOf(scan, source);
    this.source = source;
    this.lastPosition = latest?.position ?? null;
    this.snapshotProgress = latest?.snapshot ?? null;
    const fields = {
      topic,
      checkpoint: latest?.position ? formatPosition(latest.position) : null,
      ackedLsn: latest?.ackedLsn ? formatLsn(latest.ackedLsn) : null,
      checkpointWrittenAt: latest?.writtenAt ?? null,
      recordsRead: scan.records,
      fullRead,
      fencedMs,
      readMs: Date.now() - started - fencedMs,
    };
    if (this.mode.eos) {
      this.log.info(
        { transactionalId: this.mode.eos.transactionalId, ...fields },
        latest ? "exactly-once: resuming after the checkpoint" : "exactly-once: no checkpoint for this slot yet",
      );
    } else {
      this.log.info(fields, latest ? "read the checkpoint" : "no checkpoint for this slot yet");
    }
    return latest;
  }

  /** One sentinel per partition; exactly-once in the transaction that fences (see read()). */
  private async writeSentinels(sentinels: Map<number, string>): Promise<void> {
    const key = sentinelKey(this.target.key);
    const sentinelMessages = [
      { topic: this.target.topic, messages: [...sentinels].map(([partition, value]) => ({ key, value, partition })) },
    ];
    if (this.mode.eos) {
      if (this.producer.transaction === undefined) throw new Error("exactly-once needs kafkajs's transactional producer");
      const tx = await this.producer.transaction().catch((e: unknown) => {
        throw explain(this.cfg, e, "initialising the transactional producer");
      });
      try {
        await tx.sendBatch({ topicMessages: sentinelMessages, acks: -1 });
        await tx.commit();
      } catch (e: unknown) {
        await tx.abort().catch(() => undefined);
        throw explain(this.cfg, e, "committing the start sentinel");
      }
    } else {
      await this.producer.sendBatch({ topicMessages: sentinelMessages, acks: -1 }).catch((e: unknown) => {
        throw explain(this.cfg, e, "writing the start sentinel");
      });
    }
  }

  private async scan(sentinels: Map<number, string>, startAt: Map<number, bigint>): Promise<{ scan: CheckpointScan; fullRead: boolean }> {
    const scanOpts: ScanOptions = {
      topic: this.target.topic,
      key: this.target.key,
      sentinels,
      clientId: this.cfg.kafka.clientId,
      timeoutMs: CHECKPOINT_READ_TIMEOUT_MS,
      log: this.log,
      track: this.track,
    };
    const scan = await scanToSentinels(this.kafka, { ...scanOpts, startAt });
    if (scan.unresolved.length === 0) return { scan, fullRead: false };
    // Not among the last records (a first start, or many other slots' records since): the whole topic.
    return { scan: await scanToSentinels(this.kafka, scanOpts), fullRead: true };
  }

  /** The latest of the checkpoints found, refused when it was written for another PostgreSQL cluster. */
  private latestOf(scan: CheckpointScan, source: SourceIdentity): Checkpoint | null {
    const { topic, key } = this.target;
    let latest: Checkpoint | null = null;
    for (const [partition, value] of scan.last) {
      if (value === null) continue;
      const cp = parseCheckpoint(value, `the checkpoint of slot "${key}" in ${topic} (partition ${partition})`);
      if (cp.systemIdentifier !== null && source.systemIdentifier !== null && cp.systemIdentifier !== source.systemIdentifier) {
        throw new CheckpointError(
          `the checkpoint of slot "${key}" in ${topic} was written for another PostgreSQL cluster (system identifier ${cp.systemIdentifier}${cp.database ? `, database ${cp.database}` : ""}; this one is ${source.systemIdentifier}): two sources share slot name "${key}" on this Kafka cluster, or the database moved to a new cluster. Give each source its own EVENTSTREAM_SLOT (or EVENTSTREAM_CHECKPOINT_TOPIC). ${CHECKPOINT_FIX}`,
        );
      }
      latest = latest === null ? cp : newer(cp, latest);
    }
    return latest;
  }

  /**
   * The checkpoint record for a request whose last event is `last` (null: no events).
   *
   * acked_lsn (`ackedLsn`, the ack rule's answer, written as given): the safe position as it will
   * be once this request's events are in Kafka. It only has to be an upper bound of what PostgreSQL
   * is told (that is all the gap check relies on), and PostgreSQL is told nothing before the request
   * succeeds, so a request that fails half-way (some partitions written, others not: a plain produce
   * request can) leaves a record that claims at most one batch too much, which no slot can fall into
   * unnoticed but by being moved into exactly that batch. Recording the position after the batch,
   * rather than before, keeps PostgreSQL's acknowledgement from trailing Kafka by a further batch.
   *
   * position: exactly-once, the last event's: the transaction makes it true together with the
   * events. At-least-once, the last event Kafka had already acknowledged: the position must never
   * claim an event that may be missing, as an exactly-once start would skip by it.
   */
  next(last: SinkRecord | null, ackedLsn: Lsn): TopicMessages {
    const source = this.source;
    if (source === null) throw new Error("a checkpoint record was asked for before read()");
    const position = this.mode.eos !== null && last !== null ? { commitLsn: last.commitLsn, index: last.index } : this.lastPosition;
    const value = encodeCheckpoint({
      position,
      ackedLsn,
      slot: this.target.key,
      systemIdentifier: source.systemIdentifier,
      database: source.database,
      writtenAt: new Date().toISOString(),
      snapshot: this.snapshotProgress,
    });
    return { topic: this.target.topic, messages: [{ key: this.target.key, value }] };
  }

  acknowledged(position: Position): void {
    this.lastPosition = position;
  }

  /**
   * Deletes this slot's checkpoint (a tombstone), for `airflow-eventstream reset-checkpoint`.
   * Exactly-once in a transaction of this slot's transactional id: that fences any daemon still
   * holding it, whose later checkpoint would otherwise bring the deleted one back. Returns false
   * when the checkpoint topic does not exist (nothing to delete).
   */
  async delete(): Promise<boolean> {
    const { topic, key } = this.target;
    if (!(await this.topics.list()).includes(topic)) return false;
    const topicMessages = [{ topic, messages: [{ key, value: null }] }];
    try {
      if (this.mode.eos) {
        await inTransaction(this.producer, topicMessages);
      } else {
        await this.producer.sendBatch({ topicMessages, acks: -1 });
      }
    } catch (e: unknown) {
      throw explain(this.cfg, e, `writing the tombstone for key "${key}" to ${topic}`);
    }
    return true;
  }
}

/**
 * A store on a Kafka client of its own, connected for `use` and closed after it: for
 * reset-checkpoint, which writes one tombstone and publishes nothing.
 */
export async function withCheckpointStore<T>(cfg: Config, log: Logger, use: (store: CheckpointStore) => Promise<T>): Promise<T> {
  const clients = createClients(cfg, log);
  const closers: (() => Promise<void>)[] = [];
  try {
    await connectClients(cfg, clients);
    const topics = new TopicAdmin(clients.admin, cfg, log);
    return await use(new CheckpointStore(cfg, log, clients.kafka, clients.producer, topics, (close) => closers.push(close)));
  } finally {
    for (const close of closers.splice(0)) await close();
    await disconnectClients(clients);
  }
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
