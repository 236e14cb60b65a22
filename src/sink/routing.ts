import { createHash } from "node:crypto";
import { Partitioners } from "kafkajs";
import type { StreamEvent } from "../airflow/events.js";
import { assertNever } from "../errors.js";

/** Kafka's topic-name rules: [a-zA-Z0-9._-], at most 249 characters, not "." or "..". */
const MAX_TOPIC = 249;
const ILLEGAL = /[^a-zA-Z0-9._-]/g;
/** Hex digits of SHA-256 appended to a name sanitising changed: 64 bits, so distinct DAGs never meet by chance. */
const HASH_CHARS = 16;

/** Where one event goes, and with which Kafka key. */
export interface Route {
  topic: string;
  /** The partitioning key: dag_id, so one DAG's events stay in one partition, in order. */
  key: string | null;
  /**
   * One copy to every partition of the topic: for events about all DAGs at once (a table
   * truncated), which every consumer of any partition must see in order with its DAGs' events.
   */
  allPartitions: boolean;
}

/**
 * Where an event goes: the one place that decides topic and key. One topic for everything by
 * default; with a template ("airflow.{dag_id}") one topic per DAG. Airflow accepts dag_ids that
 * Kafka does not (any Unicode letter, e.g. "données"), and sanitising maps distinct ones to one
 * name ("donn_es" for "données" and "donnàes"); so a name sanitising changed, or cut to Kafka's
 * limit, ends in a hash of the unsanitised name (see sanitizeTopic), which keeps distinct DAGs in
 * distinct topics.
 */
export class TopicRouter {
  private readonly cache = new Map<string, string>();

  constructor(
    private readonly topic: string,
    private readonly template: string | null,
    /** EVENTSTREAM_ASSET_TOPIC (null: asset events are off, and none arrive). */
    private readonly assetTopic: string | null = null,
  ) {}

  route(event: StreamEvent): Route {
    switch (event.type) {
      case "task_instance":
      case "dag_run":
      case "notification":
        return { topic: this.topicFor(event.dag_id), key: event.dag_id, allPartitions: false };
      case "asset_event":
        // About an asset, not a DAG: its own topic, keyed by URI so one asset's events keep their order.
        return { topic: this.assetTopic ?? this.topic, key: event.asset.uri, allPartitions: false };
      case "table_truncated":
      case "stream_gap":
        // Concerns every DAG: no per-DAG topic or key fits, so the single topic, every partition.
        return { topic: this.topic, key: null, allPartitions: true };
      default:
        return assertNever(event);
    }
  }

  topicFor(dagId: string | null): string {
    if (this.template === null || dagId === null) return this.topic;
    let t = this.cache.get(dagId);
    if (t === undefined) {
      t = sanitizeTopic(this.template.replaceAll("{dag_id}", dagId));
      this.cache.set(dagId, t);
    }
    return t;
  }
}

/**
 * A Kafka-legal topic name for `name`: unchanged when it is legal already; otherwise illegal
 * characters become "_", the result is cut to leave room, and "-" plus 16 hex digits of SHA-256 of
 * `name` (UTF-8) are appended, so two names that sanitise alike stay apart.
 */
export function sanitizeTopic(name: string): string {
  const t = name.replace(ILLEGAL, "_");
  if (t === name && t.length <= MAX_TOPIC && t !== "." && t !== "..") return t;
  const hash = createHash("sha256").update(name, "utf8").digest("hex").slice(0, HASH_CHARS);
  return `${t.slice(0, MAX_TOPIC - HASH_CHARS - 1)}-${hash}`;
}

/**
 * The partition the daemon's producer puts a key in, for a topic of `count` partitions: kafkajs's
 * default partitioner, asked with metadata of that many partitions (it only looks at the count).
 */
export function dagPartitioner(count: number): (key: string) => number {
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: count }, (_, i) => ({
    partitionId: i,
    leader: 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }));
  return (key) => partitioner({ topic: "", partitionMetadata, message: { key, value: null } });
}
