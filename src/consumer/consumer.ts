import { Kafka, Partitioners, logLevel, type Admin, type LogEntry, type PartitionMetadata } from "kafkajs";
import { ConfigError } from "../errors.js";
import { createLogger, type Logger } from "../log.js";
import { TopicRouter } from "../sink/routing.js";
import { Session } from "./session.js";
import { startTarget } from "./start.js";
import type { ConsumerOptions, RunOptions } from "./types.js";

export { partitionScope } from "./session.js";

/** How often topics that do not exist yet are looked for. */
const TOPIC_WATCH_MS = 5_000;

/**
 * Reads the daemon's event topic(s) for a set of DAGs, in a consumer group, and hands each event to
 * the user's handler: per DAG in position order, one at a time, dropping re-deliveries (positions
 * not above the last one the user's store holds for the DAG), and saving the position once the
 * handler resolved. See docs/backfill.md#consumer-helper.
 */
export class EventConsumer {
  private readonly kafka: Kafka;
  private readonly router: TopicRouter;
  private readonly topic: string;
  private readonly log: Logger;
  private readonly dags: Set<string> | null;
  private readonly partitionCounts = new Map<string, number>();
  private readonly partitioner = Partitioners.DefaultPartitioner();
  private stopping: (() => void) | undefined;
  private stopRequested = false;
  private running: Promise<void> | undefined;
  /** Since construction, over every run(): events handed to the handler, re-deliveries dropped, bootstrap rows handed. */
  readonly stats = { delivered: 0, duplicates: 0, bootstrapRows: 0 };

  constructor(private readonly o: ConsumerOptions) {
    if (o.topicTemplate !== undefined && (o.dags === undefined || o.dags.length === 0))
      throw new ConfigError("eventConsumer: with topicTemplate (one topic per DAG), list the DAGs to read in `dags`");
    this.topic = o.topic ?? "airflow.events";
    this.router = new TopicRouter(this.topic, o.topicTemplate ?? null);
    this.dags = o.dags === undefined ? null : new Set(o.dags);
    this.log = (o.logger ?? createLogger("info")).child({ component: "event-consumer", group: o.groupId });
    this.kafka = new Kafka({
      brokers: o.brokers,
      clientId: o.clientId ?? "airflow-eventstream-consumer",
      ...(o.ssl !== undefined ? { ssl: o.ssl } : {}),
      ...(o.sasl !== undefined ? { sasl: o.sasl } : {}),
      logLevel: logLevel.WARN,
      logCreator: () => (entry: LogEntry) => {
        const { message, ...fields } = entry.log;
        if (entry.level <= logLevel.ERROR) this.log.error({ namespace: entry.namespace, ...fields }, message);
        else this.log.warn({ namespace: entry.namespace, ...fields }, message);
      },
    });
  }

  /** The topics read: the one topic, or each listed DAG's topic and the shared one (table_truncated). */
  topics(): string[] {
    if (this.o.topicTemplate === undefined) return [this.topic];
    return [...new Set([this.topic, ...[...this.dags!].map((d) => this.router.topicFor(d))])];
  }

  /** Consumes until stop(); rejects when the handler, the store or Kafka fails (the position stays where it was saved). */
  run(r: RunOptions): Promise<void> {
    if (this.running) return Promise.reject(new Error("eventConsumer: run() is already running; stop() it first"));
    const running = this.consumeUntilStopped(r).finally(() => {
      this.running = undefined;
      this.stopRequested = false;
    });
    this.running = running;
    return running;
  }

  private async consumeUntilStopped(r: RunOptions): Promise<void> {
    if (typeof r.from !== "string" || !["state", "earliest", "latest"].includes(r.from)) startTarget(r.from);
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      // The daemon makes a DAG's topic with its first event, and the shared topic of a layout with
      // a topic per DAG with its first table_truncated: the topics that exist are read, and when a
      // missing one appears the group is joined again with it (the store says where to go on).
      while (!this.stopRequested) {
        const existing = new Set(await admin.listTopics());
        const topics = this.topics().filter((t) => existing.has(t));
        const missing = this.topics().filter((t) => !existing.has(t));
        if (missing.length > 0) this.log.info({ missing }, "topics that do not exist yet are read once they appear");
        const appeared = async () => (await admin.listTopics()).some((t) => missing.includes(t));
        if (!(await this.session(r, admin, topics, appeared))) return;
      }
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  /** One group membership over `topics`; resolves true when a topic waited for appeared (join again), false when stopped. */
  private async session(r: RunOptions, admin: Admin, topics: string[], appeared: () => Promise<boolean>): Promise<boolean> {
    let rejoin = false;
    const consumer = this.kafka.consumer({
      groupId: this.o.groupId,
      sessionTimeout: this.o.sessionTimeoutMs ?? 30_000,
      heartbeatInterval: Math.min(3_000, Math.floor((this.o.sessionTimeoutMs ?? 30_000) / 10)),
      allowAutoTopicCreation: false,
      readUncommitted: false,
      maxWaitTimeInMs: 200,
    });
    const session = new Session(this, admin, consumer, r, this.log);
    let stopSession: () => void = () => undefined;
    const watch = setInterval(() => {
      void appeared().then(
        (yes) => {
          if (!yes) return;
          rejoin = true;
          stopSession();
        },
        () => undefined,
      );
    }, TOPIC_WATCH_MS);
    try {
      if (topics.length > 0) {
        await consumer.connect();
        await consumer.subscribe({ topics, fromBeginning: true });
      }
      await session.consume(topics.length > 0, (stop) => {
        stopSession = stop;
        this.stopping = stop;
        if (this.stopRequested) stop();
      });
    } finally {
      clearInterval(watch);
      this.stopping = undefined;
      await session.flushHint();
      await consumer.disconnect().catch(() => undefined);
    }
    return rejoin && !this.stopRequested;
  }

  /** Ends run() once the handler calls in progress are done; resolves when run() has ended (whether it failed or not). */
  async stop(): Promise<void> {
    this.stopRequested = true;
    this.stopping?.();
    await this.running?.catch(() => undefined);
  }

  /** @internal */
  wants(dagId: string | null): boolean {
    return dagId === null || this.dags === null || this.dags.has(dagId);
  }

  /** @internal The listed DAGs whose events the daemon routes to this topic and partition; null when none are listed. */
  async dagsIn(admin: Admin, topic: string, partition: number): Promise<string[] | null> {
    if (this.dags === null) return null;
    const routes = await this.routing(admin, topic, partition);
    return [...this.dags].filter(routes);
  }

  /** @internal Whether the daemon routes a DAG's events to this topic and partition. */
  async routing(admin: Admin, topic: string, partition: number): Promise<(dagId: string) => boolean> {
    let n = this.partitionCounts.get(topic);
    if (n === undefined) {
      const meta = await admin.fetchTopicMetadata({ topics: [topic] });
      n = meta.topics[0]?.partitions.length ?? 0;
      this.partitionCounts.set(topic, n);
    }
    const partitionMetadata = Array.from({ length: n }, (_, i) => ({ partitionId: i, leader: 0 }) as PartitionMetadata);
    // The daemon's producer places a DAG's events by kafkajs's default partitioner of its key.
    return (d) =>
      this.router.topicFor(d) === topic && this.partitioner({ topic, partitionMetadata, message: { key: d, value: null } }) === partition;
  }

  /** @internal */
  get stateTopic(): string {
    return this.o.stateTopic ?? "airflow.state";
  }

  /** @internal */
  get kafkaClient(): Kafka {
    return this.kafka;
  }

  /** @internal */
  get groupId(): string {
    return this.o.groupId;
  }

  /** @internal */
  get concurrency(): number {
    return this.o.concurrency ?? 4;
  }
}

/** A consumer of the daemon's events for a set of DAGs: see EventConsumer. */
export function eventConsumer(options: ConsumerOptions): EventConsumer {
  return new EventConsumer(options);
}
