import { randomBytes } from "node:crypto";
import type { Kafka, KafkaMessage } from "kafkajs";
import { TransientError } from "../errors.js";
import { recordKey, type RecordKey } from "./target.js";

/** The first record a probe found: its offset and search key. */
export interface ProbeHit {
  offset: bigint;
  key: RecordKey;
}

/**
 * Reads the records of a topic's partitions at chosen offsets: what the search of offsets.ts needs,
 * and all it needs, so that the search itself is pure logic (tested over an array in the unit tests).
 */
export interface RecordSource {
  /**
   * The first record in [from, before) that a read_committed consumer returns and whose key `accept`
   * takes; null when there is none. Offsets holding no such record (transaction markers, aborted
   * records, records of other producers) are passed over.
   */
  first(topic: string, partition: number, from: bigint, before: bigint, accept: (key: RecordKey) => boolean): Promise<ProbeHit | null>;
  close(): Promise<void>;
}

/** A probe waits at most this long for its records: a broker that stops answering fails the search rather than hang it. */
const PROBE_TIMEOUT_MS = 30_000;
/**
 * A probe usually needs one record: small fetches keep each probe cheap (a full 1 MiB fetch per
 * partition would read a megabyte to look at one record). Kafka still returns a larger record whole.
 */
const PROBE_FETCH_BYTES = 64 * 1024;

interface Pending {
  topic: string;
  partition: number;
  /** The offset the next batch for this probe must start at; a batch starting elsewhere is stale (fetched before the seek). */
  next: bigint;
  before: bigint;
  accept: (key: RecordKey) => boolean;
  settle: (hit: ProbeHit | null, error?: Error) => void;
}

/**
 * A RecordSource over Kafka: one read_committed consumer for all `topics`, in a group of its own that
 * never commits. kafkajs has no assign() and no single-record fetch, so a probe seeks the partition,
 * resumes it, takes the first acceptable record from the batches that come back, and pauses it again.
 * Why a consumer with seek/pause rather than kafkajs's internal broker API: that API is private and
 * changes between releases; the consumer costs one group join per search (~0.1 s with
 * group.initial.rebalance.delay.ms=0, 3 s with the broker default) and then one fetch round trip per
 * probe (see docs/backfill.md for figures). Batches fetched before a seek can still arrive after it;
 * a batch is taken only when it starts at the offset the probe waits for (offsets below the log end are
 * contiguous in an uncompacted topic: markers and aborted records have offsets too, and kafkajs reports
 * batches of nothing else through END_BATCH_PROCESS without calling eachBatch).
 */
export async function kafkaRecordSource(kafka: Kafka, topics: string[], clientId: string): Promise<RecordSource> {
  const consumer = kafka.consumer({
    groupId: `${clientId}.backfill-probe.${randomBytes(4).toString("hex")}`,
    readUncommitted: false,
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 100,
    maxBytesPerPartition: PROBE_FETCH_BYTES,
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
  });
  const probes = new Probes({
    pause: (topic, partition) => consumer.pause([{ topic, partitions: [partition] }]),
    fetchFrom: (topic, partition, offset) => {
      consumer.seek({ topic, partition, offset: offset.toString() });
      consumer.resume([{ topic, partitions: [partition] }]);
    },
    disconnect: () => consumer.disconnect(),
  });
  consumer.on(consumer.events.CRASH, (e) => probes.crashed(e.payload.error));
  consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
    const b = e.payload;
    if (b.batchSize === 0) probes.batch(b.topic, b.partition, b.firstOffset, b.lastOffset, []);
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: 4,
      eachBatch: async ({ batch }) => probes.batch(batch.topic, batch.partition, batch.firstOffset(), batch.lastOffset(), batch.messages),
    });
  } catch (e: unknown) {
    await consumer.disconnect().catch(() => undefined);
    throw e;
  }
  return probes;
}

/** The probes under way, one per partition at most, fed by the consumer's batches. */
class Probes implements RecordSource {
  private readonly pending = new Map<string, Pending>();
  private crash: Error | null = null;

  constructor(
    private readonly consumer: {
      pause(topic: string, partition: number): void;
      fetchFrom(topic: string, partition: number, offset: bigint): void;
      disconnect(): Promise<void>;
    },
  ) {}

  first(topic: string, partition: number, from: bigint, before: bigint, accept: (key: RecordKey) => boolean): Promise<ProbeHit | null> {
    if (from >= before) return Promise.resolve(null);
    if (this.crash !== null) return Promise.reject(new TransientError(`reading Kafka failed (${this.crash.message})`));
    const id = `${topic}/${partition}`;
    if (this.pending.has(id)) return Promise.reject(new Error(`a probe of ${id} is already running`));
    return new Promise<ProbeHit | null>((resolve, reject) => {
      const timer = setTimeout(
        () => settle(null, new TransientError(`reading ${id} from offset ${from} took over ${PROBE_TIMEOUT_MS} ms`)),
        PROBE_TIMEOUT_MS,
      );
      const settle = (hit: ProbeHit | null, error?: Error) => {
        clearTimeout(timer);
        if (this.pending.get(id) !== entry) return;
        this.pending.delete(id);
        this.consumer.pause(topic, partition);
        if (error) reject(error);
        else resolve(hit);
      };
      const entry: Pending = { topic, partition, next: from, before, accept, settle };
      this.pending.set(id, entry);
      this.consumer.fetchFrom(topic, partition, from);
    });
  }

  /** A fetched batch: its records, or none with the offsets it spans when read_committed filtered them all out. */
  batch(topic: string, partition: number, first: string | null, last: string, messages: KafkaMessage[]): void {
    const p = this.pending.get(`${topic}/${partition}`);
    if (p === undefined) {
      // Fetched while no probe wanted this partition: the first fetch after the join, or a stale one.
      this.consumer.pause(topic, partition);
      return;
    }
    if (first === null || BigInt(first) !== p.next) return;
    for (const m of messages) {
      const offset = BigInt(m.offset);
      if (offset < p.next) continue;
      if (offset >= p.before) break;
      const key = recordKey(m.value);
      if (key !== null && p.accept(key)) return p.settle({ offset, key });
    }
    p.next = BigInt(last) + 1n;
    if (p.next >= p.before) p.settle(null);
  }

  crashed(error: Error): void {
    this.crash = error;
    for (const p of this.pending.values()) p.settle(null, new TransientError(`reading Kafka failed (${error.message})`));
  }

  async close(): Promise<void> {
    for (const p of this.pending.values()) p.settle(null, new Error("the record source was closed"));
    await this.consumer.disconnect().catch(() => undefined);
  }
}
