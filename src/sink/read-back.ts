import { privateReader } from "./reader.js";
import type { Admin, Kafka } from "kafkajs";
import { comparePositions, parsePosition, type Position } from "../lsn.js";
import { TransientError } from "../errors.js";
import type { Logger } from "../log.js";
import { parseEventValue } from "./wire-format.js";

/**
 * Reading back, at start, the tail of what this daemon published: per partition of each event
 * topic, the last `perPartition` records, in both delivery modes. It gives two things:
 * - the highest `source.position` per partition (see ReplayFilter): at-least-once does not publish
 *   again the replayed changes at or below it (exactly-once skips by its checkpoint instead);
 * - the events themselves, handed to `onEvent` in partition order, from which the mapper learns
 *   the last published state of the rows they name (see AirflowMapper.seed).
 *
 * Where a partition ends, read with isolation read_committed (as consumers are told to read):
 * - the end offset is kafkajs's `admin.fetchTopicOffsets()` "high", fetched first. The admin asks
 *   with isolation READ_COMMITTED, so it is the last stable offset: below it every transaction is
 *   committed or aborted. Nothing else writes to these topics (the previous daemon is gone, or
 *   START_REPLICATION would have failed; exactly-once has also fenced its transactional id, which
 *   aborted any transaction it left open, before this runs), so it should be the high watermark
 *   too. Yet the fault suite once saw, after a Kafka restart, the rows of one partition's DAGs
 *   start one state behind: that partition's read had ended short of its last records.
 * - so a partition may hold records past that end: a transaction still open when the offsets were
 *   fetched (or completed since). Each fetched batch also carries the partition's high watermark;
 *   the end moves up to it (see END_BATCH_PROCESS below), so those records are waited for rather
 *   than missed.
 * - "the last offset received" never meets it on a transactional topic: every transaction ends
 *   with a commit (or abort) marker, so the last offset below the end is nearly always a marker,
 *   and neither markers nor aborted records reach a read_committed consumer. The fetch does return
 *   them, though, and kafkajs reports the last offset of each fetched batch, markers and aborted
 *   records included (END_BATCH_PROCESS, emitted also for a batch that filtering left empty).
 *   A partition is read when that offset reaches the end. At-least-once topics have no markers;
 *   the same rule holds.
 * Why not a sentinel record, as the checkpoint topic does (checkpoint-topic.ts)? There the end is
 * moved by other daemons' open transactions; here nothing else writes, and a sentinel would be a
 * record in the event topics every consumer reads. Why not read up to the checkpoint's position?
 * A partition need not hold an event at or past it (the last transaction wrote other partitions),
 * so that read has no end of its own.
 *
 * Cost: at most `perPartition` records per partition (plus markers) and one consumer group join.
 */

export interface ReadBackResult {
  /** topic -> per partition, the highest position found (null: empty, or nothing parsable). */
  heads: Map<string, (Position | null)[]>;
  records: number;
  ms: number;
}

export interface ReadBackOptions {
  topics: string[];
  perPartition: number;
  clientId: string;
  timeoutMs: number;
  /** How long records past a partition's last stable offset are waited for (default TAIL_WAIT_MS). */
  tailWaitMs?: number;
  log: Logger;
  track(close: () => Promise<void>): void;
  /** Each record's value, in offset order per partition (a partition read again repeats its records in order). */
  onEvent(value: Record<string, unknown>): void;
}

/** Where one partition's read starts and ends (inclusive); `last` may move up (see readPartitions). */
interface Wanted {
  topic: string;
  partition: number;
  start: bigint;
  last: bigint;
  /** The last offset below the last stable offset fetched at first. */
  stable: bigint;
  /** When the read got past `stable` (ms), while records after it were still awaited; null: not yet. */
  stableAt: number | null;
}

/**
 * How long records past the last stable offset fetched at first are waited for, once everything
 * before it is read (see ReadProgress). After a Kafka restart the fault suite saw such records
 * become readable after more than 15 s, and others stay open for over 100 s; a read that waits
 * for ever stalls the slot, so past this wait the partition's rows start unknown instead.
 */
export const TAIL_WAIT_MS = 15_000;

export async function readBack(kafka: Kafka, admin: Admin, opts: ReadBackOptions): Promise<ReadBackResult> {
  const started = Date.now();
  const heads = new Map<string, (Position | null)[]>();
  const want = await wantedRanges(admin, opts, heads);
  let records = 0;
  if (want.size > 0) {
    records = await readPartitions(kafka, want, opts, (topic, partition, value) => {
      const pos = positionOf(value);
      const parts = heads.get(topic)!;
      const head = parts[partition] ?? null;
      if (pos !== null && (head === null || comparePositions(pos, head) > 0)) parts[partition] = pos;
      opts.onEvent(value);
    });
  }
  opts.log.debug({ topics: opts.topics.length, partitions: want.size, records }, "read back the event topics");
  return { heads, records, ms: Date.now() - started };
}

/** Per partition of each topic, the last `perPartition` offsets below its last stable offset ("topic/partition" -> range). */
async function wantedRanges(admin: Admin, opts: ReadBackOptions, heads: Map<string, (Position | null)[]>): Promise<Map<string, Wanted>> {
  const want = new Map<string, Wanted>();
  for (const topic of opts.topics) {
    const offsets = await admin.fetchTopicOffsets(topic);
    heads.set(topic, new Array<Position | null>(offsets.length).fill(null));
    for (const o of offsets) {
      const high = BigInt(o.high);
      const low = BigInt(o.low);
      if (high <= low) continue;
      const start = high - BigInt(opts.perPartition) > low ? high - BigInt(opts.perPartition) : low;
      want.set(`${topic}/${o.partition}`, { topic, partition: o.partition, start, last: high - 1n, stable: high - 1n, stableAt: null });
    }
  }
  return want;
}

/** Reads every wanted range to its end, handing each record's parsed value over in offset order; returns the records read. */
async function readPartitions(
  kafka: Kafka,
  want: Map<string, Wanted>,
  opts: ReadBackOptions,
  onValue: (topic: string, partition: number, value: Record<string, unknown>) => void,
): Promise<number> {
  const { consumer, close } = privateReader(kafka, `${opts.clientId}.read-back`, opts.track);
  const progress = new ReadProgress(want, opts.tailWaitMs ?? TAIL_WAIT_MS, opts.log, onValue);
  let records = 0;
  let timer: NodeJS.Timeout | undefined;
  let tailCheck: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [...new Set([...want.values()].map((w) => w.topic))], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => {
        const behind = [...progress.pending].slice(0, 5).join(", ");
        reject(
          new TransientError(
            `the event topics were not read back to their end within ${opts.timeoutMs} ms (${behind} still behind); retrying`,
          ),
        );
      }, opts.timeoutMs);
      consumer.on(consumer.events.CRASH, (e) => {
        if (e.payload.restart) return;
        reject(
          new TransientError(`reading back the event topics failed (${e.payload.error.message}); retrying`, { cause: e.payload.error }),
        );
      });
      // Before the batch's records go through eachMessage: where the partition's log ends.
      consumer.on(consumer.events.START_BATCH_PROCESS, (e) => progress.batchStarted(e.payload));
      // After the batch's records went through eachMessage: its last offset, a marker's included.
      consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
        if (progress.batchEnded(e.payload)) resolve();
      });
      // Read_committed returns nothing past an open transaction, so no batch says the wait is over.
      tailCheck = setInterval(() => {
        if (progress.giveUpOpenTails()) resolve();
      }, 250);
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ topic, partition, message }) => {
            const w = want.get(`${topic}/${partition}`);
            // Before the start offset: a seek not yet applied.
            if (w === undefined || !progress.pending.has(`${topic}/${partition}`) || BigInt(message.offset) < w.start) return;
            records++;
            const value = parse(message.value);
            if (value !== null) progress.record(topic, partition, value);
          },
        })
        .catch(reject);
      // Before the group is joined: kafkajs applies a pending seek at the first fetch.
      for (const w of want.values())
        if (w.start > 0n) consumer.seek({ topic: w.topic, partition: w.partition, offset: w.start.toString() });
    });
  } finally {
    clearTimeout(timer);
    clearInterval(tailCheck);
    await close();
  }
  return records;
}

/**
 * Which partitions are read to their end, by the batches kafkajs reports, and what is handed on.
 *
 * A partition may hold records past the last stable offset fetched at first: a transaction still
 * open then. Nothing else writes here, so the log's end is the high watermark each batch reports;
 * read_committed returns those records once their transaction ends. They may be events PostgreSQL
 * was told of: after a Kafka restart the fault suite saw a transaction whose commit had succeeded
 * get its markers, on one partition, only after more than 15 s (the fencing at start did not wait
 * for them). Stopping at the older end would seed the rows they name with the state before, and
 * their next change would be published with a wrong previous_state. So such a partition's records
 * are held back until its end is read, then handed on in order; if the end is still not readable
 * after TAIL_WAIT_MS, none of them are: the rows of that partition start unknown
 * (previous_state_known false on their next change), which is true, rather than one state behind.
 */
class ReadProgress {
  readonly pending: Set<string>;
  /** Partitions with records past their first end: their values, held until the end is read. */
  private readonly held = new Map<string, Record<string, unknown>[]>();

  constructor(
    private readonly want: Map<string, Wanted>,
    private readonly tailWaitMs: number,
    private readonly log: Logger,
    private readonly onValue: (topic: string, partition: number, value: Record<string, unknown>) => void,
  ) {
    this.pending = new Set(want.keys());
  }

  /** A batch is about to go through eachMessage; its high watermark may move the partition's end. */
  batchStarted(b: { topic: string; partition: number; highWatermark: string }): void {
    const id = `${b.topic}/${b.partition}`;
    const w = this.want.get(id);
    if (w === undefined || !this.pending.has(id)) return;
    const hw = BigInt(b.highWatermark);
    if (hw - 1n <= w.last) return;
    this.log.info(
      { topic: b.topic, partition: b.partition, lastStableOffset: (w.stable + 1n).toString(), highWatermark: b.highWatermark },
      "reading back: this partition holds records past its last stable offset at start; reading on to its end",
    );
    w.last = hw - 1n;
    if (!this.held.has(id)) this.held.set(id, []);
  }

  record(topic: string, partition: number, value: Record<string, unknown>): void {
    const held = this.held.get(`${topic}/${partition}`);
    if (held) held.push(value);
    else this.onValue(topic, partition, value);
  }

  /** A batch's records went through eachMessage; true when every partition is read. */
  batchEnded(b: { topic: string; partition: number; lastOffset: string | null; highWatermark: string }): boolean {
    const id = `${b.topic}/${b.partition}`;
    const w = this.want.get(id);
    if (w === undefined || !this.pending.has(id) || b.lastOffset === null) return false;
    this.batchStarted(b);
    const last = BigInt(b.lastOffset);
    if (last >= w.stable && w.stableAt === null) w.stableAt = Date.now();
    if (last < w.last) return false;
    this.pending.delete(id);
    for (const value of this.held.get(id) ?? []) this.onValue(b.topic, b.partition, value);
    this.held.delete(id);
    return this.pending.size === 0;
  }

  /** Gives up, past TAIL_WAIT_MS, on partitions whose end stays unreadable; true when every partition is read. */
  giveUpOpenTails(): boolean {
    for (const id of [...this.pending]) {
      const w = this.want.get(id)!;
      if (w.stableAt === null || Date.now() - w.stableAt < this.tailWaitMs) continue;
      this.log.warn(
        {
          topic: w.topic,
          partition: w.partition,
          openFrom: (w.stable + 1n).toString(),
          highWatermark: (w.last + 1n).toString(),
          waitedMs: this.tailWaitMs,
        },
        "reading back: a transaction stays open in this partition; the rows of its events start with their previous state unknown. Every read_committed consumer of the partition waits for that transaction too, until Kafka ends it",
      );
      this.pending.delete(id);
      this.held.delete(id);
    }
    return this.pending.size === 0;
  }
}

function parse(v: Buffer | null): Record<string, unknown> | null {
  if (v === null) return null;
  try {
    const json = parseEventValue(v);
    return typeof json === "object" && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The record's `source.position` (events and dead-letter summaries both carry it); null when absent. */
export function positionOf(value: Record<string, unknown>): Position | null {
  const source = value.source;
  if (typeof source !== "object" || source === null) return null;
  const text = (source as { position?: unknown }).position;
  if (typeof text !== "string") return null;
  try {
    return parsePosition(text);
  } catch {
    return null;
  }
}
