import { Kafka, logLevel, Partitioners, type Admin, type Producer } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findOffsets, findStartOffsets } from "../../src/backfill/offsets.js";
import { formatMicros, parseTarget, parseTimeMicros } from "../../src/backfill/target.js";
import { RetentionError } from "../../src/errors.js";
import { formatPosition } from "../../src/lsn.js";
import { consume, services, uniqueName, type Consumed } from "../support/harness.js";

/**
 * The position -> offset search against a real Kafka topic written the way the daemon writes it in
 * exactly-once mode (transactions: every transaction leaves a marker offset), with aborted
 * transactions (offsets a read_committed consumer never sees) and another producer's records
 * without a position in between. The expected offsets come from reading the whole topic.
 */
describe("position -> offset on a real topic", () => {
  const topic = uniqueName("offsets");
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "offsets-test" });
  const admin: Admin = kafka.admin();
  const T0 = parseTimeMicros("2026-11-25T08:00:00Z")!;
  let all: Consumed<Record<string, unknown>>[] = [];

  const position = (i: number) => formatPosition({ commitLsn: 0x1000n + BigInt(Math.floor(i / 4)) * 0x100n, index: i % 4 });
  const value = (i: number) =>
    JSON.stringify({
      type: "dag_run",
      dag_id: `d${i % 5}`,
      source: { position: position(i), commit_time: formatMicros(T0 + BigInt(i) * 1000n) },
    });

  beforeAll(async () => {
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
    const tx: Producer = kafka.producer({ transactionalId: uniqueName("offsets-tx"), idempotent: true, maxInFlightRequests: 1 });
    const plain = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await tx.connect();
    await plain.connect();
    // 400 events in transactions of 4; every 7th transaction aborted; a foreign record every 50 events.
    for (let t = 0; t < 100; t++) {
      const trx = await tx.transaction();
      await trx.send({ topic, acks: -1, messages: [0, 1, 2, 3].map((j) => ({ key: `d${(t * 4 + j) % 5}`, value: value(t * 4 + j) })) });
      if (t % 7 === 3) await trx.abort();
      else await trx.commit();
      if (t % 12 === 0) await plain.send({ topic, messages: [{ key: `d${t % 5}`, value: JSON.stringify({ other: "producer" }) }] });
    }
    await tx.disconnect();
    await plain.disconnect();
    const committed = 400 - 4 * Math.ceil((100 - 3) / 7) + 9;
    all = (await consume([topic], (got) => got.length >= committed, { timeoutMs: 30_000 })) as unknown as Consumed<
      Record<string, unknown>
    >[];
  }, 60_000);

  afterAll(async () => {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
  });

  /** The expected start per partition: just past the last positioned record before the target. */
  function expected(before: (pos: string, micros: bigint) => boolean): Map<number, string> {
    const out = new Map<number, string>([
      [0, "0"],
      [1, "0"],
      [2, "0"],
    ]);
    for (const m of all) {
      const src = (m.event as { source?: { position: string; commit_time: string } }).source;
      if (src && before(src.position, parseTimeMicros(src.commit_time)!)) out.set(m.partition, (BigInt(m.offset) + 1n).toString());
    }
    return out;
  }

  it("finds every partition's first offset at or after a position, an LSN and a time, past markers, aborted and foreign records", async () => {
    for (const i of [0, 1, 13, 14, 15, 57, 130, 131, 250, 398, 399]) {
      const p = position(i);
      expect(await findStartOffsets(kafka, admin, topic, parseTarget(p)), p).toEqual(expected((x) => x < p));
      const lsn = `0/${(0x1000 + Math.floor(i / 4) * 0x100).toString(16)}`;
      expect(await findStartOffsets(kafka, admin, topic, parseTarget(lsn)), lsn).toEqual(expected((x) => x < position(i - (i % 4))));
      const time = formatMicros(T0 + BigInt(i) * 1000n);
      expect(await findStartOffsets(kafka, admin, topic, parseTarget(time)), time).toEqual(expected((_, t) => t < T0 + BigInt(i) * 1000n));
    }
    // After everything: just past each partition's last event (a commit marker after it is no record).
    expect(await findStartOffsets(kafka, admin, topic, parseTarget("FF/0"))).toEqual(expected(() => true));
  }, 60_000);

  it("says a position is older than retention once the first records are deleted, naming the oldest left", async () => {
    const p0 = all.filter((m) => m.partition === 0);
    // Delete partition 0's records up to its 20th record; the oldest positioned one after it is named.
    const cut = BigInt(p0[20]!.offset);
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: cut.toString() }] });
    const oldest = p0.find((m) => BigInt(m.offset) >= cut && "source" in m.event)!.event as {
      source: { position: string; commit_time: string };
    };
    const err = await findStartOffsets(kafka, admin, topic, parseTarget(position(0))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetentionError);
    expect((err as Error).message).toContain(`partition 0: ${oldest.source.position} (committed ${oldest.source.commit_time})`);
    expect((err as Error).message).not.toMatch(/partition [12]:/);
    // From the oldest left on: fine, and it is where partition 0 starts.
    const starts = await findOffsets(kafka, admin, [topic], parseTarget(oldest.source.position));
    expect(starts.get(topic)![0]).toMatchObject({ partition: 0, earliest: cut });
    expect(starts.get(topic)![0]!.offset).toBeLessThanOrEqual(
      BigInt(p0.find((m) => "source" in m.event && BigInt(m.offset) >= cut)!.offset),
    );
  }, 60_000);
});
