/**
 * What the Kafka client costs per record: `node bench/kafka-client.ts` produces N records (~840 B
 * JSON values shaped like the daemon's task-instance events, keys = ~200 dag ids) to a fresh
 * 6-partition topic, acks=all, idempotent, with each client variant in a child process of its own
 * (so CPU time and peak RSS are that client's alone), and counts the records on the topic after.
 *
 *   kafkajs                as src/sink/client.ts configures it; one sendBatch at a time (publisher.ts)
 *   kafkajs-inflight       the same producer, --inflight sendBatch calls outstanding (see README:
 *                          kafkajs serialises them per broker anyway, and may reorder on a retry)
 *   platformatic           @platformatic/kafka, idempotent, acks=all, one send() at a time
 *   platformatic-inflight  the same, --inflight send() calls outstanding
 *   wire                   the daemon's own producer (src/sink/wire, EVENTSTREAM_KAFKA_PRODUCER=wire), one
 *                          sendBatch at a time, loaded from dist/ (`npm run build` first: Node's type
 *                          stripping does not map src/'s ".js" imports to their .ts files)
 *
 * Figures: records/s (first send -> last acknowledgement), CPU µs per record (process.cpuUsage over
 * the sends only), peak RSS (VmHWM) and RSS before the sends. Values come from a pool of distinct
 * strings built before the clock starts, so building them is not counted.
 *
 * Only erasable TypeScript syntax: Node runs this file directly (type stripping).
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import path from "node:path";
import { Kafka, logLevel, type Message } from "kafkajs";
import { servicesEnv } from "../scripts/services-env.ts";
import type * as WireModule from "../src/sink/wire/producer.ts";

const VARIANTS = ["kafkajs", "kafkajs-inflight", "platformatic", "platformatic-inflight", "wire"] as const;
type Variant = (typeof VARIANTS)[number];

interface Options {
  records: number;
  batch: number;
  inflight: number;
  partitions: number;
  brokers: string[];
}

interface Result {
  variant: Variant;
  records: number;
  batch: number;
  inflight: number;
  seconds: number;
  recordsPerSecond: number;
  cpuUsPerRecord: number;
  peakRssMb: number;
  startRssMb: number;
  /** Peaks of process.memoryUsage(), sampled every 100 ms: where the RSS goes. */
  peakHeapTotalMb: number;
  peakExternalMb: number;
  onTopic: number;
}

const DAGS = Array.from(
  { length: 200 },
  (_, i) => `etl_${["daily", "hourly", "ml", "reports"][i % 4]}_pipeline_${String(i).padStart(3, "0")}`,
);

/** One event value, ~840 B, shaped like src/airflow's task-instance events. */
function eventValue(i: number): string {
  const dag = DAGS[i % DAGS.length]!;
  const ts = new Date(1_780_000_000_000 + i * 37).toISOString();
  return JSON.stringify({
    schema_version: 1,
    event_type: "task_instance.state_changed",
    op: "update",
    dag_id: dag,
    run_id: `scheduled__${ts}`,
    task_id: `transform_partition_${i % 50}`,
    map_index: -1,
    try_number: 1,
    ti_id: `01970c3a-${(i % 0xffff).toString(16).padStart(4, "0")}-7b2e-9f4c-5d6e7f8a9b0c`,
    state: "success",
    previous_state: "running",
    operator: "PythonOperator",
    queue: "default",
    pool: "default_pool",
    hostname: "airflow-worker-7d9f8c6b5-x2k4p",
    executor: "CeleryExecutor",
    start_date: ts,
    end_date: ts,
    duration: 12.345,
    queued_dttm: ts,
    scheduled_dttm: ts,
    run_after: ts,
    logical_date: ts,
    source: {
      db: "airflow",
      table: "task_instance",
      lsn: `1A/${(i * 136).toString(16).toUpperCase()}`,
      commit_time: ts,
      txid: 900_000 + i,
    },
    position: { commit_lsn: `1A/${(i * 136).toString(16).toUpperCase()}`, index: i % 7 },
    emitted_at: ts,
  });
}

function parseOptions(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      records: { type: "string", default: "300000" },
      batch: { type: "string", default: "2000" },
      inflight: { type: "string", default: "3" },
      partitions: { type: "string", default: "6" },
      variants: { type: "string", default: VARIANTS.join(",") },
      child: { type: "string" },
      topic: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  return values;
}

function rssMb(field: "VmHWM" | "VmRSS"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

/** Runs `sendOne` over the records in batches, `inflight` at a time, in order of start. */
async function drive(opts: Options, inflight: number, pool: string[], sendOne: (messages: Message[]) => Promise<unknown>): Promise<void> {
  let next = 0;
  const running = new Set<Promise<unknown>>();
  while (next < opts.records) {
    const n = Math.min(opts.batch, opts.records - next);
    const messages: Message[] = new Array(n);
    for (let j = 0; j < n; j++) {
      const i = next + j;
      messages[j] = { key: DAGS[i % DAGS.length]!, value: pool[i % pool.length]! };
    }
    next += n;
    const p = sendOne(messages).finally(() => running.delete(p));
    running.add(p);
    if (running.size >= inflight) await Promise.race(running);
  }
  await Promise.all(running);
}

async function runChild(variant: Variant, topic: string, opts: Options): Promise<Omit<Result, "onTopic">> {
  const inflight = variant.endsWith("-inflight") ? opts.inflight : 1;
  let send: (messages: Message[]) => Promise<unknown>;
  let close: () => Promise<void>;
  // Each child loads only its own client, so its RSS holds one client's code.
  if (variant.startsWith("kafkajs")) {
    const { Partitioners } = await import("kafkajs");
    const kafka = new Kafka({ clientId: "bench-kafka-client", brokers: opts.brokers, logLevel: logLevel.NOTHING });
    // As src/sink/client.ts (retry bounds aside: no failure is expected here).
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: inflight,
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: false,
    });
    await producer.connect();
    send = (messages) => producer.sendBatch({ topicMessages: [{ topic, messages }], acks: -1 });
    close = () => producer.disconnect();
  } else if (variant === "wire") {
    const where = new URL("../dist/sink/wire/producer.js", import.meta.url);
    const { WireProducer } = (await import(where.href).catch((e: unknown) => {
      throw new Error(`the wire variant loads ${fileURLToPath(where)}: run \`npm run build\` first (${(e as Error).message})`);
    })) as typeof WireModule;
    const { pino } = await import("pino");
    const kafkaCfg = { brokers: opts.brokers, clientId: "bench-kafka-client", ssl: null, sasl: null, producer: "wire" as const };
    const producer = new WireProducer(kafkaCfg, pino({ level: "warn" }));
    await producer.connect();
    send = (messages) => producer.sendBatch({ topicMessages: [{ topic, messages }], acks: -1 });
    close = () => producer.disconnect();
  } else {
    const { Producer: PlatformaticProducer, ProduceAcks, murmur2, stringSerializers } = await import("@platformatic/kafka");
    const producer = new PlatformaticProducer({
      clientId: "bench-kafka-client",
      bootstrapBrokers: opts.brokers,
      idempotent: true,
      acks: ProduceAcks.ALL,
      autocreateTopics: false,
      maxInflights: Math.max(inflight, 1),
      // kafkajs's DefaultPartitioner (Java's): murmur2 & 0x7fffffff, modulo the partition count
      // (applied by the client); the hash of the key string cached, as src/sink/producer.ts does.
      partitioner: (message: { key?: string }) => (message.key === undefined ? 0 : murmur2(message.key, true) & 0x7fffffff),
      serializers: stringSerializers,
    });
    await producer.initIdempotentProducer({});
    send = (messages) => producer.send({ messages: messages.map((m) => ({ topic, key: m.key as string, value: m.value as string })) });
    close = () => producer.close();
  }
  const pool = Array.from({ length: 5_000 }, (_, i) => eventValue(i));
  const startRssMb = rssMb("VmRSS");
  const peak = { heapTotal: 0, external: 0 };
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peak.heapTotal = Math.max(peak.heapTotal, m.heapTotal);
    peak.external = Math.max(peak.external, m.external);
  }, 100);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await drive(opts, inflight, pool, send);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const peakRssMb = rssMb("VmHWM");
  clearInterval(sampler);
  await close();
  return {
    variant,
    records: opts.records,
    batch: opts.batch,
    inflight,
    seconds: Math.round(seconds * 100) / 100,
    recordsPerSecond: Math.round(opts.records / seconds),
    cpuUsPerRecord: Math.round(((cpu.user + cpu.system) / opts.records) * 100) / 100,
    peakRssMb,
    startRssMb,
    peakHeapTotalMb: Math.round(peak.heapTotal / 2 ** 20),
    peakExternalMb: Math.round(peak.external / 2 ** 20),
  };
}

/** Creates the topic and waits until every partition has a leader (on a loaded machine that can take seconds). */
async function createTopic(admin: ReturnType<Kafka["admin"]>, topic: string, partitions: number): Promise<void> {
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: false });
  for (let i = 0; ; i++) {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] }).catch(() => null);
    const parts = meta?.topics[0]?.partitions ?? [];
    if (parts.length === partitions && parts.every((p) => p.leader >= 0)) return;
    if (i >= 100) throw new Error(`topic ${topic}: partitions without a leader after 30 s`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function main(): Promise<void> {
  const args = parseOptions(process.argv.slice(2));
  if (args.help) {
    console.log(
      "node bench/kafka-client.ts [--records 300000] [--batch 2000] [--inflight 3] [--partitions 6] [--variants " +
        VARIANTS.join(",") +
        "]",
    );
    return;
  }
  const env = process.env.KAFKA_BROKERS
    ? process.env
    : { ...process.env, ...servicesEnv(path.dirname(path.dirname(fileURLToPath(import.meta.url)))) };
  const opts: Options = {
    records: Number(args.records),
    batch: Number(args.batch),
    inflight: Number(args.inflight),
    partitions: Number(args.partitions),
    brokers: (env.KAFKA_BROKERS ?? "127.0.0.1:9092").split(","),
  };
  if (args.child !== undefined) {
    const r = await runChild(args.child as Variant, args.topic!, opts);
    process.stdout.write(JSON.stringify(r) + "\n");
    return;
  }
  const variants = args.variants.split(",") as Variant[];
  for (const v of variants) if (!VARIANTS.includes(v)) throw new Error(`unknown variant ${v}; one of ${VARIANTS.join(", ")}`);
  const admin = new Kafka({ clientId: "bench-kafka-client-admin", brokers: opts.brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const results: Result[] = [];
  try {
    for (const variant of variants) {
      const topic = `bench-kclient-${variant}-${Date.now()}`;
      await createTopic(admin, topic, opts.partitions);
      try {
        const child = spawnSync(
          process.execPath, // kafkajs's request timeouts trip Node 24's negative-timeout warning on every start.
          [
            "--disable-warning=TimeoutNegativeWarning",
            fileURLToPath(import.meta.url),
            ...process.argv.slice(2),
            "--child",
            variant,
            "--topic",
            topic,
          ],
          {
            env: { ...env },
            encoding: "utf8",
            stdio: ["ignore", "pipe", "inherit"],
            maxBuffer: 1 << 20,
          },
        );
        if (child.status !== 0) throw new Error(`${variant}: child exited ${child.status}`);
        const r = JSON.parse(child.stdout.trim().split("\n").pop()!) as Omit<Result, "onTopic">;
        const offsets = await admin.fetchTopicOffsets(topic);
        const onTopic = offsets.reduce((sum, o) => sum + Number(o.high) - Number(o.low), 0);
        results.push({ ...r, onTopic });
        console.log(JSON.stringify({ ...r, onTopic }));
      } finally {
        await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
      }
    }
  } finally {
    await admin.disconnect();
  }
  console.log(`\nload average: ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
  console.log("| client | records/s | CPU µs/record | peak RSS MB (at start) | peak heap / external MB | on topic |");
  console.log("|---|---|---|---|---|---|");
  for (const r of results) {
    const name = r.inflight > 1 ? `${r.variant} (${r.inflight} in flight)` : r.variant;
    console.log(
      `| ${name}, batch ${r.batch} | ${r.recordsPerSecond} | ${r.cpuUsPerRecord} | ${r.peakRssMb} (${r.startRssMb}) | ${r.peakHeapTotalMb} / ${r.peakExternalMb} | ${r.onTopic} |`,
    );
  }
  if (results.some((r) => r.onTopic !== r.records)) {
    console.log("!! a topic does not hold exactly the records sent");
    process.exitCode = 1;
  }
}

await main();
