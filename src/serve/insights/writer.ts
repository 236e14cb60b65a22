import type { Admin, Batch, Consumer, Kafka, Producer } from "kafkajs";
import { coerceError } from "../../errors.js";
import type { Logger } from "../../log.js";
import { readToEnd } from "../../sink/read-to-end.js";
import { dagPartitioner } from "../../sink/routing.js";
import { readCurrentState } from "../../sink/state-reader.js";
import type { StateEntry } from "../../sink/state-topic.js";
import { InsightEvent } from "../schemas.js";
import type { StuckThreshold } from "./derive.js";
import { OwnedPartition, parseJson, WindowScan } from "./partition.js";

export interface WriterOptions {
  eventsTopic: string;
  stateTopic: string;
  insightsTopic: string;
  groupId: string;
  threshold: StuckThreshold;
  /** How often the stuck timer looks. */
  tickMs: number;
  sessionTimeoutMs: number;
}

interface Owned {
  part: OwnedPartition;
  producer: Producer;
}

/**
 * Consume-transform-produce over the events topic, exactly once. The group spreads the events
 * topic's partitions over the replicas; the insights topic has as many partitions, and an insight
 * goes to its cause's partition number, so the owner of events partition p is the only writer of
 * insights partition p. Its producer's transactional id names p (`<group>-<insights topic>-<p>`):
 * a new owner's InitProducerId fences the previous owner (a replica killed, or one that lost the
 * partition and does not know yet), aborting whatever it had open, and only then reads the group's
 * committed offset and the insights partition, so it sees exactly what the previous owner committed.
 * Each batch's insights and its consumer offset are one transaction (sendOffsets), as are the
 * timer's task_stuck with the partition's current offset.
 */
export class InsightsWriter {
  private readonly owned = new Map<number, Promise<Owned | null>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly consumer: Consumer;

  constructor(
    private readonly kafka: Kafka,
    private readonly admin: Admin,
    private readonly o: WriterOptions,
    private readonly log: Logger,
  ) {
    this.consumer = kafka.consumer({
      groupId: o.groupId,
      readUncommitted: false,
      allowAutoTopicCreation: false,
      sessionTimeout: o.sessionTimeoutMs,
      heartbeatInterval: Math.max(500, Math.floor(o.sessionTimeoutMs / 10)),
      maxWaitTimeInMs: 200,
    });
  }

  async start(): Promise<void> {
    this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
      const mine = e.payload.memberAssignment[this.o.eventsTopic] ?? [];
      this.reassign(mine);
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [this.o.eventsTopic], fromBeginning: false });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat }) => this.onBatch(batch, resolveOffset, heartbeat),
    });
    this.timer = setInterval(() => void this.tick(), this.o.tickMs);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.consumer.disconnect().catch(() => undefined);
    await this.release([...this.owned.keys()]);
  }

  /** The partitions this replica owns now (tests, logs). */
  partitions(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  private reassign(mine: number[]): void {
    const gone = [...this.owned.keys()].filter((p) => !mine.includes(p));
    void this.release(gone);
    // Kept partitions are taken afresh too: the consumer goes back to the committed offset after a
    // rebalance, and the view must be the one of that offset.
    void this.release(mine.filter((p) => this.owned.has(p)));
    const taking = this.take(mine);
    for (const p of mine)
      this.owned.set(
        p,
        taking.then((m) => m.get(p) ?? null),
      );
    this.log.info({ partitions: mine, topic: this.o.eventsTopic }, "insights: partitions assigned");
  }

  private async release(partitions: number[]): Promise<void> {
    const all = partitions.map((p) => this.owned.get(p)).filter((x) => x !== undefined);
    for (const p of partitions) this.owned.delete(p);
    for (const o of await Promise.all(all.map((x) => x.catch(() => null)))) await o?.producer.disconnect().catch(() => undefined);
  }

  /** Takes partitions: fences their previous writers, then reads where they stopped (offsets, insights, state). */
  private async take(partitions: number[]): Promise<Map<number, Owned>> {
    const result = new Map<number, Owned>();
    if (partitions.length === 0) return result;
    try {
      const producers = new Map<number, Producer>();
      for (const p of partitions) producers.set(p, await this.fence(p));
      const offsets = await this.startOffsets(partitions);
      const emitted = await this.readEmitted(partitions);
      const state = await readCurrentState(this.kafka, this.o.stateTopic, { clientId: `${this.o.groupId}.insights` });
      const partitionOf = dagPartitioner(
        (await this.admin.fetchTopicMetadata({ topics: [this.o.eventsTopic] })).topics[0]!.partitions.length,
      );
      const entriesOf = new Map(
        partitions.map((p) => [
          p,
          [...state.entries.values()].filter((e) => typeof e.event.dag_id === "string" && partitionOf(e.event.dag_id) === p),
        ]),
      );
      const windows = await this.scanWindows(entriesOf, offsets);
      for (const p of partitions) {
        const { start, end, committed } = offsets.get(p)!;
        const part = new OwnedPartition(p, this.o.eventsTopic, this.o.stateTopic, entriesOf.get(p)!, start, end, windows.get(p)!);
        for (const i of emitted.get(p) ?? []) part.noteEmitted([i]);
        const owned = { part, producer: producers.get(p)! };
        // A new group's start, made durable: the next owner goes on from it, not from its own "now".
        if (!committed && !(await this.commit(owned, [], start)))
          throw new Error(`the start offset of partition ${p} could not be committed`);
        result.set(p, owned);
        this.consumer.seek({ topic: this.o.eventsTopic, partition: p, offset: String(start) });
      }
      const windowRead = [...windows.values()].reduce((n, w) => n + w.read, 0);
      this.log.info(
        { partitions, state_rows: state.entries.size, window_events_read: windowRead },
        "insights: partitions taken (previous writers fenced, view rebuilt)",
      );
    } catch (e: unknown) {
      this.log.error({ err: coerceError(e).message, partitions }, "insights: taking partitions failed; the consumer rejoins the group");
      for (const o of result.values()) await o.producer.disconnect().catch(() => undefined);
      result.clear();
    }
    return result;
  }

  /**
   * The events of each partition from its start offset, read until the first event of every row
   * whose state entry is ahead of that offset is found (or the end): what the view needs to be the
   * state as of the offset (partition.ts). A short read after a handover (the previous owner's
   * uncommitted batch and session timeout); after a long stop, as long as the backlog at most.
   */
  private async scanWindows(
    entriesOf: Map<number, StateEntry[]>,
    offsets: Map<number, { start: bigint; end: bigint }>,
  ): Promise<Map<number, WindowScan>> {
    const scans = new Map([...entriesOf].map(([p, entries]) => [p, new WindowScan(entries)] as const));
    const from = new Map([...offsets].filter(([, o]) => o.start < o.end).map(([p, o]) => [p, o.start] as const));
    if (from.size === 0) return scans;
    const opts = {
      group: `${this.o.groupId}.insights-window`,
      what: "the events topic",
      partitions: new Set(from.keys()),
      admin: this.admin,
      from,
      // A backlog's length, not a handover's: the read makes progress all along, and a taking that
      // gave up would be tried again from the start.
      timeoutMs: WINDOW_TIMEOUT_MS,
    };
    await readToEnd(this.kafka, this.o.eventsTopic, opts, (p, message) => {
      const scan = scans.get(p);
      if (scan === undefined) return true;
      if (scan.add(message.value)) return true;
      if (scan.read < WINDOW_READ_LIMIT) return false;
      this.log.warn(
        { partition: p, read: scan.read },
        "insights: the events since the committed offset are too many to read ahead in full; rows changed later are taken back by their own latest event (docs/insights.md)",
      );
      return true;
    });
    return scans;
  }

  /** A transactional producer for partition p whose InitProducerId has run (fencing any earlier one). */
  private async fence(p: number): Promise<Producer> {
    const producer = this.kafka.producer({
      transactionalId: `${this.o.groupId}-${this.o.insightsTopic}-${p}`,
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // As the daemon's transactional producer (src/sink/client.ts): a transaction begun while the
      // coordinator still writes the previous one's markers is refused with CONCURRENT_TRANSACTIONS
      // for a few milliseconds; with kafkajs's default first retry of 300 ms and 5 retries, a
      // partition's back-to-back batches ran out of retries (seen in the integration test).
      retry: { initialRetryTime: 5, maxRetryTime: 10_000, retries: 17 },
    });
    await producer.connect();
    // kafkajs runs InitProducerId at the first transaction: an empty one, begun and aborted, is it.
    const tx = await producer.transaction();
    await tx.abort();
    return producer;
  }

  /** Per partition: where to start (the committed offset; none yet: the end, committed now) and the end now. */
  private async startOffsets(partitions: number[]): Promise<Map<number, { start: bigint; end: bigint; committed: boolean }>> {
    const ends = new Map((await this.admin.fetchTopicOffsets(this.o.eventsTopic)).map((o) => [o.partition, o] as const));
    const [committed] = await this.admin.fetchOffsets({ groupId: this.o.groupId, topics: [this.o.eventsTopic] });
    const byPartition = new Map((committed?.partitions ?? []).map((c) => [c.partition, BigInt(c.offset)] as const));
    const out = new Map<number, { start: bigint; end: bigint; committed: boolean }>();
    for (const p of partitions) {
      const end = BigInt(ends.get(p)?.high ?? "0");
      const low = BigInt(ends.get(p)?.low ?? "0");
      const c = byPartition.get(p) ?? -1n;
      // No committed offset: a new group starts with what happens next (its view comes from the
      // state topic); below what the topic holds: retention removed events no insight was derived from.
      const start = c < 0n ? end : c < low ? low : c;
      out.set(p, { start, end, committed: c >= 0n });
    }
    return out;
  }

  /**
   * The insights partitions read to their ends (read_committed): what the previous owners published
   * that the view needs: open task_stuck, and clears (the state topic keeps a cleared task's rerun only).
   */
  private async readEmitted(partitions: number[]): Promise<Map<number, InsightEvent[]>> {
    const out = new Map<number, InsightEvent[]>();
    const opts = {
      group: `${this.o.groupId}.insights-read`,
      what: "the insights topic",
      partitions: new Set(partitions),
      admin: this.admin,
    };
    await readToEnd(this.kafka, this.o.insightsTopic, opts, (p, message) => {
      const r = InsightEvent.safeParse(parseJson(message.value));
      if (!r.success || (r.data.type !== "task_stuck" && r.data.type !== "task_unstuck" && r.data.type !== "task_cleared")) return;
      const list = out.get(p) ?? [];
      list.push(r.data);
      out.set(p, list);
    });
    return out;
  }

  /**
   * The partition's state, taken afresh when a transaction of it failed: the taking fences whoever
   * holds the transactional id and reads what is committed, so even two replicas that both believe
   * they own p (a rebalance not yet noticed) write each insight once; the group settles who keeps it.
   */
  private async current(p: number): Promise<Owned | null> {
    const pending = this.owned.get(p);
    if (pending === undefined) return null;
    const owned = await pending.catch(() => null);
    if (owned !== null && !owned.part.broken) return owned;
    if (this.owned.get(p) === pending) {
      if (owned !== null) void owned.producer.disconnect().catch(() => undefined);
      // A taking that failed (Kafka unreachable a moment) is tried again, a second later.
      this.owned.set(
        p,
        sleep(owned === null ? 1_000 : 0)
          .then(() => this.take([p]))
          .then((m) => m.get(p) ?? null),
      );
    }
    return null;
  }

  private async onBatch(batch: Batch, resolveOffset: (offset: string) => void, heartbeat: () => Promise<void>): Promise<void> {
    const owned = await waitBeating(this.current(batch.partition), heartbeat);
    if (owned === null) return;
    await owned.part.serial(async () => {
      const now = new Date();
      const insights: InsightEvent[] = [];
      let last: bigint | null = null;
      for (const m of batch.messages) {
        const offset = BigInt(m.offset);
        if (offset < owned.part.next) continue;
        insights.push(...owned.part.handle(m.value, m.offset, now));
        last = offset;
      }
      if (last === null) return;
      if (!(await this.commit(owned, insights, last + 1n))) return;
      owned.part.next = last + 1n;
      resolveOffset(String(last));
    });
  }

  private async tick(): Promise<void> {
    const now = new Date();
    for (const p of [...this.owned.keys()]) {
      const owned = await this.current(p);
      if (owned === null) continue;
      await owned.part
        .serial(async () => {
          const insights = owned.part.tick(now, this.o.threshold);
          if (insights.length === 0) return;
          if (await this.commit(owned, insights, owned.part.next)) owned.part.noteEmitted(insights);
        })
        .catch(() => undefined);
    }
  }

  /** One transaction: the insights to partition p of the insights topic, and the group's offset of events partition p. */
  private async commit(owned: Owned, insights: InsightEvent[], nextOffset: bigint): Promise<boolean> {
    const p = owned.part.partition;
    const tx = await owned.producer.transaction();
    try {
      if (insights.length > 0)
        await tx.send({
          topic: this.o.insightsTopic,
          acks: -1,
          messages: insights.map((i) => ({ key: i.dag_id, value: JSON.stringify(i), partition: p })),
        });
      await tx.sendOffsets({
        consumerGroupId: this.o.groupId,
        topics: [{ topic: this.o.eventsTopic, partitions: [{ partition: p, offset: String(nextOffset) }] }],
      });
      await tx.commit();
      return true;
    } catch (e: unknown) {
      await tx.abort().catch(() => undefined);
      // The view moved past what is committed: this replica cannot go on with the partition. A
      // fenced producer means a new owner has it; otherwise the group is asked to rebalance.
      owned.part.broken = true;
      this.log.warn({ partition: p, err: coerceError(e).message }, "insights: a transaction failed; the partition is taken afresh");
      return false;
    }
  }
}

/** Records of one partition the window scan reads at most (a long stop's backlog), and how long it may take. */
const WINDOW_READ_LIMIT = 5_000_000;
const WINDOW_TIMEOUT_MS = 30 * 60_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitBeating<T>(p: Promise<T>, heartbeat: () => Promise<void>): Promise<T> {
  const beat = setInterval(() => void heartbeat().catch(() => undefined), 1_000);
  try {
    return await p;
  } finally {
    clearInterval(beat);
  }
}
