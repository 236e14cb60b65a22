import { Kafka, logLevel } from "kafkajs";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { readBack } from "../../src/sink/read-back.js";
import { readToEnd } from "../../src/sink/read-to-end.js";
import { services, sleep, uniqueName } from "../support/harness.js";

/**
 * The start-time read-back (src/sink/read-back.ts) on real Kafka, where a partition's last stable
 * offset is short of its end: a transaction is still open when the read begins, and commits while
 * it runs. The read must wait for those records and hand them over (the mapper learns its rows'
 * last published state from them); stopping at the last stable offset fetched at first would miss
 * them, and the next change of those rows would be published with an older previous_state.
 */
describe("read-back", () => {
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-read-back" });
  const admin = kafka.admin();
  const topics: string[] = [];

  afterAll(async () => {
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.disconnect();
  });

  it("reads on past a transaction that was open when it started, once it commits", async () => {
    const topic = uniqueName("read_back");
    topics.push(topic);
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
    const event = (p: number, i: number) =>
      JSON.stringify({
        type: "task_instance",
        partition: p,
        i,
        source: { position: `00000000000000${String(10 + i).padStart(2, "0")}-0000000${p}` },
      });

    const producer = kafka.producer({ transactionalId: uniqueName("read_back_tx"), idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      // Committed: two records in every partition.
      const committed = await producer.transaction();
      await committed.send({ topic, messages: [0, 1, 2].flatMap((p) => [0, 1].map((i) => ({ partition: p, value: event(p, i) }))) });
      await committed.commit();
      // Open while the read starts: one more record in partition 1.
      const open = await producer.transaction();
      await open.send({ topic, messages: [{ partition: 1, value: event(1, 2) }] });

      const seen: Record<string, unknown>[] = [];
      const lines: string[] = [];
      const reading = readBack(kafka, admin, {
        topics: [topic],
        perPartition: 100,
        clientId: "test-read-back",
        timeoutMs: 60_000,
        log: pino({ level: "info" }, { write: (l: string) => lines.push(l) }),
        track: () => undefined,
        onEvent: (v) => seen.push(v),
      });
      // Long enough for the reader to join, fetch and reach the last stable offset of every partition.
      await sleep(4_000);
      await open.commit();
      const result = await reading;

      const ofPartition1 = seen.filter((v) => v.partition === 1).map((v) => v.i);
      expect(ofPartition1).toEqual([0, 1, 2]);
      expect(seen.filter((v) => v.partition !== 1)).toHaveLength(4);
      expect(result.heads.get(topic)?.[1]).toEqual({ commitLsn: 0x12n, index: 1 });
      expect(lines.some((l) => l.includes("past its last stable offset"))).toBe(true);
    } finally {
      await producer.disconnect();
    }
  });

  it("after the tail wait, hands over nothing of a partition whose end stays in an open transaction: its rows start unknown, not one state behind", async () => {
    const topic = uniqueName("read_back_open");
    topics.push(topic);
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    const value = (i: number) =>
      JSON.stringify({ type: "task_instance", i, source: { position: `00000000000000${String(10 + i)}-00000000` } });
    const producer = kafka.producer({ transactionalId: uniqueName("read_back_open_tx"), idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      const committed = await producer.transaction();
      await committed.send({ topic, messages: [0, 1].map((i) => ({ value: value(i) })) });
      await committed.commit();
      const open = await producer.transaction();
      await open.send({ topic, messages: [{ value: value(2) }] });
      const seen: Record<string, unknown>[] = [];
      const lines: string[] = [];
      const started = Date.now();
      await readBack(kafka, admin, {
        topics: [topic],
        perPartition: 100,
        clientId: "test-read-back",
        timeoutMs: 60_000,
        tailWaitMs: 2_000,
        log: pino({ level: "info" }, { write: (l: string) => lines.push(l) }),
        track: () => undefined,
        onEvent: (v) => seen.push(v),
      });
      // Ends after the tail wait, not at the 60 s timeout. The committed records are not handed
      // over either: the open transaction may hold later states of the same rows.
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(seen).toEqual([]);
      expect(lines.some((l) => l.includes("the rows of its events start with their previous state unknown"))).toBe(true);
      await open.abort();
    } finally {
      await producer.disconnect();
    }
  });

  it("readToEnd from given offsets: nothing below them, each partition to its end unless the caller says it has enough", async () => {
    const topic = uniqueName("read_from");
    topics.push(topic);
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      await producer.send({
        topic,
        acks: -1,
        messages: [0, 1, 2].flatMap((p) => [0, 1, 2, 3, 4].map((i) => ({ partition: p, value: `${p}:${i}` }))),
      });
    } finally {
      await producer.disconnect();
    }
    const seen: string[] = [];
    // Partition 0 from offset 2 to its end; partition 1 from 1, enough after offset 3; partition 2
    // from past its end (nothing to read).
    const from = new Map([
      [0, 2n],
      [1, 1n],
      [2, 5n],
    ]);
    await readToEnd(kafka, topic, { group: "test-read-from", admin, from, timeoutMs: 60_000 }, (p, m) => {
      seen.push(`${p}@${m.offset}=${m.value!.toString()}`);
      return p === 1 && m.offset === "3";
    });
    expect(seen.filter((s) => s.startsWith("0@"))).toEqual(["0@2=0:2", "0@3=0:3", "0@4=0:4"]);
    expect(seen.filter((s) => s.startsWith("1@"))).toEqual(["1@1=1:1", "1@2=1:2", "1@3=1:3"]);
    expect(seen.filter((s) => s.startsWith("2@"))).toEqual([]);
  });
});
