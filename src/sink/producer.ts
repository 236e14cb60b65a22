import type { Producer as KafkajsProducer } from "kafkajs";
import {
  Producer as PlatformaticProducer,
  ProduceAcks,
  murmur2,
  stringSerializers,
  type Partitioner,
  type ProducerOptions,
  type SASLMechanismValue,
} from "@platformatic/kafka";
import type { Config } from "../config.js";
import { deliveryMode } from "./delivery.js";

/**
 * What the publisher (publisher.ts) and the checkpoint store (checkpoint-store.ts) use of a Kafka
 * producer, shaped as the subset of kafkajs's Producer they call: kafkajs's producer is one
 * as it is, and a second client only has to provide this. Every send is acks=all on an idempotent
 * producer; the key picks the partition as Java's (and kafkajs's) default partitioner does, so a
 * DAG keeps its partition whichever client wrote it.
 */
export interface SinkMessage {
  key?: string | null;
  /** null: a tombstone. */
  value: string | null;
  /** Set: this partition, whatever the key. */
  partition?: number;
}

export interface SinkTopicMessages {
  topic: string;
  messages: SinkMessage[];
}

export interface SinkBatch {
  topicMessages: SinkTopicMessages[];
  acks?: -1;
}

export interface SinkTransaction {
  sendBatch(batch: SinkBatch): Promise<unknown>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

export interface SinkProducer {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  /** One produce request per broker, idempotent, acks=all. */
  sendBatch(batch: SinkBatch): Promise<unknown>;
  /**
   * Begins a transaction (transactional producers only). The first call fences any older producer
   * of the same transactional id, and aborts what it left open, before it resolves.
   */
  transaction(): Promise<SinkTransaction>;
}

/** kafkajs's producer as src/sink/client.ts builds it: already a SinkProducer. */
export function kafkajsSinkProducer(producer: KafkajsProducer): SinkProducer {
  return producer;
}

/**
 * Java's default partitioner for keyed records (murmur2, sign bit cleared; the client applies the
 * modulo), round robin for the others. The hash of the key string, cached: the library's murmur2
 * computes in BigInt, and the keys are a few hundred dag ids.
 */
function javaCompatiblePartitioner(): Partitioner<string, string, string, string> {
  let next = Math.floor(Math.random() * 0x7fffffff);
  return (message, key) => {
    if (typeof message.key === "string") return murmur2(message.key, true) & 0x7fffffff;
    return key !== undefined ? murmur2(key) & 0x7fffffff : next++ & 0x7fffffff;
  };
}

const SASL: Record<NonNullable<Config["kafka"]["sasl"]>["mechanism"], SASLMechanismValue> = {
  plain: "PLAIN",
  "scram-sha-256": "SCRAM-SHA-256",
  "scram-sha-512": "SCRAM-SHA-512",
};

/**
 * Retry delay: CONCURRENT_TRANSACTIONS (a transaction begun while the coordinator still writes the
 * previous one's markers) clears within milliseconds, so the first retries are short; ~1 min in all,
 * as kafkajs's bounded retries in client.ts, after which the session restarts from the slot.
 */
function retryDelay(_client: object, _operation: string, attempt: number): number {
  return Math.min(5 * 2 ** attempt, 10_000);
}

/** @platformatic/kafka's options for the daemon's producer, from the daemon's settings. */
export function platformaticOptions(cfg: Config): ProducerOptions<string, string, string, string> {
  const { ssl, sasl } = cfg.kafka;
  const { eos } = deliveryMode(cfg);
  return {
    clientId: cfg.kafka.clientId,
    bootstrapBrokers: cfg.kafka.brokers,
    connectTimeout: 5_000,
    requestTimeout: 30_000,
    timeout: 30_000,
    retries: 17,
    retryDelay,
    idempotent: true,
    acks: ProduceAcks.ALL,
    autocreateTopics: false,
    // One request at a time, as the publisher sends: a failed request is then never overtaken by a later one.
    maxInflights: 1,
    partitioner: javaCompatiblePartitioner(),
    serializers: stringSerializers,
    ...(ssl ? { tls: ssl.ca ? { ca: [ssl.ca.pem], rejectUnauthorized: true } : { rejectUnauthorized: true } } : {}),
    ...(sasl ? { sasl: { mechanism: SASL[sasl.mechanism], username: sasl.username, password: sasl.password } } : {}),
    ...(eos ? { transactionalId: eos.transactionalId } : {}),
  };
}

type Flat = { topic: string; key?: string; value: string; partition?: number };

/**
 * The batch as @platformatic/kafka's flat message list. A null key or value is sent as a null (its
 * string serialiser turns anything but a string into no bytes); `value` must be present, even null.
 */
function flatten(batch: SinkBatch): Flat[] {
  const out: Flat[] = [];
  for (const { topic, messages } of batch.topicMessages) {
    for (const m of messages) {
      const msg: Flat = { topic, value: m.value as string };
      if (m.key !== null && m.key !== undefined) msg.key = m.key;
      if (m.partition !== undefined) msg.partition = m.partition;
      out.push(msg);
    }
  }
  return out;
}

/** The daemon's producer on @platformatic/kafka. */
export class PlatformaticSinkProducer implements SinkProducer {
  private readonly producer: PlatformaticProducer<string, string, string, string>;
  private readonly transactional: boolean;

  constructor(options: ProducerOptions<string, string, string, string>) {
    this.producer = new PlatformaticProducer(options);
    this.transactional = options.transactionalId !== undefined;
  }

  /** An idempotent producer gets its producer id here; a transactional one at its first transaction() (that is what fences). */
  async connect(): Promise<void> {
    if (!this.transactional) await this.producer.initIdempotentProducer({});
  }

  async disconnect(): Promise<void> {
    await this.producer.close();
  }

  async sendBatch(batch: SinkBatch): Promise<unknown> {
    return this.producer.send({ messages: flatten(batch) });
  }

  async transaction(): Promise<SinkTransaction> {
    if (!this.transactional) throw new Error("transaction() on a producer without a transactional id");
    const tx = await this.producer.beginTransaction();
    return {
      sendBatch: (batch) => tx.send({ messages: flatten(batch) }),
      commit: () => tx.commit(),
      abort: () => tx.abort(),
    };
  }
}
