import type { KafkaConfig } from "kafkajs";
import type { Logger } from "../log.js";
import type { StreamEvent } from "../airflow/events.js";
import type { PositionStore } from "./sequencer.js";

/** Where the consumer reads: the daemon's topics, as the daemon was configured. */
export interface ConsumerOptions {
  brokers: string[];
  ssl?: KafkaConfig["ssl"];
  sasl?: KafkaConfig["sasl"];
  clientId?: string;
  /** The consumer group: members share the partitions (so the DAGs); Kafka's offsets of it are only a hint. */
  groupId: string;
  /** EVENTSTREAM_TOPIC; with a template, still the topic of table_truncated events. Default "airflow.events". */
  topic?: string;
  /** EVENTSTREAM_TOPIC_TEMPLATE ("airflow.{dag_id}"): one topic per DAG; `dags` is then required. */
  topicTemplate?: string;
  /**
   * The DAGs this consumer handles; others' events are skipped. With it, where to start in each
   * partition is decided by the store's positions of the partition's DAGs (the store is the truth);
   * without it, by the group's committed offset, else `from`.
   */
  dags?: string[];
  /** EVENTSTREAM_STATE_TOPIC, read for a bootstrap. Default "airflow.state". */
  stateTopic?: string;
  /** Partitions (so DAGs) handled side by side; one DAG is never handled concurrently. Default 4. */
  concurrency?: number;
  /** Kafka's session timeout of the group; a dead member's partitions move after it. Default 30 s. */
  sessionTimeoutMs?: number;
  /** Default: JSON lines on stdout at info (the daemon's logger). */
  logger?: Logger;
}

/**
 * Where to start a DAG the store has no position for: a `source.position`
 * ("00000000016B3748-00000000"), an LSN ("0/16B3748"), a time (a Date, or ISO-8601 text), "state"
 * (bootstrap from the current-state topic, then its position on), "earliest" (all the topic holds)
 * or "latest" (only what comes next).
 */
export type StartFrom = string | Date;

export interface EventContext {
  /** The DAG, or null for an event about no single DAG (table_truncated; a 3.x delete the WAL did not name). */
  dagId: string | null;
  position: string;
  /** true: a current row from the state topic (the latest event of a task instance or DAG run), not an event of the topic. */
  bootstrap: boolean;
  topic: string;
  /** Where the record is in Kafka; null for bootstrap rows. */
  partition: number | null;
  offset: string | null;
}

export interface BootstrapInfo {
  /** Why: "requested" (from: "state") or "position-not-in-kafka" (the stored position is older than the event topic holds). */
  reason: "requested" | "position-not-in-kafka";
  dags: string[];
  /** The state's position: rows are as of it, and events after it follow. */
  position: string | null;
  rows: number;
  /** For "position-not-in-kafka": what the search said. */
  detail?: string;
}

export interface RunOptions {
  /** Used for a DAG the store has no position for. */
  from: StartFrom;
  positions: PositionStore;
  /** Per DAG in position order, never concurrently for one DAG; the position is saved once it resolves. A rejection stops the consumer. */
  handler: (event: StreamEvent, ctx: EventContext) => Promise<void>;
  /** Called before a bootstrap hands its rows over: a store of rows may want to start the DAGs afresh. */
  onBootstrap?: (info: BootstrapInfo) => Promise<void> | void;
}
