/**
 * Kafka's error codes as the wire producer reports them. `type` and `code` are what
 * src/sink/kafka-errors.ts looks for in a cause chain (authorization, fencing), the same fields
 * kafkajs's protocol errors carry; `retriable` is what the producer's retry loop decides on.
 */

/** The codes a Produce, Metadata, InitProducerId or ApiVersions answer can carry, by Kafka's names. */
const NAMES: Record<number, string> = {
  [-1]: "UNKNOWN_SERVER_ERROR",
  2: "CORRUPT_MESSAGE",
  3: "UNKNOWN_TOPIC_OR_PARTITION",
  5: "LEADER_NOT_AVAILABLE",
  6: "NOT_LEADER_OR_FOLLOWER",
  7: "REQUEST_TIMED_OUT",
  8: "BROKER_NOT_AVAILABLE",
  9: "REPLICA_NOT_AVAILABLE",
  10: "MESSAGE_TOO_LARGE",
  13: "NETWORK_EXCEPTION",
  14: "COORDINATOR_LOAD_IN_PROGRESS",
  15: "COORDINATOR_NOT_AVAILABLE",
  16: "NOT_COORDINATOR",
  17: "INVALID_TOPIC_EXCEPTION",
  18: "RECORD_LIST_TOO_LARGE",
  19: "NOT_ENOUGH_REPLICAS",
  20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
  21: "INVALID_REQUIRED_ACKS",
  29: "TOPIC_AUTHORIZATION_FAILED",
  30: "GROUP_AUTHORIZATION_FAILED",
  31: "CLUSTER_AUTHORIZATION_FAILED",
  32: "INVALID_TIMESTAMP",
  33: "UNSUPPORTED_SASL_MECHANISM",
  34: "ILLEGAL_SASL_STATE",
  35: "UNSUPPORTED_VERSION",
  42: "INVALID_REQUEST",
  43: "UNSUPPORTED_FOR_MESSAGE_FORMAT",
  44: "POLICY_VIOLATION",
  45: "OUT_OF_ORDER_SEQUENCE_NUMBER",
  46: "DUPLICATE_SEQUENCE_NUMBER",
  47: "INVALID_PRODUCER_EPOCH",
  49: "INVALID_PRODUCER_ID_MAPPING",
  51: "CONCURRENT_TRANSACTIONS",
  52: "TRANSACTION_COORDINATOR_FENCED",
  53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
  56: "KAFKA_STORAGE_ERROR",
  58: "SASL_AUTHENTICATION_FAILED",
  59: "UNKNOWN_PRODUCER_ID",
  74: "FENCED_LEADER_EPOCH",
  75: "UNKNOWN_LEADER_EPOCH",
  87: "INVALID_RECORD",
  89: "THROTTLING_QUOTA_EXCEEDED",
  90: "PRODUCER_FENCED",
};

/** Kafka's own descriptions (its Errors enum) of the codes an operator may meet from a produce. */
const DESCRIPTIONS: Record<number, string> = {
  3: "This server does not host this topic-partition",
  6: "This server is not the leader for that topic-partition",
  10: "The request included a message larger than the max message size the server will accept",
  18: "The request included message batch larger than the configured segment size on the server",
  19: "Messages are rejected since there are fewer in-sync replicas than required",
  20: "Messages are written to the log, but to fewer in-sync replicas than required",
  29: "Topic authorization failed",
  31: "Cluster authorization failed",
  44: "Request parameters do not satisfy the configured policy",
  45: "The broker received an out of order sequence number",
  47: "Producer attempted to produce with an old epoch",
  56: "Disk error when trying to access log file on the disk",
  59: "The broker could not locate the producer metadata associated with the producer id",
  87: "This record has failed the validation on broker and hence will be rejected",
};

/**
 * Worth resending the same batch (after a metadata refresh): the leader moved, a replica lagged,
 * the broker was busy. Kafka's RetriableException subclasses among the codes above.
 */
const RETRIABLE = new Set([2, 3, 5, 6, 7, 9, 13, 14, 15, 16, 19, 20, 51, 56, 74, 75, 89]);

export const DUPLICATE_SEQUENCE_NUMBER = 46;

/** An error code in a Kafka answer (per partition, per topic or for the whole request). */
export class KafkaProtocolError extends Error {
  override name = "KafkaProtocolError";
  readonly type: string;
  readonly code: number;
  readonly retriable: boolean;

  constructor(code: number, context: string, detail?: string | null) {
    const type = NAMES[code] ?? `ERROR_CODE_${code}`;
    const description = DESCRIPTIONS[code];
    super(`${context}: ${type} (Kafka error code ${code}${description ? `: ${description}` : ""})${detail ? `: ${detail}` : ""}`);
    this.type = type;
    this.code = code;
    this.retriable = RETRIABLE.has(code);
  }
}

/**
 * The connection failed, closed or did not answer in time: retriable, since the producer's batches
 * carry their sequence numbers and the broker drops a copy it already has.
 */
export class KafkaConnectionError extends Error {
  override name = "KafkaConnectionError";
  readonly retriable = true;
}

/** Whether to resend after this error (a protocol code Kafka calls retriable, or a lost connection). */
export function isRetriable(e: unknown): boolean {
  return (e instanceof KafkaProtocolError || e instanceof KafkaConnectionError) && e.retriable;
}
