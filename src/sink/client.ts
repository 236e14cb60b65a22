import { isIP } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import { Kafka, logLevel, type Admin, type Producer, type TopicMessages, type LogEntry, type SASLOptions } from "kafkajs";
import type { Config } from "../config.js";
import { TlsError, TransientError, tlsFailure, type TlsFailure } from "../errors.js";
import type { Logger } from "../log.js";
import { deliveryMode } from "./delivery.js";
import { problemKey, problems } from "../problems.js";
import { explainTls, userAction } from "./kafka-errors.js";
import { FastDefaultPartitioner } from "./partitioner.js";
import { WireProducer } from "./wire/producer.js";

/**
 * kafkajs's retries for the client and the producer. Bounded, unlike kafkajs's idempotent default
 * (infinite): after ~1 min of failures the pipeline restarts from the slot instead, saying so in
 * the logs.
 */
const BOUNDED_RETRY = { initialRetryTime: 300, maxRetryTime: 10_000, retries: 8 } as const;

/**
 * What the publisher and the checkpoint store need of a producer: sendBatch, and in exactly-once
 * kafkajs's transaction() (the wire producer has none: it serves at-least-once only).
 */
export interface SessionProducer {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  sendBatch(batch: { topicMessages: TopicMessages[]; acks?: number }): Promise<unknown>;
  transaction?: Producer["transaction"];
}

/** The kafkajs client of a session, with its admin and its one producer (none connected yet). */
export interface KafkaClients {
  kafka: Kafka;
  admin: Admin;
  /** kafkajs's, or the wire producer (EVENTSTREAM_KAFKA_PRODUCER=wire, at-least-once). */
  producer: SessionProducer;
}

/**
 * Builds the clients; nothing is connected before connectClients(). `quick`: one attempt, for the
 * operator's commands (status, check, tail), which should answer in seconds, not retry for a minute.
 */
export function createClients(cfg: Config, log: Logger, quick = false): KafkaClients {
  const { ssl, sasl } = cfg.kafka;
  const kafka = new Kafka({
    clientId: cfg.kafka.clientId,
    brokers: cfg.kafka.brokers,
    ...(ssl ? { ssl: tlsOptions(ssl) } : {}),
    // A union of one object per mechanism; all three used here take a user name and password.
    ...(sasl ? { sasl: sasl as SASLOptions } : {}),
    connectionTimeout: 5_000,
    requestTimeout: 30_000,
    logLevel: logLevel.WARN,
    logCreator: kafkaLogCreator(log, cfg.kafka.brokers.join(",")),
    retry: quick ? { retries: 0 } : BOUNDED_RETRY,
  });
  const admin = kafka.admin();
  const { eos } = deliveryMode(cfg);
  // loadConfig refuses wire with exactly-once; the check here keeps a hand-built Config honest too.
  if (cfg.kafka.producer === "wire" && !eos) {
    return { kafka, admin, producer: new WireProducer(cfg.kafka, log, quick ? { retryWindowMs: 0 } : {}) };
  }
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    // kafkajs's default placement, hashed without its per-message Long arithmetic (partitioner.ts).
    createPartitioner: FastDefaultPartitioner,
    allowAutoTopicCreation: false,
    retry: BOUNDED_RETRY,
    // Exactly-once: kafkajs runs InitProducerId with this id at the first transaction() (not
    // at connect()); that is what fences an older producer (CheckpointStore.read). The retries
    // start short because the common retriable error here is CONCURRENT_TRANSACTIONS: a
    // transaction begun right after a commit, while the coordinator still writes its markers
    // (measured: ~15% of back-to-back transactions, cleared within milliseconds; a 300 ms first
    // retry would cost that much latency each time). ~1 min in all, as above.
    ...(eos ? { transactionalId: eos.transactionalId, retry: { initialRetryTime: 5, maxRetryTime: 10_000, retries: 17 } } : {}),
  });
  return { kafka, admin, producer };
}

/**
 * kafkajs's own messages, as structured pino fields at debug; its log objects carry no credentials.
 * At debug because they are the library's detail: a broker down made kafkajs log ~40 s of errors
 * with stack traces before the daemon's own line said the same once. What an operator must act on
 * the daemon says itself (the supervisor's line, src/main.ts), with kafkajs's cause in it.
 */
function kafkaLogCreator(log: Logger, brokers: string): () => (entry: LogEntry) => void {
  const klog = log.child({ component: "kafkajs" });
  return () => (entry: LogEntry) => {
    const { message, ...rest } = entry.log;
    // The first failed connection is the moment to say Kafka is unreachable; kafkajs goes on
    // retrying for ~1 min before the session gives up and the supervisor would say it.
    const refused = /^Connection (error|timeout)|^Failed to connect to seed broker/.exec(message);
    if (refused !== null) {
      const cause = message.replace(/^Failed to connect to seed broker, trying another broker from the list: /, "");
      problems.report(
        log,
        problemKey(`Kafka at ${brokers} is unreachable`),
        { err: cause },
        `Kafka at ${brokers} is unreachable (${cause}); retrying`,
      );
    }
    // Retries are bounded on purpose (BOUNDED_RETRY); kafkajs warns about that on every start.
    if (message.startsWith("Limiting retries for the idempotent producer")) return;
    // A transaction begun while the coordinator still completes the previous one (or a fenced
    // predecessor's) is refused with CONCURRENT_TRANSACTIONS, logged by kafkajs as an error (in
    // the message, or in `error` of a "Response AddPartitionsToTxn" line), and retried, as it must be.
    if (`${message} ${String(rest.error ?? "")}`.includes("another concurrent operation on the same transaction")) {
      klog.debug({ namespace: entry.namespace }, "CONCURRENT_TRANSACTIONS (retried)");
      return;
    }
    klog.debug({ namespace: entry.namespace, kafkajsLevel: logLevel[entry.level], ...rest }, message);
  };
}

/** Checks the brokers' certificate (with TLS), then connects the admin and the producer. */
export async function connectClients(cfg: Config, clients: KafkaClients): Promise<void> {
  if (cfg.kafka.ssl) await checkCertificate(cfg, tlsOptions(cfg.kafka.ssl));
  try {
    await clients.admin.connect();
    await clients.producer.connect();
  } catch (e: unknown) {
    throw (
      userAction(cfg, e) ??
      new TransientError(`Kafka at ${cfg.kafka.brokers.join(",")} is unreachable (${(e as Error).message}); retrying`, { cause: e })
    );
  }
}

/** Best effort: a client that never connected, or lost its broker, has nothing to say. */
export async function disconnectClients(clients: KafkaClients): Promise<void> {
  await clients.producer.disconnect().catch(() => undefined);
  await clients.admin.disconnect().catch(() => undefined);
}

/** One Kafka transaction: written and committed, or aborted (best effort) and the error thrown. */
export async function inTransaction(producer: Pick<SessionProducer, "transaction">, topicMessages: TopicMessages[]): Promise<void> {
  if (producer.transaction === undefined)
    throw new Error("exactly-once needs kafkajs's transactional producer (EVENTSTREAM_KAFKA_PRODUCER=kafkajs)");
  const tx = await producer.transaction();
  try {
    await tx.sendBatch({ topicMessages, acks: -1 });
    await tx.commit();
  } catch (e: unknown) {
    await tx.abort().catch(() => undefined);
    throw e;
  }
}

/** kafkajs's TLS options: the configured CA only, or Node's list (`true`); certificates always checked. */
function tlsOptions(ssl: NonNullable<Config["kafka"]["ssl"]>): ConnectionOptions {
  return ssl.ca ? { ca: [ssl.ca.pem], rejectUnauthorized: true } : { rejectUnauthorized: true };
}

/**
 * kafkajs retries a failed TLS handshake like any connection error, for about a minute, and then
 * reports the broker unreachable; yet a certificate the configured CA does not verify will not
 * verify on a retry either. So the first bootstrap broker that answers is checked once, up front,
 * with the options kafkajs will use: a certificate problem stops the daemon at once, saying what to
 * change. A broker that does not answer is left to kafkajs's retries.
 */
async function checkCertificate(cfg: Config, options: ConnectionOptions): Promise<void> {
  for (const broker of cfg.kafka.brokers) {
    const sep = broker.lastIndexOf(":");
    const host = broker.slice(0, sep).replace(/^\[(.*)\]$/, "$1");
    const port = Number(broker.slice(sep + 1));
    const outcome = await new Promise<"ok" | "no answer" | TlsFailure>((resolve) => {
      // As kafkajs's socket factory: SNI with host names only.
      const socket = tlsConnect({ host, port, ...(isIP(host) === 0 ? { servername: host } : {}), ...options });
      socket.setTimeout(5_000, () => {
        socket.destroy();
        resolve("no answer");
      });
      socket.once("secureConnect", () => {
        socket.destroy();
        resolve("ok");
      });
      socket.once("error", (e: Error) => {
        socket.destroy();
        resolve(tlsFailure(e) ?? "no answer");
      });
    });
    if (outcome === "ok") return;
    if (outcome !== "no answer") throw new TlsError(explainTls(cfg, outcome, broker));
  }
}
