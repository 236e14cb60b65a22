import type { ValueFraming } from "./schema-registry.js";
import type { Config } from "../config.js";
import type { Checkpoint, SourceIdentity } from "../checkpoint/position.js";
import type { Lsn } from "../lsn.js";
import type { Logger } from "../log.js";
import { CheckpointStore } from "./checkpoint-store.js";
import { connectClients, createClients, disconnectClients, type KafkaClients } from "./client.js";
import { deliveryMode } from "./delivery.js";
import { explain } from "./kafka-errors.js";
import { Publisher, type SinkCallbacks, type SinkRecord } from "./publisher.js";
import { readBack, type ReadBackResult } from "./read-back.js";
import { TopicRouter } from "./routing.js";
import { TopicAdmin } from "./topics.js";

export { transactionalIdFor } from "./delivery.js";
export type { SinkCallbacks, SinkRecord } from "./publisher.js";

/** Longest wait for the event topics' tails to be read back (as for the checkpoint topic). */
const READ_BACK_TIMEOUT_MS = 120_000;

/**
 * The Kafka side of a session, as the pipeline uses it: one kafkajs client (client.ts) shared by
 * the topic admin (topics.ts), this slot's checkpoint store (checkpoint-store.ts, absent in
 * at-least-once without gap detection) and the publisher (publisher.ts, which says what Kafka
 * acknowledged through the callbacks). Errors are translated in kafka-errors.ts.
 */
export class KafkaSink {
  private readonly clients: KafkaClients;
  private readonly topics: TopicAdmin;
  private readonly store: CheckpointStore | null;
  private readonly publisher: Publisher;
  /** Consumers opened to read the topics back at start: closed with the sink. */
  private readonly closers: (() => Promise<void>)[] = [];

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    callbacks: SinkCallbacks,
    /** EVENTSTREAM_SCHEMA_REGISTRY_URL's framing, registered at the daemon's start; null: plain JSON. */
    framing: ValueFraming | null = null,
  ) {
    this.clients = createClients(cfg, log);
    this.topics = new TopicAdmin(this.clients.admin, cfg, log);
    const track = (close: () => Promise<void>): void => {
      this.closers.push(close);
    };
    this.store = deliveryMode(cfg).ckpt
      ? new CheckpointStore(cfg, log, this.clients.kafka, this.clients.producer, this.topics, track)
      : null;
    this.publisher = new Publisher(cfg, this.clients.producer, this.topics, this.store, callbacks, framing);
  }

  /**
   * Connects, and makes sure the single topic, the checkpoint topic and the current-state topic
   * exist (per-DAG topics are ensured on first use).
   */
  async connect(fixedTopic: string | null): Promise<void> {
    await connectClients(this.cfg, this.clients);
    if (fixedTopic !== null) await this.topics.ensureTopics([fixedTopic]);
    if (this.cfg.assetTopic !== null) await this.topics.ensureTopics([this.cfg.assetTopic]);
    if (this.store) await this.topics.ensureCheckpointTopic(this.store.topic);
    if (this.cfg.stateTopic !== null) await this.topics.ensureStateTopic(this.cfg.stateTopic);
  }

  /** See CheckpointStore.read. Must precede every send. */
  async readCheckpoint(source: SourceIdentity): Promise<Checkpoint | null> {
    if (!this.store) throw new Error("readCheckpoint() needs a checkpoint topic (exactly-once, or EVENTSTREAM_GAP_DETECTION)");
    return this.store.read(source);
  }

  /**
   * Reads back the last `perPartition` records of every partition of the event topics this slot
   * publishes to (see read-back.ts): the single topic (with EVENTSTREAM_TOPIC_TEMPLATE, for events
   * without a dag_id), the topics of `dagIds` (with a template), and the dead-letter topic; those
   * that exist. Must precede every send.
   */
  async readBack(
    perPartition: number,
    dagIds: readonly string[],
    onEvent: (value: Record<string, unknown>) => void,
  ): Promise<ReadBackResult> {
    const { cfg } = this;
    const existing = new Set(await this.topics.list());
    const topics = new Set<string>();
    if (cfg.topicTemplate !== null) {
      const router = new TopicRouter(cfg.topic, cfg.topicTemplate, cfg.assetTopic);
      for (const d of dagIds) {
        const t = router.topicFor(d);
        if (existing.has(t)) topics.add(t);
      }
    }
    // The asset topic too: at-least-once's replay filter skips asset events Kafka holds already, like the others.
    for (const t of [cfg.topic, cfg.deadLetterTopic, cfg.assetTopic]) if (t !== null && existing.has(t)) topics.add(t);
    if (this.store) topics.delete(this.store.topic);
    try {
      return await readBack(this.clients.kafka, this.clients.admin, {
        topics: [...topics],
        perPartition,
        clientId: cfg.kafka.clientId,
        timeoutMs: READ_BACK_TIMEOUT_MS,
        log: this.log,
        track: (close) => this.closers.push(close),
        onEvent,
      });
    } catch (e: unknown) {
      throw explain(cfg, e, "reading back the event topics");
    }
  }

  /** Snapshot progress carried by the checkpoint records (CheckpointStore.snapshotProgress); none without a checkpoint topic. */
  get snapshotProgress(): unknown {
    return this.store?.snapshotProgress ?? null;
  }

  set snapshotProgress(v: unknown) {
    if (this.store) this.store.snapshotProgress = v;
  }

  /** Asks for a checkpoint in the next produce request (or alone, when idle). */
  requestCheckpoint(): void {
    this.publisher.requestCheckpoint();
  }

  /** A checkpoint is asked for or on its way: asking again would add nothing. */
  get checkpointPending(): boolean {
    return this.publisher.checkpointPending;
  }

  /** See Publisher.checkpointNow. */
  checkpointNow(): Promise<Lsn | null> {
    return this.publisher.checkpointNow();
  }

  /** Queues a record. Never blocks: the ack rule pauses PostgreSQL when `inflightBytes` is too high (AckRule.pauseIfFull). */
  push(rec: SinkRecord): void {
    this.publisher.push(rec);
  }

  /** Bytes of records not yet acknowledged by Kafka (those queued and those in the request). */
  get inflightBytes(): number {
    return this.publisher.inflightBytes;
  }

  /** Resolves when every pushed record is acknowledged (or the sink stopped). */
  idle(): Promise<void> {
    return this.publisher.idle();
  }

  async close(): Promise<void> {
    this.publisher.stop();
    for (const close of this.closers.splice(0)) await close();
    await disconnectClients(this.clients);
  }
}
