import { randomBytes } from "node:crypto";
import type { Writable } from "node:stream";
import type { Admin, KafkaMessage } from "kafkajs";
import type { Config } from "../config.js";
import { UserActionError } from "../errors.js";
import type { Logger } from "../log.js";
import { connectClients, createClients, disconnectClients } from "../sink/client.js";
import { deliveryMode } from "../sink/delivery.js";
import { readWindows, type RecordSink } from "./copy.js";
import { Progress } from "./progress.js";
import { replayProducer, stdoutSink, topicSink } from "./sinks.js";
import { parseTarget, type Target } from "./target.js";
import { replayWindow, sourceTopics, type PartitionWindow } from "./window.js";
import { REPLAY_USAGE } from "./usage.js";

/** `airflow-eventstream replay`'s arguments. */
export interface ReplayArgs {
  from: Target;
  until: Target | null;
  /** null: every DAG. */
  dags: string[] | null;
  output: { kind: "topic"; topic: string } | { kind: "stdout" };
}

/** Parses the arguments after "replay"; a UserActionError (exit code 2) says what is wrong. */
export function parseReplayArgs(argv: string[]): ReplayArgs {
  let from: Target | null = null;
  let until: Target | null = null;
  const dags: string[] = [];
  let toTopic: string | null = null;
  let stdout = false;
  const usage = (problem: string) => new UserActionError(`replay: ${problem}\n\nUsage:\n  ${REPLAY_USAGE}`);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith("--")) throw usage(`${arg} needs a value`);
      return v;
    };
    if (arg === "--from") from = parseTarget(value());
    else if (arg === "--until") until = parseTarget(value());
    else if (arg === "--to-topic") toTopic = value();
    else if (arg === "--stdout") stdout = true;
    else if (arg === "--dag") {
      dags.push(value());
      // "--dag a b c" as well as "--dag a --dag b".
      while (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("--")) dags.push(argv[++i]!);
    } else throw usage(`unknown argument ${JSON.stringify(arg)}`);
  }
  if (from === null) throw usage("--from is required");
  if ((toTopic === null) === !stdout) throw usage("give one of --to-topic NAME and --stdout");
  return {
    from,
    until,
    dags: dags.length > 0 ? dags : null,
    output: toTopic === null ? { kind: "stdout" } : { kind: "topic", topic: toTopic },
  };
}

/**
 * Partitions copied at once. Measured on 100k events of 3 partitions (2 shared cores; bench/replay.ts):
 * one at a time, to a topic 8.4k records/s and to stdout 14.9k records/s; see docs/backfill.md.
 */
const COPY_CONCURRENCY = 3;

export interface ReplaySummary {
  replayId: string;
  topics: string[];
  windows: PartitionWindow[];
  records: number;
  ms: number;
}

/** Runs a replay with the daemon's configuration (Kafka client, topics, delivery mode). Logs go to `log`, never to `out`. */
export async function replay(
  cfg: Config,
  args: ReplayArgs,
  log: Logger,
  io: { out: Writable; err: NodeJS.WritableStream & { isTTY?: boolean } },
): Promise<ReplaySummary> {
  const replayId = `${new Date().toISOString().replace(/\.\d+Z$/, "Z")}-${randomBytes(4).toString("hex")}`;
  const clients = createClients(cfg, log);
  await connectClients(cfg, clients);
  const outTopic = args.output.kind === "topic" ? args.output.topic : null;
  try {
    const topics = await sourceTopics(cfg, clients.admin, args.dags, []);
    if (outTopic !== null && topics.includes(outTopic))
      throw new UserActionError(`--to-topic ${outTopic} is one of the topics replayed: give a topic of its own`);
    const win = await replayWindow(clients.kafka, clients.admin, cfg, topics, args.from, args.until, args.dags);
    const total = win.windows.reduce((n, w) => n + Number(w.end - w.start), 0);
    log.info(
      {
        replayId,
        topics,
        from: args.from.text,
        until: args.until?.text ?? "the end now",
        partitions: win.windows.length,
        offsets: total,
        probes: win.probes,
        searchMs: win.searchMs,
      },
      "replay: window found",
    );
    const dags = win.dags;
    const keep = (m: KafkaMessage) => dags === null || m.key === null || dags.has(m.key.toString("utf8"));
    const progress = new Progress(total, io.err, log);
    const copy = (sink: RecordSink, concurrency: number) =>
      readWindows(clients.kafka, cfg.kafka.clientId, win.windows, keep, sink, (o, r) => progress.add(o, r), concurrency);
    if (outTopic === null) await copy(stdoutSink(io.out), COPY_CONCURRENCY);
    else {
      const outPartitions = await ensureOutput(clients.admin, cfg, outTopic, win.partitions, log);
      const eos = deliveryMode(cfg).eos;
      // A transactional id of its own per output topic, never the daemon's (that would fence it): a
      // replay run again to the same topic fences a crashed one at once, which aborts its open transaction.
      const producer = replayProducer(clients.kafka, eos === null ? null : `${eos.transactionalId}.replay.${outTopic}`);
      await producer.connect();
      try {
        // One transaction at a time per producer: exactly-once copies one partition's batch after another.
        await copy(topicSink(producer, outTopic, replayId, outPartitions, eos !== null), eos === null ? COPY_CONCURRENCY : 1);
      } finally {
        await producer.disconnect().catch(() => undefined);
      }
    }
    const { records, ms } = progress.end();
    return { replayId, topics, windows: win.windows, records, ms };
  } finally {
    await disconnectClients(clients);
  }
}

/** The output topic's partition count; created with as many partitions as the largest source topic when missing. */
async function ensureOutput(admin: Admin, cfg: Config, topic: string, partitions: number, log: Logger): Promise<number> {
  if (!(await admin.listTopics()).includes(topic)) {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic, numPartitions: partitions, replicationFactor: cfg.topicReplicationFactor }],
    });
    log.info({ topic, partitions }, "replay: created the output topic");
  }
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  return meta.topics[0]?.partitions.length ?? partitions;
}
