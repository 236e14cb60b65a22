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
  if (windows.length === 0) return;
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
  const copy = new WindowCopy(windows, keep, sink, progress, (topic, partition) => consumer.pause([{ topic, partitions: [partition] }]));
  consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart)
      copy.fail(new TransientError(`reading the event topics failed (${e.payload.error.message})`, { cause: e.payload.error }));
  });
  consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
    if (e.payload.batchSize === 0) copy.filteredBatch(e.payload);
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [...new Set(windows.map((w) => w.topic))], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      // kafkajs hands one partition's batches over one at a time, in order, whatever this number.
      partitionsConsumedConcurrently: concurrency,
      eachBatch: ({ batch }) => copy.batch(batch),
    });
    for (const w of windows) if (w.start > 0n) consumer.seek({ topic: w.topic, partition: w.partition, offset: w.start.toString() });
    await copy.finished;
  } finally {
    await consumer.disconnect().catch(() => undefined);
  }
}

/** Where each partition's copy is, and what a fetched batch moves (see readWindows). */
class WindowCopy {
  readonly finished: Promise<void>;
  private readonly reading: Map<string, Reading>;
  private readonly pending: Set<string>;
  private settle: (e?: Error) => void = () => undefined;

  constructor(
    windows: PartitionWindow[],
    private readonly keep: (m: KafkaMessage) => boolean,
    private readonly sink: RecordSink,
    private readonly progress: (offsets: number, records: number) => void,
    private readonly pause: (topic: string, partition: number) => void,
  ) {
    this.reading = new Map(windows.map((w) => [`${w.topic}/${w.partition}`, { ...w, next: w.start }]));
    this.pending = new Set(this.reading.keys());
    this.finished = new Promise<void>((resolve, reject) => {
      this.settle = (e) => (e ? reject(e) : resolve());
    });
    // Rejected before anyone awaits it (a crash during the join): not an unhandled rejection.
    this.finished.catch(() => undefined);
  }

  fail(e: Error): void {
    this.settle(e);
  }

  async batch(b: {
    topic: string;
    partition: number;
    messages: KafkaMessage[];
    firstOffset(): string | null;
    lastOffset(): string;
  }): Promise<void> {
    const r = this.active(b.topic, b.partition);
    if (r === undefined) return this.pause(b.topic, b.partition);
    const first = b.firstOffset();
    if (first !== null && BigInt(first) > r.next) {
      // Offsets below the end are contiguous: a batch starting past `next` means records were deleted (retention) during the replay.
      this.settle(
        new UserActionError(
          `records ${r.next}..${BigInt(first) - 1n} of ${r.topic} partition ${r.partition} were deleted by retention while they were being replayed: the replay is incomplete. Replay again from a later position.`,
        ),
      );
      return this.pause(b.topic, b.partition);
    }
    const out: SourceRecord[] = [];
    for (const message of b.messages) {
      const o = BigInt(message.offset);
      if (o >= r.next && o < r.end && this.keep(message)) out.push({ topic: b.topic, partition: b.partition, message });
    }
    try {
      if (out.length > 0) await this.sink.write(out);
    } catch (e: unknown) {
      this.settle(e as Error);
      return this.pause(b.topic, b.partition);
    }
    this.progress(0, out.length);
    this.advance(r, BigInt(b.lastOffset()));
  }

  /** A batch read_committed left empty (markers, aborted records): kafkajs reports it without calling eachBatch. */
  filteredBatch(b: { topic: string; partition: number; firstOffset: string | null; lastOffset: string }): void {
    const r = this.active(b.topic, b.partition);
    if (r === undefined || b.firstOffset === null || BigInt(b.firstOffset) > r.next) return;
    this.advance(r, BigInt(b.lastOffset));
  }

  private active(topic: string, partition: number): Reading | undefined {
    const id = `${topic}/${partition}`;
    return this.pending.has(id) ? this.reading.get(id) : undefined;
  }

  /** Moves a partition on past `last`; at its end, pauses it, and settles once every partition is done. */
  private advance(r: Reading, last: bigint): void {
    const before = r.next;
    if (last + 1n > r.next) r.next = last + 1n > r.end ? r.end : last + 1n;
    this.progress(Number(r.next - before), 0);
    if (r.next < r.end) return;
    this.pause(r.topic, r.partition);
    this.pending.delete(`${r.topic}/${r.partition}`);
    if (this.pending.size === 0) this.settle();
  }
}
