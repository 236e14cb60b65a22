import { Kafka, logLevel, type Admin } from "kafkajs";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Admin as PlatformaticAdmin,
  ConfigResourceTypes,
  Consumer as PlatformaticConsumer,
  FetchIsolationLevels,
  ListOffsetTimestamps,
  MessagesStreamModes,
  stringDeserializers,
} from "@platformatic/kafka";
import type { Config } from "../../src/config.js";
import { connectClients, createClients, disconnectClients, type KafkaClients } from "../../src/sink/client.js";
import { PlatformaticSinkProducer, kafkajsSinkProducer, platformaticOptions, type SinkProducer } from "../../src/sink/producer.js";
import { daemonConfig, services, uniqueName } from "../support/harness.js";

/**
 * The producer interface (src/sink/producer.ts) on both clients, against the real Kafka: what one
 * writes, read back with kafkajs (the product's reader), must be the same records in the same
 * partitions in the same order; transactions commit or abort across topics and fence an older
 * producer of the same id (kafkajs). And the other calls the product makes (admin, a read_committed
 * consumer), tried on @platformatic/kafka. What failed on @platformatic/kafka (transactions with
 * fencing, producing over SASL_SSL) is in bench/README.md, "The Kafka client".
 */
const log = pino({ level: "silent" });
const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-producer" });
let admin: Admin;
const topics: string[] = [];
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
});

afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

async function newTopic(prefix: string, partitions = 3): Promise<string> {
  const topic = uniqueName(prefix);
  topics.push(topic);
  // kafkajs's waitForLeaders gives up with UNKNOWN_TOPIC_OR_PARTITION on a loaded machine: poll instead.
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: false });
  for (let i = 0; ; i++) {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] }).catch(() => null);
    const parts = meta?.topics[0]?.partitions ?? [];
    if (parts.length === partitions && parts.every((p) => p.leader >= 0)) return topic;
    if (i >= 100) throw new Error(`topic ${topic}: partitions without a leader after 30 s`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

type Client = "kafkajs" | "platformatic";

/** The producer of `client` for these settings, connected; closed after the file. */
async function producerFor(client: Client, cfg: Config): Promise<SinkProducer> {
  if (client === "kafkajs") {
    const clients: KafkaClients = createClients(cfg, log);
    await connectClients(cfg, clients);
    closers.push(() => disconnectClients(clients));
    return kafkajsSinkProducer(clients.producer);
  }
  const producer = new PlatformaticSinkProducer(platformaticOptions(cfg));
  closers.push(() => producer.disconnect());
  await producer.connect();
  return producer;
}

interface Read {
  topic: string;
  partition: number;
  key: string | null;
  value: string | null;
}

/** Every record of `topicNames` (kafkajs consumer, read_committed unless told), once `count` are in. */
async function readAll(topicNames: string[], count: number, readUncommitted = false): Promise<Read[]> {
  const consumer = kafka.consumer({ groupId: uniqueName("test-producer"), readUncommitted });
  await consumer.connect();
  const out: Read[] = [];
  try {
    await consumer.subscribe({ topics: topicNames, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`read ${out.length} of ${count} records in 30 s`)), 30_000);
      void consumer.run({
        eachMessage: async ({ topic, partition, message }) => {
          out.push({ topic, partition, key: message.key?.toString() ?? null, value: message.value?.toString() ?? null });
          if (out.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
    });
    // A little longer: anything beyond `count` (an aborted record leaking) must show up too.
    await new Promise((r) => setTimeout(r, 1_500));
  } finally {
    await consumer.disconnect();
  }
  return out;
}

const DAGS = Array.from({ length: 40 }, (_, i) => `dag_${i}`);
const records = (n: number, tag: string) => Array.from({ length: n }, (_, i) => ({ key: DAGS[i % DAGS.length]!, value: `${tag}-${i}` }));

describe.each<Client>(["kafkajs", "platformatic"])("the SinkProducer on %s", (client) => {
  it("writes keyed records to two topics in order, a tombstone and a record for a set partition", async () => {
    const a = await newTopic("producer_a");
    const b = await newTopic("producer_b");
    const p = await producerFor(client, daemonConfig(uniqueName("producer")));
    await p.sendBatch({
      topicMessages: [
        { topic: a, messages: [...records(300, "a"), { key: "gone", value: null }] },
        { topic: b, messages: [...records(50, "b"), { key: null, value: "pinned", partition: 2 }] },
      ],
      acks: -1,
    });
    await p.sendBatch({ topicMessages: [{ topic: a, messages: records(300, "a2") }], acks: -1 });
    const read = await readAll([a, b], 652);
    expect(read).toHaveLength(652);
    // Per key, the order written (both batches); and one partition per key.
    const perKey = new Map<string, Read[]>();
    for (const r of read.filter((r) => r.topic === a && r.value !== null)) perKey.set(r.key!, [...(perKey.get(r.key!) ?? []), r]);
    for (const [key, rs] of perKey) {
      const written = [...records(300, "a"), ...records(300, "a2")].filter((r) => r.key === key).map((r) => r.value);
      expect(rs.map((r) => r.value)).toEqual(written);
      expect(new Set(rs.map((r) => r.partition)).size).toBe(1);
    }
    expect(read.find((r) => r.key === "gone")).toMatchObject({ topic: a, value: null });
    expect(read.find((r) => r.value === "pinned")).toMatchObject({ topic: b, partition: 2, key: null });
    partitionsSeen.set(client, new Map([...perKey].map(([key, rs]) => [key, rs[0]!.partition])));
  });
});

// kafkajs only: on @platformatic/kafka 2.12.1 this sequence failed ("There is a newer producer with
// the same transactionalId which fences the current one", from InitProducerId): see bench/README.md.
describe.each<Client>(["kafkajs"])("the SinkProducer on %s, exactly-once", (client) => {
  it("commits or aborts a transaction over two topics whole, and a second producer of the id fences the first", async () => {
    const a = await newTopic("producer_tx_a");
    const b = await newTopic("producer_tx_b");
    const cfg = daemonConfig(uniqueName("producer_tx"), { EVENTSTREAM_DELIVERY: "exactly-once", EVENTSTREAM_CHECKPOINT_TOPIC: b });
    const first = await producerFor(client, cfg);
    const committed = await first.transaction();
    await committed.sendBatch({
      topicMessages: [
        { topic: a, messages: records(20, "c") },
        { topic: b, messages: [{ key: "ckpt", value: "1" }] },
      ],
    });
    await committed.commit();
    const aborted = await first.transaction();
    await aborted.sendBatch({
      topicMessages: [
        { topic: a, messages: records(20, "x") },
        { topic: b, messages: [{ key: "ckpt", value: "2" }] },
      ],
    });
    await aborted.abort();
    // Back to back with the abort: the coordinator may still be writing its markers.
    const open = await first.transaction();
    await open.sendBatch({ topicMessages: [{ topic: a, messages: records(5, "z") }] });
    // The same transactional id again (a second daemon on the slot): the first is fenced, its open
    // transaction aborted.
    const second = await producerFor(client, cfg);
    const fencing = await second.transaction();
    await fencing.sendBatch({ topicMessages: [{ topic: b, messages: [{ key: "ckpt", value: "3" }] }] });
    await fencing.commit();
    await expect(open.commit()).rejects.toThrow();
    const read = await readAll([a, b], 22);
    expect(read.filter((r) => r.topic === a).map((r) => r.value)).toEqual(expect.arrayContaining(records(20, "c").map((r) => r.value)));
    expect(read.map((r) => r.value).filter((v) => v!.startsWith("x") || v!.startsWith("z") || v === "2")).toEqual([]);
    expect(read.filter((r) => r.topic === b).map((r) => r.value)).toEqual(["1", "3"]);
    expect(read).toHaveLength(22);
    // read_uncommitted sees the aborted records: the abort did write them, and the markers hide them.
    expect((await readAll([a], 45, true)).length).toBeGreaterThanOrEqual(45);
  });
});

const partitionsSeen = new Map<Client, Map<string, number>>();

describe("@platformatic/kafka", () => {
  it("puts each key in the partition kafkajs does (so a DAG keeps its partition across a switch)", () => {
    expect(partitionsSeen.get("platformatic")).toEqual(partitionsSeen.get("kafkajs"));
    expect(partitionsSeen.get("kafkajs")?.size).toBe(DAGS.length);
  });

  it("has the admin calls the product makes, and a read_committed consumer", async () => {
    const topic = uniqueName("producer_admin");
    topics.push(topic);
    const opts = { clientId: "test-producer-admin", bootstrapBrokers: services().kafkaBrokers };
    const padmin = new PlatformaticAdmin(opts);
    closers.push(() => padmin.close());
    await padmin.createTopics({ topics: [topic], partitions: 3, replicas: 1, configs: [{ name: "cleanup.policy", value: "compact" }] });
    expect(await padmin.listTopics()).toContain(topic);
    const meta = await padmin.metadata({ topics: [topic] });
    expect(meta.topics.get(topic)?.partitionsCount).toBe(3);
    const [described] = await padmin.describeConfigs({
      resources: [{ resourceType: ConfigResourceTypes.TOPIC, resourceName: topic, configurationKeys: ["cleanup.policy"] }],
    });
    expect(described?.configs.find((c) => c.name === "cleanup.policy")?.value).toBe("compact");

    const cfg = daemonConfig(uniqueName("producer_admin_tx"), {
      EVENTSTREAM_DELIVERY: "exactly-once",
      EVENTSTREAM_CHECKPOINT_TOPIC: topic,
    });
    const p = await producerFor("platformatic", cfg);
    const tx = await p.transaction();
    await tx.sendBatch({ topicMessages: [{ topic, messages: records(6, "k") }] });
    await tx.commit();
    const aborted = await p.transaction();
    await aborted.sendBatch({ topicMessages: [{ topic, messages: records(6, "no") }] });
    await aborted.abort();

    // fetchTopicOffsets: the high watermarks (7 per... whatever the partitioner chose; 12 records plus markers in all).
    const offsets = await padmin.listOffsets({
      topics: [
        { name: topic, partitions: [0, 1, 2].map((partitionIndex) => ({ partitionIndex, timestamp: ListOffsetTimestamps.LATEST })) },
      ],
    });
    const high = offsets[0]!.partitions.reduce((s, p) => s + Number(p.offset), 0);
    expect(high).toBeGreaterThanOrEqual(12);

    const groupId = uniqueName("producer_pc");
    const consumer = new PlatformaticConsumer({
      ...opts,
      clientId: "test-producer-consumer",
      groupId,
      deserializers: stringDeserializers,
      isolationLevel: FetchIsolationLevels.READ_COMMITTED,
    });
    closers.push(() => consumer.close(true));
    const stream = await consumer.consume({ topics: [topic], mode: MessagesStreamModes.EARLIEST, autocommit: false, maxWaitTime: 500 });
    const values: string[] = [];
    const deadline = Date.now() + 20_000;
    for await (const m of stream) {
      values.push(m.value as string);
      if (values.length === 6) await m.commit();
      if (values.length >= 6 || Date.now() > deadline) break;
    }
    await stream.close();
    expect(values.sort()).toEqual(
      records(6, "k")
        .map((r) => r.value)
        .sort(),
    );
    // fetchOffsets: the group's committed offsets.
    const [group] = await padmin.listConsumerGroupOffsets({ groups: [groupId] });
    expect(group?.topics[0]?.name).toBe(topic);
  });
});
