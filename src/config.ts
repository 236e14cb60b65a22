import { readFileSync } from "node:fs";
import { parseEnv } from "node:util";
import { z } from "zod";
import { ConfigError } from "./errors.js";

/**
 * The one configuration module. Every setting is an environment variable (a `.env` file in the
 * working directory is read first, without overriding the environment). Each entry has its doc line
 * and default here; .env.example and README's table repeat them for operators.
 *
 * PostgreSQL connection settings use libpq's own names (PGHOST, PGPORT, ...), so the same
 * environment works for psql.
 */

const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"], { message: "expected true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");

const int = (min: number, max: number) =>
  z.coerce
    .number({ message: "expected a whole number" })
    .int({ message: "expected a whole number" })
    .min(min, { message: `must be at least ${min}` })
    .max(max, { message: `must be at most ${max}` });

const identifier = z
  .string()
  .regex(/^[a-z_][a-z0-9_]{0,62}$/, {
    message: "must be a lower-case PostgreSQL identifier: letters, digits and _, starting with a letter or _",
  });

const topicName = z.string().regex(/^[a-zA-Z0-9._-]{1,249}$/, { message: "must be a Kafka topic name: letters, digits, '.', '_' and '-', at most 249 characters" });

const env = z.object({
  // --- PostgreSQL ---
  /** Host of Airflow's metadata database. */
  PGHOST: z.string().min(1).default("127.0.0.1"),
  /** Port of Airflow's metadata database. */
  PGPORT: int(1, 65535).default(5432),
  /** Role the daemon connects as: needs REPLICATION (or superuser) and SELECT on the captured tables. */
  PGUSER: z.string().min(1).default("postgres"),
  /** Password of PGUSER. Never logged. */
  PGPASSWORD: z.string().optional(),
  /** Airflow's metadata database. */
  PGDATABASE: z.string().min(1).default("airflow"),
  /**
   * TLS to PostgreSQL, as libpq: disable; require (encrypted; with PGSSLROOTCERT set, the certificate
   * is checked as verify-ca); verify-ca (certificate signed by a trusted CA); verify-full (that, and
   * it names PGHOST).
   */
  PGSSLMODE: z.enum(["disable", "require", "verify-ca", "verify-full"]).default("disable"),
  /** PEM file of the CA(s) that signed PostgreSQL's certificate. Unset: the CAs Node.js trusts (Mozilla's list). */
  PGSSLROOTCERT: z.string().optional(),
  /** Schema holding Airflow's tables. */
  EVENTSTREAM_AIRFLOW_SCHEMA: identifier.default("public"),
  /** Logical replication slot (pgoutput) the daemon reads and acknowledges. */
  EVENTSTREAM_SLOT: identifier.default("airflow_eventstream"),
  /** Publication of the captured tables. */
  EVENTSTREAM_PUBLICATION: identifier.default("airflow_eventstream"),
  /** Create the slot when it is missing. When false, a missing slot is an error that gives the SQL. */
  EVENTSTREAM_CREATE_SLOT: bool.default(true),
  /** Create (or extend) the publication when missing. Needs ownership of the tables. */
  EVENTSTREAM_CREATE_PUBLICATION: bool.default(true),
  /**
   * REPLICA IDENTITY the daemon requires of task_instance and dag_run, named after PostgreSQL's
   * `ALTER TABLE ... REPLICA IDENTITY DEFAULT | FULL` so the setting reads as the SQL it stands for.
   * default: Airflow's tables as they are; previous_state comes from the daemon's memory (unknown
   * for a row's first change after a start). full: the WAL carries every UPDATE's and DELETE's old
   * row, so previous_state is exact across restarts, at the cost of more WAL (README).
   */
  EVENTSTREAM_REPLICA_IDENTITY: z.enum(["default", "full"]).default("default"),
  /**
   * With EVENTSTREAM_REPLICA_IDENTITY=full: run `ALTER TABLE ... REPLICA IDENTITY FULL` on tables that
   * are not FULL yet (needs ownership; takes a brief ACCESS EXCLUSIVE lock). When false, or not the
   * owner, such a table is an error that gives the SQL.
   */
  EVENTSTREAM_ALTER_REPLICA_IDENTITY: bool.default(true),
  /** Seconds between status updates to PostgreSQL (must stay below the server's wal_sender_timeout). */
  EVENTSTREAM_STATUS_INTERVAL_SECONDS: int(1, 3600).default(10),

  // --- Kafka ---
  /** Comma-separated bootstrap brokers. */
  KAFKA_BROKERS: z.string().min(1).default("127.0.0.1:9092"),
  /** Kafka client id. */
  KAFKA_CLIENT_ID: z.string().min(1).default("airflow-eventstream"),
  /** TLS to Kafka. */
  KAFKA_SSL: bool.default(false),
  /** PEM file of the CA(s) that signed the brokers' certificates. Unset: the CAs Node.js trusts (Mozilla's list). */
  KAFKA_SSL_CA_FILE: z.string().optional(),
  /** SASL: plain, scram-sha-256 or scram-sha-512. Unset: no SASL. */
  KAFKA_SASL_MECHANISM: z.enum(["plain", "scram-sha-256", "scram-sha-512"]).optional(),
  /** SASL user name. */
  KAFKA_SASL_USERNAME: z.string().optional(),
  /** SASL password. Never logged. */
  KAFKA_SASL_PASSWORD: z.string().optional(),
  /** Topic for all events (used when EVENTSTREAM_TOPIC_TEMPLATE is empty). */
  EVENTSTREAM_TOPIC: topicName.default("airflow.events"),
  /** One topic per DAG, e.g. "airflow.{dag_id}"; sanitised to Kafka's topic name rules. Empty: one topic. */
  EVENTSTREAM_TOPIC_TEMPLATE: z.string().default(""),
  /** Create missing topics. When false, a missing topic is an error. */
  EVENTSTREAM_CREATE_TOPICS: bool.default(true),
  /** Partitions of topics the daemon creates. */
  EVENTSTREAM_TOPIC_PARTITIONS: int(1, 10_000).default(6),
  /** Replication factor of topics the daemon creates (-1: the broker's default). */
  EVENTSTREAM_TOPIC_REPLICATION_FACTOR: int(-1, 32).default(-1),
  /** Largest record sent to Kafka, in bytes as sent: the event's UTF-8 JSON, its key and the record's overhead (src/sink/batch.ts). Keep it under the topic's max.message.bytes. */
  EVENTSTREAM_MAX_MESSAGE_BYTES: int(1024, 100 * 1024 * 1024).default(1_000_000),
  /** Where an event over EVENTSTREAM_MAX_MESSAGE_BYTES goes (a summary with its position). Empty: the daemon stops, naming the row. */
  EVENTSTREAM_DEAD_LETTER_TOPIC: topicName.optional(),
  /** Largest produce request in bytes of event JSON; keep it under the brokers' message.max.bytes (1 MiB by default). */
  EVENTSTREAM_BATCH_MAX_BYTES: int(1024, 100 * 1024 * 1024).default(900_000),
  /** Largest number of events in one produce request. */
  EVENTSTREAM_BATCH_MAX_EVENTS: int(1, 100_000).default(2_000),
  /**
   * at-least-once: a crash may publish the unacknowledged tail again (same positions).
   * exactly-once: each batch is a Kafka transaction with a checkpoint; read_committed consumers see every event once.
   */
  EVENTSTREAM_DELIVERY: z.enum(["at-least-once", "exactly-once"]).default("at-least-once"),
  /** Compacted topic holding one checkpoint per slot (key = slot name); created with 1 partition. Both modes (see EVENTSTREAM_GAP_DETECTION). */
  EVENTSTREAM_CHECKPOINT_TOPIC: topicName.default("airflow-eventstream.checkpoints"),
  /**
   * Detect a slot that was dropped, recreated or moved by something else (a gap: events lost) and
   * stop. Needs the checkpoint topic. false (at-least-once only): no checkpoint topic, and such a
   * gap goes unnoticed; an invalidated slot (wal_status lost) is still refused.
   */
  EVENTSTREAM_GAP_DETECTION: bool.default(true),

  // --- Flow control ---
  /** Reading from PostgreSQL pauses when this many events wait for Kafka's acknowledgement. */
  EVENTSTREAM_MAX_INFLIGHT_EVENTS: int(1, 10_000_000).default(10_000),
  /** ... or when their serialized size reaches this many bytes. */
  EVENTSTREAM_MAX_INFLIGHT_BYTES: int(1024, 4 * 1024 * 1024 * 1024).default(8 * 1024 * 1024),
  /** Publish notification events for XComs pushed under EVENTSTREAM_XCOM_KEY (captures the xcom table). */
  EVENTSTREAM_NOTIFICATIONS: bool.default(true),
  /** XCom key whose values become notification events (the PushOperator without an operator). */
  EVENTSTREAM_XCOM_KEY: z.string().min(1).default("eventstream"),
  /** Largest raw value (bytes) a notification that failed validation carries. */
  EVENTSTREAM_NOTIFICATION_RAW_MAX_BYTES: int(0, 1024 * 1024).default(4096),
  /** Task instances whose last state is remembered (to tell transitions from heartbeats). */
  EVENTSTREAM_STATE_CACHE_SIZE: int(1_000, 100_000_000).default(50_000),
  /** Start: records read back per partition of the event topics, to seed the state cache (both modes) and, at-least-once, to skip what Kafka holds. */
  EVENTSTREAM_RESTART_READ_EVENTS: int(1, 10_000_000).default(2_000),

  // --- Process ---
  /** Seconds SIGTERM/SIGINT may take to flush Kafka and acknowledge before the process exits. */
  EVENTSTREAM_SHUTDOWN_TIMEOUT_SECONDS: int(1, 3600).default(20),
  /** pino level: fatal, error, warn, info, debug, trace, silent. */
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

export type Env = z.infer<typeof env>;

/** Every setting the daemon reads: the schema's own keys, so a setting added there is known here. */
export const SETTING_NAMES: readonly string[] = Object.keys(env.shape);

/**
 * EVENTSTREAM_* names the daemon does not read but the project's own tooling does, so a shell set up
 * for development (`eval "$(bash scripts/services.sh env)"`, a second set of services) can start the
 * daemon: scripts/services.sh's ports, state directory and timeouts (EVENTSTREAM_SERVICES_*), the
 * tests' endpoints (EVENTSTREAM_TEST_*), their scratch PostgreSQL servers and the real-Airflow
 * suite's run mark. Any other EVENTSTREAM_* name is a mistake the daemon refuses (unknownSettings).
 */
export const TOOLING_NAMES: readonly string[] = [
  "EVENTSTREAM_PG_PORT",
  "EVENTSTREAM_KAFKA_PORT",
  "EVENTSTREAM_KAFKA_CONTROLLER_PORT",
  "EVENTSTREAM_KAFKA_SASL_PORT",
  "EVENTSTREAM_SCRATCH_PG_PORTS",
  "EVENTSTREAM_E2E_MARK",
];
export const TOOLING_PREFIXES: readonly string[] = ["EVENTSTREAM_SERVICES_", "EVENTSTREAM_TEST_"];

/** Values never shown in a message, whatever is wrong with them. */
const SECRET = /PASSWORD|SECRET|TOKEN/;

/** Names `.env` set (not the environment), and the file's path, so a message says where a value came from. */
const fromDotEnv = new Map<string, string>();

/** A CA file, read when the configuration is loaded: a wrong path is a configuration error, not a retry. */
export interface PemFile {
  path: string;
  pem: string;
}

export interface Config {
  pg: {
    host: string;
    port: number;
    user: string;
    password: string | undefined;
    database: string;
    sslmode: Env["PGSSLMODE"];
    /** PGSSLROOTCERT; null: Node.js's CAs. Only read when sslmode is not disable. */
    sslRootCert: PemFile | null;
  };
  airflowSchema: string;
  slot: string;
  publication: string;
  createSlot: boolean;
  createPublication: boolean;
  /** "full": task_instance and dag_run must be REPLICA IDENTITY FULL (see EVENTSTREAM_REPLICA_IDENTITY). */
  replicaIdentity: Env["EVENTSTREAM_REPLICA_IDENTITY"];
  alterReplicaIdentity: boolean;
  statusIntervalMs: number;
  kafka: {
    brokers: string[];
    clientId: string;
    /** null: no TLS; ca null: Node.js's CAs. */
    ssl: { ca: PemFile | null } | null;
    sasl: { mechanism: "plain" | "scram-sha-256" | "scram-sha-512"; username: string; password: string } | null;
  };
  topic: string;
  topicTemplate: string | null;
  createTopics: boolean;
  topicPartitions: number;
  topicReplicationFactor: number;
  batchMaxEvents: number;
  batchMaxBytes: number;
  delivery: Env["EVENTSTREAM_DELIVERY"];
  /** Where the checkpoints go (used when `gapDetection`, always true in exactly-once). */
  checkpointTopic: string;
  /** A checkpoint with acked_lsn is kept, gates what is acknowledged to PostgreSQL, and is checked against the slot at start. */
  gapDetection: boolean;
  maxMessageBytes: number;
  /** null: an oversized event stops the daemon. */
  deadLetterTopic: string | null;
  maxInflightEvents: number;
  maxInflightBytes: number;
  stateCacheSize: number;
  restartReadEvents: number;
  /** null: XComs are not captured. */
  xcomKey: string | null;
  notificationRawMaxBytes: number;
  shutdownTimeoutMs: number;
  logLevel: Env["LOG_LEVEL"];
}

/**
 * Reads and validates the configuration. Every problem is listed in one ConfigError, each with the
 * variable to set, so an operator fixes them in one go.
 */
export function loadConfig(source: NodeJS.ProcessEnv = process.env, dotEnv: ReadonlyMap<string, string> = fromDotEnv): Config {
  // Blank values count as unset, as in most .env tooling.
  const raw: Record<string, string> = {};
  for (const [k, v] of Object.entries(source)) if (v !== undefined && v !== "") raw[k] = v;
  const refused = (key: string) => refusedValue(key, raw[key], dotEnv);
  const unknown = unknownSettings(Object.keys(raw)).map(
    (name) => `  ${refused(name)}: not a setting of airflow-eventstream; did you mean ${closestSettings(name).join(", ")}? (all settings: .env.example)`,
  );
  const parsed = env.safeParse(raw);
  if (!parsed.success || unknown.length > 0) {
    const lines = (parsed.success ? [] : parsed.error.issues).map((i) => {
      const key = String(i.path[0] ?? "?");
      return `  ${refused(key)}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration; set these environment variables (see .env.example):\n${[...unknown, ...lines].join("\n")}`);
  }
  const e = parsed.data;
  const problems: string[] = [];
  if (e.KAFKA_SASL_MECHANISM && (!e.KAFKA_SASL_USERNAME || !e.KAFKA_SASL_PASSWORD)) {
    problems.push("  KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: required with KAFKA_SASL_MECHANISM");
  }
  if (e.KAFKA_SSL_CA_FILE && !e.KAFKA_SSL) problems.push(`  ${refused("KAFKA_SSL")}: set it to true to use KAFKA_SSL_CA_FILE`);
  const kafkaCa = e.KAFKA_SSL && e.KAFKA_SSL_CA_FILE ? readCaFile("KAFKA_SSL_CA_FILE", e.KAFKA_SSL_CA_FILE, "the brokers'", problems) : null;
  // As libpq: with sslmode=disable the root certificate is never used, so it is not read either.
  const pgRootCert = e.PGSSLMODE !== "disable" && e.PGSSLROOTCERT ? readCaFile("PGSSLROOTCERT", e.PGSSLROOTCERT, "PostgreSQL's", problems) : null;
  const template = e.EVENTSTREAM_TOPIC_TEMPLATE.trim();
  if (template !== "" && !template.includes("{dag_id}")) {
    problems.push(`  ${refused("EVENTSTREAM_TOPIC_TEMPLATE")}: must contain {dag_id}, e.g. "airflow.{dag_id}", or be empty for one topic`);
  }
  if (e.EVENTSTREAM_DELIVERY === "exactly-once" && !e.EVENTSTREAM_GAP_DETECTION) {
    problems.push(`  ${refused("EVENTSTREAM_GAP_DETECTION")}: exactly-once keeps and checks a checkpoint in any case; remove the setting (false is for at-least-once only)`);
  }
  if (e.EVENTSTREAM_GAP_DETECTION && (e.EVENTSTREAM_CHECKPOINT_TOPIC === e.EVENTSTREAM_TOPIC || e.EVENTSTREAM_CHECKPOINT_TOPIC === e.EVENTSTREAM_DEAD_LETTER_TOPIC)) {
    problems.push(`  ${refused("EVENTSTREAM_CHECKPOINT_TOPIC")}: must be a topic of its own, not the events' or the dead-letter topic`);
  }
  if (problems.length > 0) {
    throw new ConfigError(`invalid configuration; set these environment variables (see .env.example):\n${problems.join("\n")}`);
  }
  return {
    pg: {
      host: e.PGHOST,
      port: e.PGPORT,
      user: e.PGUSER,
      password: e.PGPASSWORD,
      database: e.PGDATABASE,
      sslmode: e.PGSSLMODE,
      sslRootCert: pgRootCert,
    },
    airflowSchema: e.EVENTSTREAM_AIRFLOW_SCHEMA,
    slot: e.EVENTSTREAM_SLOT,
    publication: e.EVENTSTREAM_PUBLICATION,
    createSlot: e.EVENTSTREAM_CREATE_SLOT,
    createPublication: e.EVENTSTREAM_CREATE_PUBLICATION,
    replicaIdentity: e.EVENTSTREAM_REPLICA_IDENTITY,
    alterReplicaIdentity: e.EVENTSTREAM_ALTER_REPLICA_IDENTITY,
    statusIntervalMs: e.EVENTSTREAM_STATUS_INTERVAL_SECONDS * 1000,
    kafka: {
      brokers: e.KAFKA_BROKERS.split(",").map((b) => b.trim()).filter((b) => b !== ""),
      clientId: e.KAFKA_CLIENT_ID,
      ssl: e.KAFKA_SSL ? { ca: kafkaCa } : null,
      sasl: e.KAFKA_SASL_MECHANISM ? { mechanism: e.KAFKA_SASL_MECHANISM, username: e.KAFKA_SASL_USERNAME ?? "", password: e.KAFKA_SASL_PASSWORD ?? "" } : null,
    },
    topic: e.EVENTSTREAM_TOPIC,
    topicTemplate: template === "" ? null : template,
    createTopics: e.EVENTSTREAM_CREATE_TOPICS,
    topicPartitions: e.EVENTSTREAM_TOPIC_PARTITIONS,
    topicReplicationFactor: e.EVENTSTREAM_TOPIC_REPLICATION_FACTOR,
    batchMaxEvents: e.EVENTSTREAM_BATCH_MAX_EVENTS,
    batchMaxBytes: e.EVENTSTREAM_BATCH_MAX_BYTES,
    delivery: e.EVENTSTREAM_DELIVERY,
    checkpointTopic: e.EVENTSTREAM_CHECKPOINT_TOPIC,
    gapDetection: e.EVENTSTREAM_GAP_DETECTION,
    maxMessageBytes: e.EVENTSTREAM_MAX_MESSAGE_BYTES,
    deadLetterTopic: e.EVENTSTREAM_DEAD_LETTER_TOPIC ?? null,
    maxInflightEvents: e.EVENTSTREAM_MAX_INFLIGHT_EVENTS,
    maxInflightBytes: e.EVENTSTREAM_MAX_INFLIGHT_BYTES,
    stateCacheSize: e.EVENTSTREAM_STATE_CACHE_SIZE,
    restartReadEvents: e.EVENTSTREAM_RESTART_READ_EVENTS,
    xcomKey: e.EVENTSTREAM_NOTIFICATIONS ? e.EVENTSTREAM_XCOM_KEY : null,
    notificationRawMaxBytes: e.EVENTSTREAM_NOTIFICATION_RAW_MAX_BYTES,
    shutdownTimeoutMs: e.EVENTSTREAM_SHUTDOWN_TIMEOUT_SECONDS * 1000,
    logLevel: e.LOG_LEVEL,
  };
}

/**
 * `NAME="value" (from .env)`: the value as given, so an operator sees what was refused and where it
 * came from; a password's value is never shown.
 */
function refusedValue(key: string, value: string | undefined, dotEnv: ReadonlyMap<string, string>): string {
  const where = dotEnv.has(key) ? `from ${dotEnv.get(key)}` : "from the environment";
  if (value === undefined) return `${key} (unset)`;
  return `${key}=${SECRET.test(key) ? "<hidden>" : JSON.stringify(value)} (${where})`;
}

/** EVENTSTREAM_* names that are neither a setting nor the project's tooling's (TOOLING_NAMES). */
export function unknownSettings(names: Iterable<string>): string[] {
  const known = new Set([...SETTING_NAMES, ...TOOLING_NAMES]);
  return [...names].filter((n) => n.startsWith("EVENTSTREAM_") && !known.has(n) && !TOOLING_PREFIXES.some((p) => n.startsWith(p))).sort();
}

/**
 * The settings nearest to a misspelt name by edit distance: the nearest, and up to `n` in all that are
 * at most two edits further from it (a list of every setting would hide the one meant).
 */
export function closestSettings(name: string, n = 3): string[] {
  // Also without the prefix: EVENTSTREAM_KAFKA_BROKERS means KAFKA_BROKERS.
  const bare = name.replace(/^EVENTSTREAM_/, "");
  const ranked = SETTING_NAMES.map((s) => ({ s, d: Math.min(editDistance(name, s), editDistance(bare, s)) })).sort((a, b) => a.d - b.d || a.s.localeCompare(b.s));
  const nearest = ranked[0]!.d;
  return ranked
    .filter((x) => x.d <= nearest + 2)
    .slice(0, n)
    .map((x) => x.s);
}

/** Levenshtein distance: insertions, deletions and substitutions of one character each cost 1. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * Reads a CA file named by `variable`; on failure adds a line to `problems`. The path is echoed (it
 * is no secret, and the operator needs to see which file was meant); the content is not.
 */
function readCaFile(variable: string, path: string, whose: string, problems: string[]): PemFile | null {
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code ?? "unreadable";
    problems.push(`  ${variable}: cannot read ${path} (${code}); set it to the PEM file of the CA that signed ${whose} certificate`);
    return null;
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    problems.push(`  ${variable}: ${path} holds no PEM certificate ("-----BEGIN CERTIFICATE-----"); set it to the PEM file of the CA that signed ${whose} certificate`);
    return null;
  }
  return { path, pem };
}

/**
 * Reads `.env` into process.env (existing variables win), when the file exists, and remembers which
 * names it set so loadConfig can say that a refused value came from the file.
 */
export function loadDotEnv(path = ".env"): void {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e: unknown) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new ConfigError(`cannot read ${path}`, { cause: e });
  }
  for (const [k, v] of Object.entries(parseEnv(text))) {
    if (k in process.env) continue;
    process.env[k] = v;
    fromDotEnv.set(k, path);
  }
}

/**
 * JavaScript heap the configured bounds need at most, in MB: a baseline (code, clients, buffers
 * of one produce request) plus the state caches plus what may wait for Kafka. Calibrated on the
 * benchmark's live heap after a full collection (bench/README.md, "Memory"): ~305 B per cached
 * 3.x task instance (~212 B on 2.x) plus a tenth as many DAG runs; an event waiting for Kafka is
 * its JSON (one byte per character) plus its record.
 */
export function heapNeededMb(cfg: Pick<Config, "stateCacheSize" | "maxInflightBytes" | "maxInflightEvents" | "batchMaxBytes">): number {
  const bytes = 20 * 2 ** 20 + cfg.stateCacheSize * 400 + cfg.maxInflightBytes * 1.2 + cfg.maxInflightEvents * 200 + cfg.batchMaxBytes * 2;
  return Math.ceil(bytes / 2 ** 20);
}

/**
 * The heap limit is set when Node starts (bin/airflow-eventstream: --max-old-space-size=80), the
 * bounds later, from configuration. A limit the bounds can outgrow would end in V8 aborting the
 * process under load, in a loop; say so at start instead. Headroom of half again: V8 needs room
 * to collect in.
 */
export function checkHeapLimit(cfg: Config, heapLimitBytes: number): void {
  const need = heapNeededMb(cfg);
  const limit = Math.floor(heapLimitBytes / 2 ** 20);
  if (need * 1.5 <= limit) return;
  const suggest = Math.ceil((need * 1.5) / 16) * 16;
  throw new ConfigError(
    `EVENTSTREAM_STATE_CACHE_SIZE=${cfg.stateCacheSize}, EVENTSTREAM_MAX_INFLIGHT_EVENTS=${cfg.maxInflightEvents} and EVENTSTREAM_MAX_INFLIGHT_BYTES=${cfg.maxInflightBytes} need up to ~${need} MB of JavaScript heap plus room to collect it, but this Node allows ${limit} MB. Start it with more (NODE_OPTIONS=--max-old-space-size=${suggest}; bin/airflow-eventstream passes your NODE_OPTIONS after its own) or lower those settings`,
  );
}
