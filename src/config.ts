import { readFileSync } from "node:fs";
import { parseEnv } from "node:util";
import { z } from "zod";
import { ConfigError } from "./errors.js";
import { SETTINGS, TOOLING_NAMES, TOOLING_PREFIXES, splitGlobs } from "./config/settings.js";
import { defaultTargetAttrs, parseHostList, type PgHost } from "./source/target.js";

export { TOOLING_NAMES, TOOLING_PREFIXES } from "./config/settings.js";

/**
 * The one configuration module. Every setting is an environment variable (a `.env` file in the
 * working directory is read first, without overriding the environment), declared once in
 * src/config/settings.ts with its type, default and description; this module validates the
 * environment against that table and shapes the result into the Config the code uses.
 *
 * PostgreSQL connection settings use libpq's own names (PGHOST, PGPORT, ...), so the same
 * environment works for psql.
 */

// Object.fromEntries forgets which key holds which schema; Shape says it again, from the table, so
// Env keeps each setting's own type. Keys keep the table's order, which is the order of the problems
// a configuration error lists.
type Shape = { [K in keyof typeof SETTINGS]: (typeof SETTINGS)[K]["schema"] };

const env = z.object(Object.fromEntries(Object.entries(SETTINGS).map(([name, s]) => [name, s.schema])) as Shape);

export type Env = z.infer<typeof env>;

/** Every setting the daemon reads: the schema's own keys, so a setting added there is known here. */
export const SETTING_NAMES: readonly string[] = Object.keys(env.shape);

/** Values never shown in a message, whatever is wrong with them. */
const SECRET = /PASSWORD|SECRET|TOKEN/;

/** Names `.env` set (not the environment), and the file's path, so a message says where a value came from. */
const fromDotEnv = new Map<string, string>();

/** A CA file, read when the configuration is loaded: a wrong path is a configuration error, not a retry. */
export interface PemFile {
  path: string;
  pem: string;
}

/**
 * The configuration as the code uses it: the settings of src/config/settings.ts, grouped and in the
 * code's units, typed by configFrom below so that a setting's type is written once.
 */
export type Config = ReturnType<typeof configFrom>;

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
    (name) =>
      `  ${refused(name)}: not a setting of airflow-eventstream; did you mean ${closestSettings(name).join(", ")}? (all settings: .env.example)`,
  );
  const parsed = env.safeParse(raw);
  if (!parsed.success || unknown.length > 0) {
    const lines = (parsed.success ? [] : parsed.error.issues).map((i) => {
      const key = String(i.path[0] ?? "?");
      return `  ${refused(key)}: ${i.message}`;
    });
    throw new ConfigError(
      `invalid configuration; set these environment variables (see .env.example):\n${[...unknown, ...lines].join("\n")}`,
    );
  }
  const e = parsed.data;
  const problems: string[] = [];
  const caFiles = checkTogether(e, refused, problems);
  if (problems.length > 0) {
    throw new ConfigError(`invalid configuration; set these environment variables (see .env.example):\n${problems.join("\n")}`);
  }
  return configFrom(e, caFiles);
}

interface CaFiles {
  kafkaCa: PemFile | null;
  pgRootCert: PemFile | null;
  pgHosts: PgHost[];
}

/**
 * What one setting's schema cannot check: settings that only make sense together, and the CA files,
 * read here so that a wrong path is reported with the other problems. Adds a line to `problems` for
 * each.
 */
function checkTogether(e: Env, refused: (key: string) => string, problems: string[]): CaFiles {
  if (e.KAFKA_SASL_MECHANISM && (!e.KAFKA_SASL_USERNAME || !e.KAFKA_SASL_PASSWORD)) {
    problems.push("  KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: required with KAFKA_SASL_MECHANISM");
  }
  if (e.KAFKA_SSL_CA_FILE && !e.KAFKA_SSL) problems.push(`  ${refused("KAFKA_SSL")}: set it to true to use KAFKA_SSL_CA_FILE`);
  const kafkaCa =
    e.KAFKA_SSL && e.KAFKA_SSL_CA_FILE ? readCaFile("KAFKA_SSL_CA_FILE", e.KAFKA_SSL_CA_FILE, "the brokers'", problems) : null;
  // As libpq: with sslmode=disable the root certificate is never used, so it is not read either.
  const pgRootCert =
    e.PGSSLMODE !== "disable" && e.PGSSLROOTCERT ? readCaFile("PGSSLROOTCERT", e.PGSSLROOTCERT, "PostgreSQL's", problems) : null;
  const hostList = parseHostList(e.PGHOST, e.PGPORT);
  if ("problem" in hostList) problems.push(`  ${hostList.problem} (${refused("PGHOST")}, ${refused("PGPORT")})`);
  const template = e.EVENTSTREAM_TOPIC_TEMPLATE.trim();
  if (template !== "" && !template.includes("{dag_id}")) {
    problems.push(`  ${refused("EVENTSTREAM_TOPIC_TEMPLATE")}: must contain {dag_id}, e.g. "airflow.{dag_id}", or be empty for one topic`);
  }
  if (e.EVENTSTREAM_ON_GAP === "snapshot" && !e.EVENTSTREAM_GAP_DETECTION) {
    problems.push(`  ${refused("EVENTSTREAM_ON_GAP")}: recovering from a gap needs gap detection; remove EVENTSTREAM_GAP_DETECTION=false`);
  }
  if (e.EVENTSTREAM_DELIVERY === "exactly-once" && e.EVENTSTREAM_KAFKA_PRODUCER === "wire") {
    problems.push(
      `  ${refused("EVENTSTREAM_KAFKA_PRODUCER")}: the wire producer is not transactional; exactly-once runs on kafkajs's transactional producer (remove the setting, or EVENTSTREAM_DELIVERY=at-least-once)`,
    );
  }
  if (e.EVENTSTREAM_DELIVERY === "exactly-once" && !e.EVENTSTREAM_GAP_DETECTION) {
    problems.push(
      `  ${refused("EVENTSTREAM_GAP_DETECTION")}: exactly-once keeps and checks a checkpoint in any case; remove the setting (false is for at-least-once only)`,
    );
  }
  if (
    e.EVENTSTREAM_GAP_DETECTION &&
    (e.EVENTSTREAM_CHECKPOINT_TOPIC === e.EVENTSTREAM_TOPIC || e.EVENTSTREAM_CHECKPOINT_TOPIC === e.EVENTSTREAM_DEAD_LETTER_TOPIC)
  ) {
    problems.push(`  ${refused("EVENTSTREAM_CHECKPOINT_TOPIC")}: must be a topic of its own, not the events' or the dead-letter topic`);
  }
  const others = [e.EVENTSTREAM_TOPIC, e.EVENTSTREAM_CHECKPOINT_TOPIC, e.EVENTSTREAM_DEAD_LETTER_TOPIC];
  if (e.EVENTSTREAM_STATE_TOPIC_ENABLED && others.includes(e.EVENTSTREAM_STATE_TOPIC)) {
    problems.push(
      `  ${refused("EVENTSTREAM_STATE_TOPIC")}: must be a topic of its own, not the events', the checkpoint or the dead-letter topic`,
    );
  }
  if (e.EVENTSTREAM_ASSET_EVENTS && [...others, e.EVENTSTREAM_STATE_TOPIC].includes(e.EVENTSTREAM_ASSET_TOPIC)) {
    problems.push(
      `  ${refused("EVENTSTREAM_ASSET_TOPIC")}: must be a topic of its own, not the events', checkpoint, dead-letter or state topic`,
    );
  }
  return { kafkaCa, pgRootCert, pgHosts: "hosts" in hostList ? hostList.hosts : [] };
}

/** The validated settings shaped as the code uses them; its return type is Config. */
function configFrom(e: Env, { kafkaCa, pgRootCert, pgHosts }: CaFiles) {
  const template = e.EVENTSTREAM_TOPIC_TEMPLATE.trim();
  return {
    pg: {
      /** PGHOST/PGPORT, in order; `host` and `port` are the first, for messages that name one. */
      hosts: pgHosts,
      host: pgHosts[0]!.host,
      port: pgHosts[0]!.port,
      /** Which host to use (src/source/target.ts). */
      targetSessionAttrs: defaultTargetAttrs(pgHosts, e.PGTARGETSESSIONATTRS),
      user: e.PGUSER,
      password: e.PGPASSWORD,
      database: e.PGDATABASE,
      sslmode: e.PGSSLMODE,
      /** PGSSLROOTCERT; null: Node.js's CAs. Only read when sslmode is not disable. */
      sslRootCert: pgRootCert,
    },
    airflowSchema: e.EVENTSTREAM_AIRFLOW_SCHEMA,
    slot: e.EVENTSTREAM_SLOT,
    /** auto: on where the server is 17+ (src/source/failover-slot.ts). */
    failoverSlot: e.EVENTSTREAM_FAILOVER_SLOT,
    publication: e.EVENTSTREAM_PUBLICATION,
    createSlot: e.EVENTSTREAM_CREATE_SLOT,
    createPublication: e.EVENTSTREAM_CREATE_PUBLICATION,
    /** "full": task_instance and dag_run must be REPLICA IDENTITY FULL (see EVENTSTREAM_REPLICA_IDENTITY). */
    replicaIdentity: e.EVENTSTREAM_REPLICA_IDENTITY,
    alterReplicaIdentity: e.EVENTSTREAM_ALTER_REPLICA_IDENTITY,
    statusIntervalMs: e.EVENTSTREAM_STATUS_INTERVAL_SECONDS * 1000,
    kafka: {
      brokers: e.KAFKA_BROKERS.split(",")
        .map((b) => b.trim())
        .filter((b) => b !== ""),
      clientId: e.KAFKA_CLIENT_ID,
      /** null: no TLS; ca null: Node.js's CAs. */
      ssl: e.KAFKA_SSL ? { ca: kafkaCa } : null,
      sasl: e.KAFKA_SASL_MECHANISM
        ? { mechanism: e.KAFKA_SASL_MECHANISM, username: e.KAFKA_SASL_USERNAME ?? "", password: e.KAFKA_SASL_PASSWORD ?? "" }
        : null,
      /** Which producer writes events and checkpoints: unset, wire in at-least-once (exactly-once is always kafkajs's). */
      producer: e.EVENTSTREAM_KAFKA_PRODUCER ?? (e.EVENTSTREAM_DELIVERY === "exactly-once" ? "kafkajs" : "wire"),
    },
    topic: e.EVENTSTREAM_TOPIC,
    topicTemplate: template === "" ? null : template,
    createTopics: e.EVENTSTREAM_CREATE_TOPICS,
    topicPartitions: e.EVENTSTREAM_TOPIC_PARTITIONS,
    topicReplicationFactor: e.EVENTSTREAM_TOPIC_REPLICATION_FACTOR,
    batchMaxEvents: e.EVENTSTREAM_BATCH_MAX_EVENTS,
    batchMaxBytes: e.EVENTSTREAM_BATCH_MAX_BYTES,
    delivery: e.EVENTSTREAM_DELIVERY,
    /** Where the checkpoints go (used when `gapDetection`, always true in exactly-once). */
    checkpointTopic: e.EVENTSTREAM_CHECKPOINT_TOPIC,
    /** A checkpoint with acked_lsn is kept, gates what is acknowledged to PostgreSQL, and is checked against the slot at start. */
    gapDetection: e.EVENTSTREAM_GAP_DETECTION,
    onGap: e.EVENTSTREAM_ON_GAP,
    /** null: no initial snapshot; days null: active runs only. */
    initialSnapshot: initialSnapshot(e.EVENTSTREAM_INITIAL_SNAPSHOT),
    maxMessageBytes: e.EVENTSTREAM_MAX_MESSAGE_BYTES,
    /** null: an oversized event stops the daemon. */
    deadLetterTopic: e.EVENTSTREAM_DEAD_LETTER_TOPIC ?? null,
    /** Confluent-compatible schema registry (src/sink/schema-registry.ts); null: values are plain JSON. */
    schemaRegistryUrl: e.EVENTSTREAM_SCHEMA_REGISTRY_URL ?? null,
    /** The compacted current-state topic (src/sink/state-topic.ts); null: not kept. */
    stateTopic: e.EVENTSTREAM_STATE_TOPIC_ENABLED ? e.EVENTSTREAM_STATE_TOPIC : null,
    /** CloudEvents headers on event records (src/sink/cloudevents.ts); null: off. source null: made from the server's identity. */
    cloudEvents: e.EVENTSTREAM_CLOUDEVENTS === "binary" ? { source: e.EVENTSTREAM_CLOUDEVENTS_SOURCE ?? null } : null,
    maxInflightEvents: e.EVENTSTREAM_MAX_INFLIGHT_EVENTS,
    maxInflightBytes: e.EVENTSTREAM_MAX_INFLIGHT_BYTES,
    stateCacheSize: e.EVENTSTREAM_STATE_CACHE_SIZE,
    /** Decode and model on a worker thread (src/loop/thread.ts). */
    modelThread: e.EVENTSTREAM_MODEL_THREAD,
    snapshotChunkRows: e.EVENTSTREAM_SNAPSHOT_CHUNK_ROWS,
    snapshotRowsPerSecond: e.EVENTSTREAM_SNAPSHOT_ROWS_PER_SECOND,
    restartReadEvents: e.EVENTSTREAM_RESTART_READ_EVENTS,
    /** null: XComs are not captured. */
    xcomKey: e.EVENTSTREAM_NOTIFICATIONS ? e.EVENTSTREAM_XCOM_KEY : null,
    /** null: asset events are not captured (EVENTSTREAM_ASSET_EVENTS=false). */
    assetTopic: e.EVENTSTREAM_ASSET_EVENTS ? e.EVENTSTREAM_ASSET_TOPIC : null,
    notificationRawMaxBytes: e.EVENTSTREAM_NOTIFICATION_RAW_MAX_BYTES,
    /** Which events are published (src/airflow/filter.ts); empty lists: all. */
    filters: {
      includeDags: splitGlobs(e.EVENTSTREAM_INCLUDE_DAGS),
      excludeDags: splitGlobs(e.EVENTSTREAM_EXCLUDE_DAGS),
      includeTasks: splitGlobs(e.EVENTSTREAM_INCLUDE_TASKS),
      excludeTasks: splitGlobs(e.EVENTSTREAM_EXCLUDE_TASKS),
    },
    shutdownTimeoutMs: e.EVENTSTREAM_SHUTDOWN_TIMEOUT_SECONDS * 1000,
    logLevel: e.LOG_LEVEL,
    /** The metrics and health endpoint (src/operate/); port 0: off. */
    /** `serve`'s insights writer (src/serve/insights/). */
    insights: {
      enabled: e.EVENTSTREAM_SERVE_INSIGHTS,
      topic: e.EVENTSTREAM_SERVE_INSIGHTS_TOPIC,
      groupId: e.EVENTSTREAM_SERVE_INSIGHTS_GROUP,
      sessionTimeoutMs: e.EVENTSTREAM_SERVE_INSIGHTS_SESSION_TIMEOUT_SECONDS * 1000,
    },
    http: { port: e.EVENTSTREAM_HTTP_PORT, host: e.EVENTSTREAM_HTTP_HOST, stallMs: e.EVENTSTREAM_READY_STALL_SECONDS * 1000 },
    /** `airflow-eventstream serve` (src/serve/); the thresholds are parsed by src/serve/thresholds.ts. */
    serve: {
      port: e.EVENTSTREAM_SERVE_PORT,
      host: e.EVENTSTREAM_SERVE_HOST,
      maxRuns: e.EVENTSTREAM_SERVE_MAX_RUNS,
      recentRuns: e.EVENTSTREAM_SERVE_RECENT_RUNS,
      historyPerRun: e.EVENTSTREAM_SERVE_HISTORY_PER_RUN,
      stuckSeconds: e.EVENTSTREAM_SERVE_STUCK_SECONDS,
      stuckDags: e.EVENTSTREAM_SERVE_STUCK_DAGS,
      maxWaiters: e.EVENTSTREAM_SERVE_MAX_WAITERS,
      maxStreams: e.EVENTSTREAM_SERVE_MAX_STREAMS,
      eventBuffer: e.EVENTSTREAM_SERVE_EVENT_BUFFER,
    },
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
  const ranked = SETTING_NAMES.map((s) => ({ s, d: Math.min(editDistance(name, s), editDistance(bare, s)) })).sort(
    (a, b) => a.d - b.d || a.s.localeCompare(b.s),
  );
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
    problems.push(
      `  ${variable}: ${path} holds no PEM certificate ("-----BEGIN CERTIFICATE-----"); set it to the PEM file of the CA that signed ${whose} certificate`,
    );
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
 * of one produce request) plus the state caches plus what may wait for Kafka. Measured (live heap
 * after a full collection, at the end of `node bench/compare.ts --systems daemon --changes 300000`:
 * Airflow 3.x, ~90,000 task instances, with and without EVENTSTREAM_XCOM_KEY): 21 MB with a
 * 1,000-entry cache. The task-instance states and XCom tries are outside the heap
 * (src/airflow/state-table.ts); per cached task instance the heap keeps a tenth of a run's context
 * (runCacheSize) and, after a restart, the names read back until their rows are seen: counted as
 * 100 B. (Heap snapshots 4.5 s into the same drain: V8's own heap 27.9 MB with 25,000 entries
 * against ~28 MB with 1,000.)
 * An event waiting for Kafka is its JSON (one byte per character) plus its record; the
 * publisher's queue keeps up to 4,096 sent records more until it compacts (src/sink/publisher.ts),
 * ~1 KB each. The sum is an upper bound: the same drain's live heap peaked at ~36 MB with the
 * defaults, for which this says 51.
 */
export function heapNeededMb(cfg: Pick<Config, "stateCacheSize" | "maxInflightBytes" | "maxInflightEvents" | "batchMaxBytes">): number {
  const bytes =
    21 * 2 ** 20 +
    cfg.stateCacheSize * 100 +
    cfg.maxInflightBytes * 1.2 +
    cfg.maxInflightEvents * 200 +
    cfg.batchMaxBytes * 2 +
    4096 * 1024;
  return Math.ceil(bytes / 2 ** 20);
}

/** Room V8 needs above what is live to collect in without thrashing: a quarter more. */
export const HEAP_HEADROOM = 1.25;

/**
 * The heap limit is set when Node starts (bin/airflow-eventstream: --max-old-space-size=60), the
 * bounds later, from configuration. A limit the bounds can outgrow would end in V8 aborting the
 * process under load, in a loop; say so at start instead.
 */
export function checkHeapLimit(cfg: Config, heapLimitBytes: number): void {
  const need = heapNeededMb(cfg);
  const limit = Math.floor(heapLimitBytes / 2 ** 20);
  if (need * HEAP_HEADROOM <= limit) return;
  const suggest = Math.ceil((need * HEAP_HEADROOM) / 16) * 16;
  throw new ConfigError(
    `EVENTSTREAM_STATE_CACHE_SIZE=${cfg.stateCacheSize}, EVENTSTREAM_MAX_INFLIGHT_EVENTS=${cfg.maxInflightEvents} and EVENTSTREAM_MAX_INFLIGHT_BYTES=${cfg.maxInflightBytes} need up to ~${need} MB of JavaScript heap plus room to collect it, but this Node allows ${limit} MB. Start it with more (NODE_OPTIONS=--max-old-space-size=${suggest}; bin/airflow-eventstream passes your NODE_OPTIONS after its own) or lower those settings`,
  );
}

/** EVENTSTREAM_INITIAL_SNAPSHOT: "none" | "active" | "<N>d". */
function initialSnapshot(v: string): { days: number | null } | null {
  if (v === "none") return null;
  if (v === "active") return { days: null };
  return { days: Number.parseInt(v, 10) };
}
