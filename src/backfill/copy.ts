import { randomBytes } from "node:crypto";
import type { Kafka, KafkaMessage } from "kafkajs";
import { TransientError, UserActionError } from "../errors.js";
import type { PartitionWindow } from "./window.js";

/** One source record as a replay hands it on. */
export interface SourceRecord {
  topic: string;
  partition: number;
  message: KafkaMessage;
}

/** Where the copied records go; `write` resolving is what lets the next batch be read (backpressure). */
export interface RecordSink {
  write(records: SourceRecord[]): Promise<void>;
}

interface Reading extends PartitionWindow {
  /** The next offset to copy: records below it were copied (or are before the window). */
  next: bigint;
}

/** Fetch sizes of the copy: memory is bounded by about one fetch, whatever the window (see readWindows). */
const FETCH_MAX_BYTES = 8 * 1024 * 1024;
const FETCH_PARTITION_BYTES = 1024 * 1024;

/**
 * Reads every window once, in offset order per partition, handing the records `keep` takes to the
 * sink one fetched batch at a time. Memory stays bounded whatever the window: kafkajs fetches again
 * only once the batches of the last fetch went through eachBatch, and eachBatch waits for the sink
 * (Kafka's acknowledgement, or stdout draining), so at most one fetch (FETCH_MAX_BYTES) is held.
 *
 * Read_committed, in a group of its own that never commits. kafkajs seeks only after the group is
 * joined, and may deliver a batch fetched from the partition's beginning before the seek applies, or
 * fetched again after it: `next` per partition drops what was copied already or is before the
 * window, so every record is copied once, in order. A partition is done when a batch reaches its end
 * offset, by the batch's last offset (a transaction marker's included: kafkajs reports batches of
 * markers only through END_BATCH_PROCESS).
 *
 * `concurrency` partitions are copied at once (a sink whose writes may overlap); memory then holds up
 * to that many batches of FETCH_PARTITION_BYTES.
 */
export async function readWindows(
  kafka: Kafka,
  clientId: string,
  windows: PartitionWindow[],
  keep: (m: KafkaMessage) => boolean,
  sink: RecordSink,
  progress: (offsets: number, records: number) => void,
  concurrency: number,
): Promise<void> {
  const reading = new Map<string, Reading>(windows.map((w) => [`${w.topic}/${w.partition}`, { ...w, next: w.start }]));
  if (reading.size === 0) return;
  const consumer = kafka.consumer({
    groupId: `${clientId}.replay.${randomBytes(4).toString("hex")}`,
    readUncommitted: false,
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 250,
    maxBytes: FETCH_MAX_BYTES,
    maxBytesPerPartition: FETCH_PARTITION_BYTES,
    sessionTimeout: 30_000,
    heartbeatInterval: 3_000,
  });
  const pending = new Set(reading.keys());
  let finish: (e?: Error) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    finish = (e) => (e ? reject(e) : resolve());
  });

  /** Moves a partition on past `last`; true when it reached its end. */
  const advance = (r: Reading, last: bigint): boolean => {
    const before = r.next;
    if (last + 1n > r.next) r.next = last + 1n > r.end ? r.end : last + 1n;
    progress(Number(r.next - before), 0);
    return r.next >= r.end;
  };
  const done = (topic: string, partition: number) => {
    consumer.pause([{ topic, partitions: [partition] }]);
    pending.delete(`${topic}/${partition}`);
    if (pending.size === 0) finish();
  };
  /** The batch starts past `next`: records in between were deleted (retention) while the replay ran. */
  const check = (r: Reading, first: string | null) => {
    if (first !== null && BigInt(first) > r.next)
      throw new UserActionError(
        `records ${r.next}..${BigInt(first) - 1n} of ${r.topic} partition ${r.partition} were deleted by retention while they were being replayed: the replay is incomplete. Replay again from a later position.`,
      );
  };

  consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart)
      finish(new TransientError(`reading the event topics failed (${e.payload.error.message})`, { cause: e.payload.error }));
  });
  consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
    const b = e.payload;
    const r = reading.get(`${b.topic}/${b.partition}`);
    if (b.batchSize !== 0 || r === undefined || !pending.has(`${b.topic}/${b.partition}`) || b.firstOffset === null) return;
    if (BigInt(b.firstOffset) > r.next) return;
    if (advance(r, BigInt(b.lastOffset))) done(b.topic, b.partition);
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [...new Set(windows.map((w) => w.topic))], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      // kafkajs hands one partition's batches over one at a time, in order, whatever this number.
      partitionsConsumedConcurrently: concurrency,
      eachBatch: async ({ batch }) => {
        const r = reading.get(`${batch.topic}/${batch.partition}`);
        if (r === undefined || !pending.has(`${batch.topic}/${batch.partition}`)) {
          consumer.pause([{ topic: batch.topic, partitions: [batch.partition] }]);
          return;
        }
        try {
          check(r, batch.firstOffset());
        } catch (e: unknown) {
          finish(e as Error);
          return;
        }
        const out: SourceRecord[] = [];
        for (const message of batch.messages) {
          const o = BigInt(message.offset);
          if (o >= r.next && o < r.end && keep(message)) out.push({ topic: batch.topic, partition: batch.partition, message });
        }
        try {
          if (out.length > 0) await sink.write(out);
        } catch (e: unknown) {
          finish(e as Error);
          consumer.pause([{ topic: batch.topic, partitions: [batch.partition] }]);
          return;
        }
        progress(0, out.length);
        if (advance(r, BigInt(batch.lastOffset()))) done(batch.topic, batch.partition);
      },
    });
    for (const r of reading.values())
      if (r.start > 0n) consumer.seek({ topic: r.topic, partition: r.partition, offset: r.start.toString() });
    await finished;
  } finally {
    await consumer.disconnect().catch(() => undefined);
  }
}
