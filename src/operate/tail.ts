import type { Admin, Kafka } from "kafkajs";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import { findOffsets, parseTarget } from "../backfill/offsets.js";
import { sourceTopics } from "../backfill/window.js";
import { privateReader } from "../sink/reader.js";
import { withKafka } from "./kafka-facts.js";
import { eventJsonText } from "../sink/wire-format.js";

export interface TailOptions {
  /** Only these DAGs' events (null: all). */
  dags: string[] | null;
  /** beginning, end, or a position / LSN / ISO time (src/backfill/target.ts). */
  from: string;
  follow: boolean;
  json: boolean;
}

/** Without --follow, a read that gets nothing for this long has passed the end offsets taken at the start. */
const IDLE_END_MS = 2_000;

/**
 * `airflow-eventstream tail`: the event topics from a point, as lines a person reads (as the demo
 * prints them) or as the events' JSON, one a line. Without --follow it stops at the end offsets
 * taken when it started.
 */
export async function tailCommand(cfg: Config, log: Logger, opts: TailOptions): Promise<number> {
  // A bad --from is a usage error before anything connects.
  const target = opts.from === "beginning" || opts.from === "end" ? opts.from : parseTarget(opts.from);
  return withKafka(cfg, log, async (kafka, admin) => {
    const topics = await sourceTopics(cfg, admin, opts.dags, cfg.stateTopic === null ? [] : [cfg.stateTopic]);
    const starts = await startOffsets(kafka, admin, topics, target);
    // Said once the start offsets are taken: from here on, whatever is committed will be printed
    // (on stderr, so the events' lines on stdout stay clean for a pipe).
    if (opts.follow) process.stderr.write(`following ${starts.length} partition(s) of ${topics.join(", ")}; stop with Ctrl-C\n`);
    await read(cfg, kafka, starts, opts);
    return 0;
  });
}

interface PartitionRange {
  topic: string;
  partition: number;
  start: bigint;
  end: bigint;
}

async function startOffsets(
  kafka: Kafka,
  admin: Admin,
  topics: string[],
  target: "beginning" | "end" | ReturnType<typeof parseTarget>,
): Promise<PartitionRange[]> {
  const ranges: PartitionRange[] = [];
  const found = typeof target === "string" ? null : await findOffsets(kafka, admin, topics, target);
  for (const topic of topics) {
    for (const o of await admin.fetchTopicOffsets(topic)) {
      const end = BigInt(o.high);
      const start =
        target === "beginning"
          ? BigInt(o.low)
          : target === "end"
            ? end
            : (found?.get(topic)?.find((s) => s.partition === o.partition)?.offset ?? end);
      ranges.push({ topic, partition: o.partition, start, end });
    }
  }
  return ranges;
}

async function read(cfg: Config, kafka: Kafka, ranges: PartitionRange[], opts: TailOptions): Promise<void> {
  const pending = new Set<string>(ranges.filter((r) => r.start < r.end).map((r) => `${r.topic}/${r.partition}`));
  if (!opts.follow && pending.size === 0) return;
  const ends = new Map<string, bigint>(ranges.map((r) => [`${r.topic}/${r.partition}`, r.end] as const));
  const dags = opts.dags === null ? null : new Set(opts.dags);
  const { consumer, close } = privateReader(kafka, `${cfg.kafka.clientId}.tail`, () => undefined);
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [...new Set(ranges.map((r) => r.topic))], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      let idle: NodeJS.Timeout | undefined = opts.follow ? undefined : setTimeout(resolve, IDLE_END_MS * 5);
      void consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ topic, partition, message }) => {
            const id = `${topic}/${partition}`;
            const offset = BigInt(message.offset);
            if (!opts.follow) {
              if (offset >= (ends.get(id) ?? 0n)) return;
              clearTimeout(idle);
              idle = setTimeout(resolve, IDLE_END_MS);
            }
            const key = message.key?.toString() ?? null;
            if (message.value !== null && (dags === null || (key !== null && dags.has(key)))) {
              const value = eventJsonText(message.value);
              process.stdout.write(`${opts.json ? value : readable(key, value)}\n`);
            }
            if (!opts.follow && offset + 1n >= (ends.get(id) ?? 0n)) {
              pending.delete(id);
              if (pending.size === 0) {
                clearTimeout(idle);
                resolve();
              }
            }
          },
        })
        .catch(reject);
      for (const r of ranges) consumer.seek({ topic: r.topic, partition: r.partition, offset: r.start.toString() });
    });
  } finally {
    await close();
  }
}

/** One event as the demo prints it: key, op, what, previous -> new state, and its position. */
export function readable(key: string | null, value: string): string {
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(value) as Record<string, unknown>;
  } catch {
    return `key=${key ?? ""} (not JSON) ${value.slice(0, 200)}`;
  }
  const source = (e.source ?? {}) as { position?: string; commit_time?: string };
  const from = e.previous_state_known === false ? "?" : String(e.previous_state ?? "none");
  const what =
    e.type === "task_instance"
      ? `task ${String(e.task_id)}${e.map_index === -1 || e.map_index === undefined ? "" : `[${String(e.map_index)}]`} try ${String(e.try_number)}`
      : e.type === "dag_run"
        ? `dag run ${String(e.run_id ?? "")}`
        : String(e.type);
  return `${source.commit_time ?? ""}  key=${key ?? ""} ${String(e.op).padEnd(6)} ${what.padEnd(26)} ${from} -> ${String(e.state ?? "none")}   (${source.position ?? "?"})`;
}
