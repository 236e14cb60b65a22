/**
 * One error path. Every caught value goes through `coerceError`; errors a user must act on are
 * `UserActionError`s whose message says what to do. Nothing here ever carries a password: messages
 * are built from names (role, slot, table), never from connection strings.
 */

export function coerceError(e: unknown): Error {
  if (e instanceof Error) return e;
  if (typeof e === "string") return new Error(e);
  try {
    return new Error(`non-error thrown: ${JSON.stringify(e)}`);
  } catch {
    return new Error(`non-error thrown: ${String(e)}`);
  }
}

/** The operator must change something (configuration, a server setting, a privilege). Not retried. */
export class UserActionError extends Error {
  override name = "UserActionError";
}

export class ConfigError extends UserActionError {
  override name = "ConfigError";
}

export class WalLevelError extends UserActionError {
  override name = "WalLevelError";
}

export class PrivilegeError extends UserActionError {
  override name = "PrivilegeError";
}

export class SlotError extends UserActionError {
  override name = "SlotError";
}

export class PublicationError extends UserActionError {
  override name = "PublicationError";
}

/**
 * The publication was dropped while the slot still had WAL to decode with it. pgoutput looks the
 * publication up as of each change's place in the WAL, so changes written after the DROP (and
 * before any re-creation) can never be decoded from this slot: the daemon stops instead of
 * retrying, or creating the publication over the slot (src/source/preflight.ts builds the message: the
 * positions, and the steps to resume).
 */
export class PublicationDroppedError extends PublicationError {
  override name = "PublicationDroppedError";
}

/** EVENTSTREAM_REPLICA_IDENTITY=full, but a captured table is not REPLICA IDENTITY FULL and the daemon may not make it so. */
export class ReplicaIdentityError extends UserActionError {
  override name = "ReplicaIdentityError";
}

export class TopicError extends UserActionError {
  override name = "TopicError";
}

export class MessageTooLargeError extends UserActionError {
  override name = "MessageTooLargeError";
}

export class SchemaError extends UserActionError {
  override name = "SchemaError";
}

/**
 * EVENTSTREAM_SCHEMA_REGISTRY_URL is set and the registry cannot be reached, or refuses the event
 * schema (incompatible with what the subject holds, or not a schema it accepts): the daemon will not
 * publish framed values it cannot name a schema for, nor fall back to plain JSON behind the
 * consumers' backs.
 */
export class SchemaRegistryError extends UserActionError {
  override name = "SchemaRegistryError";
}

/**
 * A TLS handshake failed on the certificate (not signed by the configured CA, not naming the host,
 * expired) or the server does not speak TLS: retrying cannot help, the configuration or the
 * server's certificate must change.
 */
export class TlsError extends UserActionError {
  override name = "TlsError";
}

/**
 * A Kafka broker refused a SASL login (wrong credentials, a mechanism its listener does not enable),
 * or the broker's side of a SCRAM exchange failed the client's checks (its nonce, iteration count or
 * signature): the credentials or the broker's configuration must change. `errorCode` is Kafka's
 * error code when the broker sent one (null: the client refused the broker's answer). Built from the
 * broker's words and the user name only, never the password.
 */
export class SaslAuthenticationError extends UserActionError {
  override name = "SaslAuthenticationError";

  constructor(
    message: string,
    readonly errorCode: number | null,
  ) {
    super(message);
  }
}

/**
 * Exactly-once delivery cannot trust the checkpoint topic's record for this slot (unreadable, or
 * written for another PostgreSQL cluster): skipping by it could drop events, so the daemon stops.
 */
export class CheckpointError extends UserActionError {
  override name = "CheckpointError";
}

/**
 * The replication slot cannot serve the changes after the last checkpoint: it was invalidated by
 * PostgreSQL (max_slot_wal_keep_size), dropped, or dropped and recreated, or moved by something
 * other than this daemon. Events in between were never published and cannot be any more; the
 * daemon stops rather than continue past the gap (src/checkpoint/gap.ts builds the message: the
 * LSNs of the gap and the recovery, a re-snapshot then `airflow-eventstream reset-checkpoint`).
 */
export class SlotGapError extends UserActionError {
  override name = "SlotGapError";

  constructor(
    message: string,
    /** What was lost, for EVENTSTREAM_ON_GAP=snapshot (src/recover-gap.ts). */
    readonly gap: GapFacts,
  ) {
    super(message);
  }
}

/** The gap a SlotGapError reports: why, between which LSNs, and when the last checkpoint was written. */
export interface GapFacts {
  reason: "slot_lost" | "slot_missing" | "slot_ahead";
  /** Changes after this LSN are missing (null: the checkpoint does not say). */
  from: bigint | null;
  /** ... up to this one. */
  to: bigint;
  /** The checkpoint's written_at: runs changed since then may have transitions in the gap (null: unknown). */
  checkpointWrittenAt: string | null;
}

/** A --from/--until argument of a backfill is neither a position, an LSN nor a time (src/backfill/target.ts). */
export class TargetError extends UserActionError {
  override name = "TargetError";
}

/**
 * A backfill asked for events from before what a topic still holds: Kafka's retention deleted
 * records at or after the target, so they cannot be had from the topic (src/backfill/offsets.ts
 * builds the message: the oldest position still available per partition, and what to do).
 */
export class RetentionError extends UserActionError {
  override name = "RetentionError";
}

/**
 * A condition expected to clear by itself (slot held by another daemon, Kafka or PostgreSQL
 * unreachable): the supervisor waits and retries, logging what it waits for.
 */
export class TransientError extends Error {
  override name = "TransientError";
}

/**
 * The replication slot is held by another connection (a second daemon, or the previous process of
 * this one not yet gone). Retried every second rather than with a growing backoff, so a standby
 * daemon takes over within seconds of the active one's death.
 */
export class SlotBusyError extends TransientError {
  override name = "SlotBusyError";
}

/**
 * Another producer with the same transactional id (a second daemon on this slot) has started:
 * Kafka refuses this one's transactions from then on. The session ends and the supervisor
 * restarts it from the slot, where it waits while the other daemon holds the slot.
 */
export class ProducerFencedError extends TransientError {
  override name = "ProducerFencedError";
}

/**
 * An error and its causes, outermost first: `cause`, or kafkajs's `originalError` where its
 * retrier wraps what it gave up on. Bounded, in case a chain loops.
 */
export function causeChain(e: unknown): object[] {
  const chain: object[] = [];
  let cur: unknown = e;
  for (let depth = 0; depth < 8 && typeof cur === "object" && cur !== null; depth++) {
    chain.push(cur);
    cur = (cur as { cause?: unknown }).cause ?? (cur as { originalError?: unknown }).originalError;
  }
  return chain;
}

/**
 * The end of an exhaustive switch: a new case that is not handled fails to compile. At run time
 * (a value the types did not foresee) it throws `error(x)`, or a plain Error naming the value.
 */
export function assertNever(x: never, error?: (x: unknown) => Error): never {
  throw error ? error(x) : new Error(`unhandled case ${JSON.stringify(x)}`);
}

/** PostgreSQL's SQLSTATE, when the error came from the server. */
export function sqlState(e: unknown): string | undefined {
  if (typeof e === "object" && e !== null && "code" in e) {
    const code = (e as { code: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/** Message of an error and its causes, for logs and the final exit line. */
export function describeError(e: unknown): string {
  if (typeof e !== "object" || e === null) return coerceError(e).message;
  return causeChain(e)
    .map((c) => coerceError(c).message)
    .join(": ");
}

/**
 * What a failed TLS handshake says, found anywhere in the cause chain (kafkajs wraps Node's error
 * and keeps its `code`; node-postgres passes it on as is); undefined when `e` is no TLS failure.
 * - "ca": the chain does not end at a trusted CA (the configured CA file, or Node's list);
 * - "name": the certificate does not name the host connected to;
 * - "date": expired or not yet valid;
 * - "not-tls": the server does not speak TLS there.
 */
export interface TlsFailure {
  kind: "ca" | "name" | "date" | "not-tls";
  /** OpenSSL's or Node's code, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE. */
  code: string;
  /** Node's message, e.g. "unable to verify the first certificate". */
  message: string;
  /** The names the certificate lists ("DNS:localhost, IP Address:127.0.0.1"), when Node gave them. */
  certificateNames: string | null;
}

const TLS_CODES: Record<string, TlsFailure["kind"]> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "ca",
  UNABLE_TO_GET_ISSUER_CERT: "ca",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "ca",
  SELF_SIGNED_CERT_IN_CHAIN: "ca",
  DEPTH_ZERO_SELF_SIGNED_CERT: "ca",
  CERT_SIGNATURE_FAILURE: "ca",
  CERT_UNTRUSTED: "ca",
  CERT_REJECTED: "ca",
  INVALID_CA: "ca",
  ERR_TLS_CERT_ALTNAME_INVALID: "name",
  HOSTNAME_MISMATCH: "name",
  CERT_HAS_EXPIRED: "date",
  CERT_NOT_YET_VALID: "date",
  ERR_SSL_WRONG_VERSION_NUMBER: "not-tls",
};

export function tlsFailure(e: unknown): TlsFailure | undefined {
  for (const cur of causeChain(e)) {
    const { code, message, cert } = cur as { code?: unknown; message?: unknown; cert?: { subjectaltname?: unknown } };
    const text = typeof message === "string" ? message : "";
    const kind = typeof code === "string" ? TLS_CODES[code] : undefined;
    if (kind) {
      const names = typeof cert?.subjectaltname === "string" ? cert.subjectaltname : null;
      // Without kafkajs's prefix, and without the dangling ": " of Node's altname message.
      return {
        kind,
        code: code as string,
        message: text.replace(/^Connection error: /, "").replace(/[\s:]+$/, ""),
        certificateNames: names,
      };
    }
    // node-postgres, when the server answers the SSLRequest with "N".
    if (text === "The server does not support SSL connections")
      return { kind: "not-tls", code: "SSL_NOT_SUPPORTED", message: text, certificateNames: null };
  }
  return undefined;
}
