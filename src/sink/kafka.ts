import { readFileSync } from "node:fs";
import { Kafka, Partitioners, logLevel, type Admin, type Producer, type TopicMessages, type Message, type LogEntry, type SASLOptions } from "kafkajs";
import type { Config } from "../config.js";
import { TopicError, TransientError, UserActionError } from "../errors.js";
import type { Logger } from "../log.js";

/** One event ready for Kafka, with the sequence number the checkpoint tracker gave it. */
export interface SinkRecord {
  topic: string;
  key: string | null;
  value: string;
  seq: number;
}

export interface SinkCallbacks {
  /** Kafka acknowledged every record up to and including `seq`. */
  acked(seq: number): void;
  /** A batch failed after the client's own retries: the pipeline must stop and resume from the slot. */
  failed(e: Error): void;
}

/**
 * The Kafka publisher. Records are sent in the order they were pushed, one produce request at a
 * time: while a request is in flight, new records gather into the next batch. That gives large
 * batches under load and an immediate send when idle, with no linger timer and no await per event.
 *
 * The producer is idempotent (acks=all, one request in flight), so a retried request cannot
 * reorder or duplicate within a partition; keys are dag_ids, so each DAG's events keep their order.
 */
export class KafkaSink {
  private readonly kafka: Kafka;
  private producer: Producer | null = null;
  private admin: Admin | null = null;
  private readonly queue: SinkRecord[] = [];
  private head = 0;
  private sending = false;
  private stopped = false;
  private queuedBytes = 0;
  private readonly knownTopics = new Set<string>();
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly callbacks: SinkCallbacks,
  ) {
    const klog = log.child({ component: "kafkajs" });
    const { ssl, sasl } = cfg.kafka;
    this.kafka = new Kafka({
      clientId: cfg.kafka.clientId,
      brokers: cfg.kafka.brokers,
      ...(ssl ? { ssl: ssl.ca ? { ca: [readFileSync(ssl.ca, "utf8")], rejectUnauthorized: true } : true } : {}),
      // A union of one object per mechanism; all three used here take a user name and password.
      ...(sasl ? { sasl: sasl as SASLOptions } : {}),
      connectionTimeout: 5_000,
      requestTimeout: 30_000,
      logLevel: logLevel.WARN,
      logCreator: () => (entry: LogEntry) => {
        // kafkajs's own messages, as structured fields; its log objects carry no credentials.
        const { message, ...rest } = entry.log;
        // Retries are bounded on purpose (see connect()); kafkajs warns about that on every start.
        if (message.startsWith("Limiting retries for the idempotent producer")) return;
        const fields = { namespace: entry.namespace, ...rest };
        if (entry.level <= logLevel.ERROR) klog.error(fields, message);
        else klog.warn(fields, message);
      },
      retry: { initialRetryTime: 300, maxRetryTime: 10_000, retries: 8 },
    });
  }

  /** Connects, and makes sure the single topic exists (per-DAG topics are ensured on first use). */
  async connect(fixedTopic: string | null): Promise<void> {
    try {
      this.admin = this.kafka.admin();
      await this.admin.connect();
      this.producer = this.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        createPartitioner: Partitioners.DefaultPartitioner,
        allowAutoTopicCreation: false,
        // Bounded, unlike kafkajs's idempotent default (infinite): after ~1 min of failures the
        // pipeline restarts from the slot instead, saying so in the logs.
        retry: { initialRetryTime: 300, maxRetryTime: 10_000, retries: 8 },
      });
      await this.producer.connect();
    } catch (e: unknown) {
      throw new TransientError(`Kafka at ${this.cfg.kafka.brokers.join(",")} is unreachable (${(e as Error).message}); retrying`, { cause: e });
    }
    if (fixedTopic !== null) await this.ensureTopics([fixedTopic]);
  }

  /** Queues a record. Never blocks: the pipeline pauses PostgreSQL when `inflightBytes` is too high. */
  push(rec: SinkRecord): void {
    this.queue.push(rec);
    this.queuedBytes += rec.value.length + (rec.key?.length ?? 0);
    if (!this.sending) this.pump();
  }

  /** Bytes of records not yet acknowledged by Kafka (those queued and those in the request). */
  get inflightBytes(): number {
    return this.queuedBytes;
  }

  /** Resolves when every pushed record is acknowledged (or the sink stopped). */
  idle(): Promise<void> {
    if (!this.sending && this.head >= this.queue.length) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.wakeIdle();
    await this.producer?.disconnect().catch(() => undefined);
    await this.admin?.disconnect().catch(() => undefined);
  }

  private pump(): void {
    if (this.sending || this.stopped) return;
    if (this.head >= this.queue.length) {
      this.wakeIdle();
      return;
    }
    this.sending = true;
    const end = Math.min(this.queue.length, this.head + this.cfg.batchMaxEvents);
    const batch = this.queue.slice(this.head, end);
    this.head = end;
    if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    this.send(batch).then(
      () => {
        let bytes = 0;
        for (const r of batch) bytes += r.value.length + (r.key?.length ?? 0);
        this.queuedBytes -= bytes;
        this.sending = false;
        this.callbacks.acked(batch[batch.length - 1]!.seq);
        this.pump();
      },
      (e: unknown) => {
        this.sending = false;
        this.stopped = true;
        this.wakeIdle();
        this.callbacks.failed(
          e instanceof UserActionError
            ? e
            : new TransientError(`publishing ${batch.length} events to Kafka failed (${(e as Error).message}); resuming from the last acknowledged position`, { cause: e }),
        );
      },
    );
  }

  private async send(batch: SinkRecord[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const r of batch) {
      let msgs = byTopic.get(r.topic);
      if (!msgs) byTopic.set(r.topic, (msgs = []));
      msgs.push({ key: r.key, value: r.value });
    }
    const missing = [...byTopic.keys()].filter((t) => !this.knownTopics.has(t));
    if (missing.length > 0) await this.ensureTopics(missing);
    const topicMessages: TopicMessages[] = [];
    for (const [topic, messages] of byTopic) topicMessages.push({ topic, messages });
    await this.producer!.sendBatch({ topicMessages, acks: -1 });
  }

  private async ensureTopics(topics: string[]): Promise<void> {
    const admin = this.admin!;
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length > 0) {
      if (!this.cfg.createTopics) {
        throw new TopicError(
          `Kafka topic(s) ${missing.join(", ")} do not exist and EVENTSTREAM_CREATE_TOPICS is false: create them (e.g. kafka-topics.sh --create --topic ${missing[0]} --partitions ${this.cfg.topicPartitions}) or set EVENTSTREAM_CREATE_TOPICS=true`,
        );
      }
      await admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((topic) => ({
          topic,
          numPartitions: this.cfg.topicPartitions,
          replicationFactor: this.cfg.topicReplicationFactor,
        })),
      });
      this.log.info({ topics: missing, partitions: this.cfg.topicPartitions }, "created Kafka topics");
    }
    for (const t of topics) this.knownTopics.add(t);
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const fn of w) fn();
  }
}
