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
  const parts: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    const err = coerceError(cur);
    parts.push(err.message);
    cur = (err as { cause?: unknown }).cause;
  }
  return parts.join(": ");
}
