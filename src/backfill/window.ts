import type { Admin, Kafka } from "kafkajs";
import type { Config } from "../config.js";
import { TopicError } from "../errors.js";
import { TopicRouter, dagPartitioner } from "../sink/routing.js";
import { findOffsets } from "./offsets.js";
import type { Target } from "./target.js";

/** One partition's part of a replay: offsets [start, end) of a source topic. */
export interface PartitionWindow {
  topic: string;
  partition: number;
  start: bigint;
  end: bigint;
}

/** What a replay reads: the windows, and which records of them it copies. */
export interface ReplayWindow {
  windows: PartitionWindow[];
  /** The source topics' largest partition count: an output topic created for the replay gets as many. */
  partitions: number;
  /** The dag_ids to keep (null: all). Records without a key (table_truncated, about every DAG) are always kept. */
  dags: Set<string> | null;
  /** Records the searches read (one per probe), and how long they took. */
  probes: number;
  searchMs: number;
}

/**
 * The topics events of `dags` (all DAGs: null) are in. One topic: EVENTSTREAM_TOPIC. Topic per DAG:
 * the DAGs' topics (named as the daemon names them, src/sink/routing.ts), or every existing topic the
 * template matches; plus EVENTSTREAM_TOPIC in both cases, where the events about every DAG go
 * (table_truncated). Topics that do not exist are left out: a DAG with no event has no topic.
 */
export async function sourceTopics(cfg: Config, admin: Admin, dags: string[] | null, exclude: string[]): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const skip = new Set([...exclude, cfg.checkpointTopic, ...(cfg.deadLetterTopic === null ? [] : [cfg.deadLetterTopic])]);
  const wanted = new Set<string>([cfg.topic]);
  if (cfg.topicTemplate !== null) {
    if (dags !== null) {
      const router = new TopicRouter(cfg.topic, cfg.topicTemplate, cfg.assetTopic);
      for (const d of dags) wanted.add(router.topicFor(d));
    } else {
      const pattern = templatePattern(cfg.topicTemplate);
      for (const t of existing) if (pattern.test(t)) wanted.add(t);
    }
  }
  const topics = [...wanted].filter((t) => existing.has(t) && !skip.has(t)).sort();
  if (topics.length === 0)
    throw new TopicError(
      `no event topic to replay: ${[...wanted].join(", ")} ${wanted.size === 1 ? "does" : "do"} not exist in Kafka. Check EVENTSTREAM_TOPIC, EVENTSTREAM_TOPIC_TEMPLATE and --dag`,
    );
  return topics;
}

/**
 * Every name the template can give: the parts around {dag_id} as they are, anything in between. A
 * name that sanitising changed or cut ends in "-" and 16 hex digits (sanitizeTopic), after or in
 * place of the template's last part.
 */
export function templatePattern(template: string): RegExp {
  const parts = template.split("{dag_id}").map((p) => p.replace(/[^a-zA-Z0-9._-]/g, "_").replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const last = parts.pop()!;
  return new RegExp(`^${parts.join(".+")}.+(?:${last}|-[0-9a-f]{16})$`);
}

/**
 * The windows of a replay: per partition, from the first offset at or after `from` to the first at or
 * after `until` (or the end offsets read now, when `until` is null), so the window never grows while it
 * is copied. With --dag in the one-topic layout only the DAGs' partitions are read: the daemon's
 * partitioner (kafkajs's default: murmur2 of the key, as Kafka's Java client) put each there.
 */
export async function replayWindow(
  kafka: Kafka,
  admin: Admin,
  cfg: Config,
  topics: string[],
  from: Target,
  until: Target | null,
  dags: string[] | null,
): Promise<ReplayWindow> {
  const t0 = Date.now();
  const starts = await findOffsets(kafka, admin, topics, from, cfg.kafka.clientId);
  const ends = until === null ? null : await findOffsets(kafka, admin, topics, until, cfg.kafka.clientId);
  const searchMs = Date.now() - t0;
  const probes = [...starts.values(), ...(ends?.values() ?? [])].flat().reduce((n, s) => n + s.probes, 0);
  const windows: PartitionWindow[] = [];
  let partitions = 1;
  for (const topic of topics) {
    const first = starts.get(topic) ?? [];
    partitions = Math.max(partitions, first.length);
    const high = ends === null ? new Map((await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, BigInt(o.high)])) : null;
    const keep = dags !== null && cfg.topicTemplate === null && topic === cfg.topic ? partitionsOf(dags, first.length) : null;
    for (const s of first) {
      if (keep !== null && !keep.has(s.partition)) continue;
      const end = high?.get(s.partition) ?? ends?.get(topic)?.find((e) => e.partition === s.partition)?.offset ?? s.end;
      if (end > s.offset) windows.push({ topic, partition: s.partition, start: s.offset, end });
    }
  }
  return { windows, partitions, dags: dags === null ? null : new Set(dags), probes, searchMs };
}

/** The partitions the daemon's producer puts these keys in, for a topic of `count` partitions. */
export function partitionsOf(keys: string[], count: number): Set<number> {
  return new Set(keys.map(dagPartitioner(count)));
}
