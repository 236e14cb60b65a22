import { randomBytes } from "node:crypto";
import type { Kafka } from "kafkajs";
import { TransientError } from "../errors.js";
import type { Logger } from "../log.js";
import { privateReader } from "./reader.js";

/**
 * Reading the checkpoint topic to its end, for exactly-once delivery.
 *
 * The question "have I read everything?" has a trap on a topic written by transactional
 * producers, and the obvious answers are wrong:
 *
 * - kafkajs's `admin.fetchTopicOffsets()` "high" is not the high watermark. The admin sends
 *   ListOffsets with isolation READ_COMMITTED, so it returns the *last stable offset*: the first
 *   offset of the oldest transaction still open in the partition. Another slot's daemon (they all
 *   share this topic) with a transaction open from before our last checkpoint makes it point
 *   *before* our last checkpoint; reading "up to high" then stops at an older checkpoint, and the
 *   changes between the two are published a second time. (Measured on Kafka 4.4: with one
 *   transaction open at offset 0 and a committed record at offset 1, "high" is 0.)
 * - The real high watermark against "offset of the last message consumed + 1" never meets:
 *   a read_committed consumer never receives transaction markers (every transaction ends with one,
 *   so the last offset of this topic is nearly always a marker), nor records of aborted
 *   transactions, nor offsets compaction removed. Counting them needs the raw fetch, which kafkajs
 *   does not expose reliably.
 *
 * What is robust: a sentinel. Right after fencing (InitProducerId, which completes or aborts any
 * transaction our transactional id left open) the sink commits a transaction holding one
 * sentinel record per partition, with a fresh random value. A read_committed consumer receives a
 * partition strictly in offset order and only below the last stable offset, so by the time it
 * receives our sentinel, every transaction with records before it, ours and other daemons', has
 * been committed or aborted, and every committed record before it has been delivered. Whatever
 * our key held at that moment is the latest checkpoint, and no zombie can add to it afterwards
 * (fenced). No offset arithmetic, so markers, aborted transactions and compaction gaps cannot fool
 * it. It waits, at most, for other producers' transactions that are open in the partition: their
 * usual length is milliseconds; a crashed one lasts until its producer restarts or its
 * transaction times out (60 s by default).
 *
 * Sentinels are keyed "<slot>.start": slot names cannot contain ".", so they never collide with
 * a checkpoint key, and compaction keeps one per slot and partition.
 *
 * Where to start: every produce request writes a checkpoint, so the topic's active segment (which
 * compaction never touches) holds up to 16 MiB of records, tens of thousands, of every slot that
 * shares the topic; reading them all at each start was measured here at +145 MiB of RSS for 43,000
 * records. The latest record of this slot is nearly always among the last few thousand, so a read
 * starts TAIL_OFFSETS before the end (a seek, applied before the first fetch) and falls back to
 * the whole topic only when the key is not found there. Reading [start, sentinel] in order, a
 * record of the key found in it is the latest, whatever lies before `start`.
 */

/** How far before the end a read starts: records of other slots in between cost memory, not correctness. */
export const TAIL_OFFSETS = 5_000n;

export function sentinelKey(slot: string): string {
  return `${slot}.start`;
}

export function newSentinelValue(): string {
  return JSON.stringify({ sentinel: randomBytes(12).toString("hex"), written_at: new Date().toISOString() });
}

export interface CheckpointScan {
  /** Per partition: the last value under the key before the sentinel; null for a tombstone. */
  last: Map<number, string | null>;
  /** Records read (every key), for the log. */
  records: number;
  /** Partitions read from a later offset (`startAt`) where the key was not found: its latest record may lie before. */
  unresolved: number[];
}

export interface ScanOptions {
  topic: string;
  key: string;
  /** partition -> the sentinel value committed there. */
  sentinels: Map<number, string>;
  clientId: string;
  timeoutMs: number;
  log: Logger;
  /** The sink closes the consumer if the session ends while it reads. */
  track(close: () => Promise<void>): void;
  /** Per partition, the offset to start at (see TAIL_OFFSETS); absent: the beginning. */
  startAt?: Map<number, bigint>;
}

/** Reads every partition with a fresh read_committed consumer until each one's sentinel arrives. */
export async function scanToSentinels(kafka: Kafka, opts: ScanOptions): Promise<CheckpointScan> {
  const { topic, key, sentinels } = opts;
  const sKey = sentinelKey(key);
  const { consumer, close } = privateReader(kafka, `${opts.clientId}.checkpoint-reader.${key}`, opts.track);
  /** Per partition: the key's record with the highest offset read so far. */
  const best = new Map<number, { offset: bigint; value: string | null }>();
  /** Per partition: the offset of the first record of the current run of reading, and the last one read. */
  const runFrom = new Map<number, bigint>();
  const prev = new Map<number, bigint>();
  const pending = new Set(sentinels.keys());
  let records = 0;
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new TransientError(
              `the checkpoint topic ${topic} was not read to its end within ${opts.timeoutMs} ms (partitions ${[...pending].join(",")} still behind): a transaction of another producer may be holding it back; retrying`,
            ),
          ),
        opts.timeoutMs,
      );
      consumer.on(consumer.events.CRASH, (e) => {
        if (!e.payload.restart)
          reject(
            new TransientError(`reading the checkpoint topic ${topic} failed (${e.payload.error.message}); retrying`, {
              cause: e.payload.error,
            }),
          );
      });
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            if (!pending.has(partition)) return;
            records++;
            const offset = BigInt(message.offset);
            // Offsets only grow while reading on; one going back means reading started over (a
            // seek that took effect late): what counts is the run that reaches the sentinel.
            const before = prev.get(partition);
            if (before === undefined || offset <= before) runFrom.set(partition, offset);
            prev.set(partition, offset);
            const k = message.key?.toString();
            if (k === key) {
              const b = best.get(partition);
              if (!b || offset > b.offset) best.set(partition, { offset, value: message.value === null ? null : message.value.toString() });
            } else if (k === sKey && message.value?.toString() === sentinels.get(partition)) {
              pending.delete(partition);
              if (pending.size === 0) resolve();
            }
          },
        })
        .catch(reject);
      // Before the group is joined: kafkajs applies a pending seek at the first fetch.
      for (const [partition, offset] of opts.startAt ?? []) {
        if (offset > 0n) consumer.seek({ topic, partition, offset: offset.toString() });
      }
    });
  } finally {
    clearTimeout(timer);
    await close();
  }
  const last = new Map<number, string | null>();
  const unresolved: number[] = [];
  for (const partition of sentinels.keys()) {
    const from = runFrom.get(partition) ?? 0n;
    const start = opts.startAt?.get(partition) ?? 0n;
    const b = best.get(partition);
    // The run that reached the sentinel began at `start` (or later, past offsets compaction
    // removed) unless it began before it, i.e. at the beginning: then it saw everything.
    if (b && b.offset >= from) last.set(partition, b.value);
    else if (from < start || start === 0n) {
      if (b) last.set(partition, b.value);
    } else unresolved.push(partition);
  }
  opts.log.debug({ topic, records, partitions: sentinels.size, unresolved }, "read the checkpoint topic to its end");
  return { last, records, unresolved };
}
