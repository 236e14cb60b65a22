import { Kafka, Partitioners, logLevel, type IHeaders, type Message } from "kafkajs";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import { KafkaProtocolError } from "../../src/sink/wire/errors.js";
import type { BrokerConnection } from "../../src/sink/wire/connection.js";
import { WireProducer, type WireProducerOptions } from "../../src/sink/wire/producer.js";
import { kafka as kafkaService } from "../support/load.js";
import { services, uniqueName } from "../support/harness.js";

/**
 * The wire producer (src/sink/wire) against the real Kafka of scripts/services.sh: what a kafkajs
 * consumer reads back is what was sent (placed as kafkajs places it, in order per partition), and
 * idempotence holds when a request is sent twice, a connection dies under it, or the broker restarts.
 */
interface Read {
  partition: number;
  offset: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

const brokers = (): string[] => services().kafkaBrokers;
const kafka = new Kafka({ brokers: brokers(), logLevel: logLevel.NOTHING, clientId: "test-wire" });
const admin = kafka.admin();
const topics: string[] = [];
const producers: WireProducer[] = [];

/** A producer of the plaintext listener; its log lines (debug: its retries) go to `lines`. */
function wire(options: WireProducerOptions = {}, lines: string[] = []): WireProducer {
  const cfg = { brokers: brokers(), clientId: "test-wire", ssl: null, sasl: null } as unknown as Config["kafka"];
  const p = new WireProducer(cfg, pino({ level: "debug" }, { write: (l: string) => lines.push(l) }), options);
  producers.push(p);
  return p;
}

async function topic(partitions: number, configEntries: { name: string; value: string }[] = []): Promise<string> {
  const name = uniqueName("wire");
  topics.push(name);
  await admin.createTopics({ topics: [{ topic: name, numPartitions: partitions, configEntries }], waitForLeaders: true });
  return name;
}

/** Records on the topic: the sum of its partitions' end offsets (no transactions here, so offsets = records). */
async function countOnTopic(name: string): Promise<number> {
  return (await admin.fetchTopicOffsets(name)).reduce((n, p) => n + Number(p.high), 0);
}

/** Every record of the topic, read by a kafkajs consumer, by partition in offset order. */
async function readAll(name: string): Promise<Read[]> {
  const expected = await countOnTopic(name);
  const consumer = kafka.consumer({ groupId: uniqueName("wire-read"), maxWaitTimeInMs: 100 });
  const out: Read[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic: name, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`read ${out.length} of ${expected} records of ${name} in 60 s`)), 60_000);
      if (expected === 0) resolve();
      void consumer
        .run({
          eachMessage: async ({ partition, message }) => {
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
            out.push({
              partition,
              offset: Number(message.offset),
              key: message.key?.toString() ?? null,
              value: message.value?.toString() ?? null,
              headers,
            });
            if (out.length >= expected) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
}

/** Where kafkajs's own default partitioner puts a keyed message. */
function kafkajsPlacement(partitions: number, key: string): number {
  const partitionMetadata = Array.from({ length: partitions }, (_, i) => ({
    partitionId: i,
    leader: 1,
    partitionErrorCode: 0,
    replicas: [1],
    isr: [1],
  }));
  return Partitioners.DefaultPartitioner()({ topic: "t", partitionMetadata, message: { key, value: null } });
}

function values(read: Read[], partition: number): (string | null)[] {
  return read.filter((r) => r.partition === partition).map((r) => r.value);
}

describe("WireProducer", () => {
  beforeAll(async () => {
    await admin.connect();
  });
  afterAll(async () => {
    for (const p of producers) await p.disconnect();
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.disconnect();
  });

  it("writes what a kafkajs consumer reads back: keys, values, headers, tombstones, kafkajs's placement, order per partition, several topics", async () => {
    const a = await topic(3);
    const b = await topic(5);
    const p = wire();
    await p.connect();
    const dags = ["dag_α", "etl_daily", "日本語", "ml", "reports_🙂", ""];
    const sent: { topic: string; m: Message; partition: number }[] = [];
    for (let round = 0; round < 3; round++) {
      const batch: { topic: string; messages: Message[] }[] = [
        { topic: a, messages: [] },
        { topic: b, messages: [] },
      ];
      for (let i = 0; i < 40; i++) {
        const key = dags[i % dags.length]!;
        const value = i % 13 === 5 ? null : JSON.stringify({ round, i, key, pad: "é".repeat(i * 7) });
        const headers: IHeaders = { ce_id: `${round}-${i}`, ce_type: "task_instance.state_changed" };
        const m: Message = { key, value, headers };
        const t = i % 2 === 0 ? a : b;
        batch[i % 2]!.messages.push(m);
        sent.push({ topic: t, m, partition: kafkajsPlacement(t === a ? 3 : 5, key) });
      }
      // An explicit partition wins over the key.
      batch[1]!.messages.push({ key: "dag_α", value: `explicit-${round}`, partition: 4 });
      sent.push({ topic: b, m: { key: "dag_α", value: `explicit-${round}` }, partition: 4 });
      await p.sendBatch({ topicMessages: batch, acks: -1 });
    }
    for (const [t, n] of [
      [a, 3],
      [b, 5],
    ] as const) {
      const read = await readAll(t);
      expect(read).toHaveLength(sent.filter((s) => s.topic === t).length);
      for (let part = 0; part < n; part++) {
        const mine = sent.filter((s) => s.topic === t && s.partition === part);
        expect(values(read, part), `${t}[${part}]`).toEqual(mine.map((s) => s.m.value ?? null));
        const got = read.filter((r) => r.partition === part);
        mine.forEach((s, i) => {
          expect(got[i]!.key).toBe(s.m.key);
          expect(got[i]!.headers).toEqual(s.m.headers ?? {});
        });
      }
    }
  });

  it("spreads keyless messages over the partitions and keeps them all", async () => {
    const t = await topic(4);
    const p = wire();
    await p.connect();
    await p.sendBatch({ topicMessages: [{ topic: t, messages: Array.from({ length: 40 }, (_, i) => ({ value: `v${i}` })) }] });
    const read = await readAll(t);
    expect(read.map((r) => r.value).sort()).toEqual(Array.from({ length: 40 }, (_, i) => `v${i}`).sort());
    expect(new Set(read.map((r) => r.partition)).size).toBe(4);
  });

  it("reports a record over the topic's max.message.bytes as MESSAGE_TOO_LARGE, and stays broken after", async () => {
    const t = await topic(1, [{ name: "max.message.bytes", value: "2000" }]);
    const p = wire();
    await p.connect();
    const err = await p
      .sendBatch({ topicMessages: [{ topic: t, messages: [{ key: "k", value: "x".repeat(5_000) }] }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KafkaProtocolError);
    expect((err as KafkaProtocolError).type).toBe("MESSAGE_TOO_LARGE");
    expect((err as KafkaProtocolError).code).toBe(10);
    await expect(p.sendBatch({ topicMessages: [{ topic: t, messages: [{ key: "k", value: "small" }] }] })).rejects.toThrow(
      /failed earlier.*MESSAGE_TOO_LARGE/,
    );
    expect(await countOnTopic(t)).toBe(0);
  });

  it("rejects acks other than -1", async () => {
    const p = wire();
    await p.connect();
    await expect(p.sendBatch({ topicMessages: [], acks: 1 })).rejects.toThrow(/acks=-1/);
  });

  it("keeps one copy when the same encoded request is sent twice (the broker deduplicates by producer id and sequence)", async () => {
    const t = await topic(3);
    const p = wire({ keepLastRequest: true });
    await p.connect();
    const messages = Array.from({ length: 30 }, (_, i) => ({ key: `k${i % 5}`, value: `v${i}` }));
    await p.sendBatch({ topicMessages: [{ topic: t, messages }] });
    const codes = await p.resendLastRequest();
    expect(codes.length).toBe(new Set(messages.map((m) => kafkajsPlacement(3, m.key))).size);
    for (const c of codes) expect([0, 46]).toContain(c); // NONE (Kafka answers a duplicate with its first offset) or DUPLICATE_SEQUENCE_NUMBER
    await p.sendBatch({ topicMessages: [{ topic: t, messages: [{ key: "k0", value: "after" }] }] });
    const read = await readAll(t);
    expect(read.map((r) => r.value).sort()).toEqual([...messages.map((m) => m.value), "after"].sort());
  });

  it("loses and duplicates nothing when its connections are killed mid-stream", async () => {
    const t = await topic(3);
    const lines: string[] = [];
    const p = wire({}, lines);
    await p.connect();
    const leaders = (p as unknown as { leaders: Map<number, Promise<BrokerConnection>> }).leaders;
    let kills = 0;
    const sent: string[] = [];
    for (let n = 0; n < 120; n++) {
      const messages = Array.from({ length: 20 }, (_, i) => ({ key: `dag_${(n + i) % 9}`, value: `${n}-${i}` }));
      sent.push(...messages.map((m) => m.value));
      const sending = p.sendBatch({ topicMessages: [{ topic: t, messages }] });
      // Every 6th request: the socket dies right after the request went out, before (or after) the
      // broker wrote it; the resend of the same batch must be written once.
      if (n % 6 === 3) {
        await new Promise((r) => setImmediate(r));
        for (const c of leaders.values()) {
          void c.then((conn) => (conn as unknown as { socket: { destroy(): void } }).socket.destroy());
          kills++;
        }
      }
      await sending;
    }
    expect(kills).toBeGreaterThan(10);
    expect(lines.filter((l) => l.includes("producing to Kafka: retrying")).length).toBeGreaterThan(5);
    expect(await countOnTopic(t)).toBe(sent.length);
    const read = await readAll(t);
    for (let part = 0; part < 3; part++) {
      const got = values(read, part);
      const order = got.map((v) => v!.split("-").map(Number) as [number, number]);
      for (let i = 1; i < order.length; i++)
        expect(order[i]![0] * 100 + order[i]![1]).toBeGreaterThan(order[i - 1]![0] * 100 + order[i - 1]![1]);
    }
    expect(read.map((r) => r.value).sort()).toEqual([...sent].sort());
  });

  it("loses and duplicates nothing across a broker restart", { timeout: 300_000 }, async () => {
    const t = await topic(3);
    const lines: string[] = [];
    const p = wire({ retryWindowMs: 180_000 }, lines);
    await p.connect();
    const sent: string[] = [];
    let restarted = false;
    let restarting: Promise<void> | null = null;
    try {
      // Sends go on while the broker stops and starts, and a few after it is back.
      for (let n = 0, after = 0; after < 10; n++) {
        const messages = Array.from({ length: 10 }, (_, i) => ({ key: `dag_${(n + i) % 7}`, value: `${n}-${i}` }));
        sent.push(...messages.map((m) => m.value));
        if (n === 10) {
          restarting = kafkaService("kafka-stop")
            .then(() => kafkaService("kafka-start"))
            .then(() => {
              restarted = true;
            });
        }
        await p.sendBatch({ topicMessages: [{ topic: t, messages }] });
        if (restarted) after++;
      }
    } finally {
      await restarting;
    }
    // The producer did meet the outage (and rode it out by retrying the same batches).
    expect(lines.filter((l) => l.includes("producing to Kafka: retrying")).length).toBeGreaterThan(0);
    expect(await countOnTopic(t)).toBe(sent.length);
    const read = await readAll(t);
    expect(read.map((r) => r.value).sort()).toEqual([...sent].sort());
  });
});
