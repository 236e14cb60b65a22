import type { Config } from "../config.js";
import {
  causeChain,
  PrivilegeError,
  ProducerFencedError,
  TlsError,
  TopicError,
  TransientError,
  UserActionError,
  tlsFailure,
  type TlsFailure,
} from "../errors.js";
import { explainTlsFailure } from "../tls.js";
import { deliveryMode } from "./delivery.js";

/**
 * Kafka's errors, as the errors.ts family: what the operator must change (TLS, SASL, ACLs) is
 * said as such and not retried; fencing is named; anything else is transient and ends the
 * session, which resumes from the slot.
 */

/** A failure the operator must act on (TLS certificate, SASL login), as such; undefined otherwise. */
export function userAction(cfg: Config, e: unknown): UserActionError | undefined {
  if (e instanceof UserActionError) return e;
  const tls = tlsFailure(e);
  if (tls) return new TlsError(explainTls(cfg, tls, cfg.kafka.brokers.join(",")), { cause: e });
  const sasl = cfg.kafka.sasl;
  // kafkajs's name, and the wire producer's (src/sink/wire/sasl.ts).
  if (sasl && (hasErrorNamed(e, "KafkaJSSASLAuthenticationError") || hasErrorNamed(e, "SaslAuthenticationError"))) {
    const mechanism = sasl.mechanism.toUpperCase();
    const scram =
      sasl.mechanism === "plain"
        ? ""
        : `; for SCRAM: kafka-configs.sh --alter --add-config '${mechanism}=[password=...]' --entity-type users --entity-name ${sasl.username}`;
    return new PrivilegeError(
      `Kafka at ${cfg.kafka.brokers.join(",")} refused the SASL ${mechanism} login of user "${sasl.username}" (${(e as Error).message}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, and that KAFKA_SASL_MECHANISM is enabled on the brokers' listener and the user has credentials for it${scram}`,
      { cause: e },
    );
  }
  return undefined;
}

/** The Kafka wording of a failed TLS handshake (the sentence is shared with PostgreSQL's, src/tls.ts). */
export function explainTls(cfg: Config, tls: TlsFailure, broker: string): string {
  return explainTlsFailure(tls, {
    peer: `Kafka broker ${broker}`,
    trusted: cfg.kafka.ssl?.ca
      ? `the CA in KAFKA_SSL_CA_FILE (${cfg.kafka.ssl.ca.path})`
      : "the CAs Node.js trusts (KAFKA_SSL_CA_FILE is not set)",
    expectedName: "the host connected to",
    notTls: "does not speak TLS on that port (KAFKA_SSL=true)",
    fix: {
      ca: "set KAFKA_SSL_CA_FILE to the PEM file of the CA that signed the brokers' certificates",
      name: "list the brokers in KAFKA_BROKERS by names their certificates carry (and advertise such names in the brokers' advertised.listeners), or give the brokers certificates that name their hosts",
      date: "renew the brokers' certificates, or check this machine's clock",
      "not-tls": "point KAFKA_BROKERS at the brokers' SSL or SASL_SSL listener, or set KAFKA_SSL=false",
    },
  });
}

/** The error that ends the session, saying what happened; fencing is named as such. */
export function explain(cfg: Config, e: unknown, what: string): Error {
  if (e instanceof TransientError) return e;
  const action = userAction(cfg, e);
  if (action) return action;
  const { eos, ckpt } = deliveryMode(cfg);
  const message = (e as Error)?.message ?? String(e);
  const denied = authorizationFailure(e);
  if (denied) {
    // Not retried: a missing ACL does not grant itself.
    return new TopicError(
      `${what}: Kafka refused it (${denied}): the daemon's principal needs WRITE and DESCRIBE on its topics${ckpt ? ` and READ, WRITE and DESCRIBE on the checkpoint topic ${ckpt.topic}, READ on the consumer groups ${cfg.kafka.clientId}.checkpoint-reader.*` : ""}, READ on its topics and the consumer groups ${cfg.kafka.clientId}.read-back.* (the start reads back their tail)${eos ? `, WRITE and DESCRIBE on the transactional id ${eos.transactionalId}` : ""} and IDEMPOTENT_WRITE on the cluster (see docs/operations.md, "Setting up PostgreSQL and Kafka for production")${ckpt && !eos ? "; or set EVENTSTREAM_GAP_DETECTION=false to run at-least-once without the checkpoint topic (a dropped or recreated slot then goes unnoticed)" : ""}`,
      { cause: e },
    );
  }
  if (eos && isFenced(e)) {
    return new ProducerFencedError(
      `${what}: Kafka refused transactional id ${eos.transactionalId} (${message}): another daemon on slot "${eos.key}" has started a producer with it, or a transaction outlived its timeout; restarting from the slot`,
      { cause: e },
    );
  }
  const tooLarge = tooLargeFailure(e);
  if (tooLarge) {
    // Retried like any failure, not a stop: nothing after the last acknowledged position is
    // acknowledged meanwhile, and a topic whose max.message.bytes is raised is written to at the
    // next attempt, without a restart. The operator is told which limits meet.
    return new TransientError(
      `${what} to Kafka failed (${message}): Kafka refused a record batch as too large (${tooLarge}), so a topic's max.message.bytes (or the brokers' message.max.bytes) is below what the daemon sends in one batch, EVENTSTREAM_BATCH_MAX_BYTES=${cfg.batchMaxBytes}, or in one record, EVENTSTREAM_MAX_MESSAGE_BYTES=${cfg.maxMessageBytes}; raise the topic's max.message.bytes, or lower both settings under it. Retrying from the last acknowledged position meanwhile; nothing is lost`,
      { cause: e },
    );
  }
  return new TransientError(`${what} to Kafka failed (${message}); resuming from the last acknowledged position`, { cause: e });
}

/** MESSAGE_TOO_LARGE (10) or RECORD_LIST_TOO_LARGE (18), anywhere in the cause chain: its name. */
export function tooLargeFailure(e: unknown): string | undefined {
  for (const cur of causeChain(e)) {
    const { type, code } = cur as { type?: unknown; code?: unknown };
    if (type === "MESSAGE_TOO_LARGE" || code === 10) return "MESSAGE_TOO_LARGE";
    if (type === "RECORD_LIST_TOO_LARGE" || code === 18) return "RECORD_LIST_TOO_LARGE";
  }
  return undefined;
}

/** Whether an error named `name` is in the cause chain (kafkajs wraps what its retrier gives up on). */
function hasErrorNamed(e: unknown, name: string): boolean {
  return causeChain(e).some((c) => (c as { name?: unknown }).name === name);
}

/** TOPIC_ (29), GROUP_ (30), CLUSTER_ (31), TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53), anywhere in the cause chain: its name. */
export function authorizationFailure(e: unknown): string | undefined {
  for (const cur of causeChain(e)) {
    const { type, code } = cur as { type?: unknown; code?: unknown };
    if (typeof type === "string" && type.endsWith("_AUTHORIZATION_FAILED")) return type;
    if (code === 29 || code === 30 || code === 31 || code === 53) return `authorization failed, error code ${String(code)}`;
  }
  return undefined;
}

/** INVALID_PRODUCER_EPOCH (47), PRODUCER_FENCED (90), TRANSACTION_COORDINATOR_FENCED (52), anywhere in the cause chain. */
function isFenced(e: unknown): boolean {
  return causeChain(e).some((cur) => {
    const { type, code } = cur as { type?: unknown; code?: unknown };
    return (
      type === "INVALID_PRODUCER_EPOCH" ||
      type === "PRODUCER_FENCED" ||
      type === "TRANSACTION_COORDINATOR_FENCED" ||
      code === 47 ||
      code === 90 ||
      code === 52
    );
  });
}
