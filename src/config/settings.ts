import { z } from "zod";

/**
 * Every setting, declared once: its environment variable, its zod type and default, the text an
 * operator reads, and its group. The environment schema (src/config.ts) is built from this table, and
 * `npm run config:docs` (scripts/gen-config.ts) writes .env.example and docs/configuration.md from it;
 * a unit test fails when those files drift from what the generator would write.
 *
 * This file imports nothing of the project, so Node runs the generator on it as TypeScript, without a
 * build. Descriptions are Markdown (backticks for names and values); .env.example gets them without
 * the backticks.
 */

/** Said once at the top of .env.example. */
export const ENV_EXAMPLE_INTRO =
  "airflow-eventstream settings. Copy to .env (read at start; variables already in the environment win). Every value below is the default; an empty value is unset. Any other EVENTSTREAM_* name is refused at start as a misspelling (the message names the closest settings), except the project's own tooling's (docs/configuration.md).";

/**
 * Said once above the settings in docs/configuration.md; the names the project's tooling uses
 * (TOOLING_NAMES) follow the second paragraph.
 */
export const REFERENCE_INTRO = [
  "Every setting is an environment variable. A `.env` file in the working directory is read too; the environment wins over it, and a blank value counts as unset. [`.env.example`](../.env.example) lists every setting with its default.",
  'All problems are reported together at start, each with the value refused and where it came from (`PGPORT="5432x" (from .env): expected a whole number`; the values of passwords are never shown), and the daemon exits with code 2. An `EVENTSTREAM_*` name that is not a setting is an error naming the settings closest to it (`EVENTSTREAM_TOPIC_PARTITION="3": not a setting ...; did you mean EVENTSTREAM_TOPIC_PARTITIONS?`), except the names the project\'s own scripts and tests use, so that a development shell can start the daemon:',
] as const;

/** The groups, in the order the generated files list them. `about` is said once, above the group. */
export const GROUPS = {
  postgres: {
    title: "PostgreSQL connection",
    about: "Airflow's metadata database, with libpq's own variable names, so the same environment works for psql.",
  },
  capture: { title: "Replication slot, publication and replica identity", about: "" },
  kafka: { title: "Kafka connection", about: "" },
  topics: { title: "Topics and records", about: "" },
  delivery: { title: "Delivery, checkpoints and gaps", about: "" },
  memory: {
    title: "Flow control and memory",
    about:
      "The in-flight limits and the state cache bound the JavaScript heap; the daemon refuses at start limits that do not fit the heap Node was given (`bin/airflow-eventstream`: 60 MB old space; more with `NODE_OPTIONS=--max-old-space-size=N`), saying what to set.",
  },
  notifications: { title: "Notifications (XCom)", about: "" },
  filters: {
    title: "Filters",
    about:
      "Which DAGs and tasks are published (docs/operations.md#filters). Each list is comma-separated globs matched against the whole id, case-sensitive: `*` any run of characters, `?` one character, every other character itself (`etl_*,report`). An empty include list includes everything; an exclude match wins over an include match. A filtered change is still read and acknowledged, never published.",
  },
  process: { title: "Process", about: "" },
  serve: {
    title: "Query service (`airflow-eventstream serve`)",
    about:
      "Read only by `airflow-eventstream serve` (docs/serve.md): it reads the topics the daemon writes, with the Kafka and topic settings above.",
  },
  insights: {
    title: "Insights (serve)",
    about:
      "`airflow-eventstream serve` derives insights (run_completed, task_stuck, task_unstuck, task_failed_final, run_cleared, task_cleared) from the events topic onto an insights topic, exactly once across its replicas (docs/insights.md).",
  },
} as const;

export type GroupId = keyof typeof GROUPS;

export const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"], { message: "expected true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");

export const int = (min: number, max: number) =>
  z.coerce
    .number({ message: "expected a whole number" })
    .int({ message: "expected a whole number" })
    .min(min, { message: `must be at least ${min}` })
    .max(max, { message: `must be at most ${max}` });

export const identifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, {
  message: "must be a lower-case PostgreSQL identifier: letters, digits and _, starting with a letter or _",
});

export const topicName = z.string().regex(/^[a-zA-Z0-9._-]{1,249}$/, {
  message: "must be a Kafka topic name: letters, digits, '.', '_' and '-', at most 249 characters",
});

/** A glob item: Airflow's id characters (letters, digits, `_`, `.`, `-`) and the wildcards `*` and `?`. */
const GLOB_ITEM = /^[\p{L}\p{M}\p{N}_.\-*?]+$/u;

/** A comma-separated list of globs as its items, trimmed; "" is no item. */
export function splitGlobs(value: string): string[] {
  return value.trim() === "" ? [] : value.split(",").map((g) => g.trim());
}

/** EVENTSTREAM_INCLUDE_DAGS and the like: comma-separated globs (src/airflow/filter.ts), every item checked. */
export const globList = z.string().superRefine((value, ctx) => {
  splitGlobs(value).forEach((item, i) => {
    const at = `item ${i + 1}`;
    if (item === "") ctx.addIssue({ code: "custom", message: `${at} is empty; separate globs with single commas, e.g. "etl_*,report"` });
    else if (!GLOB_ITEM.test(item))
      ctx.addIssue({
        code: "custom",
        message: `${at} "${item}" is not a glob of Airflow ids: use letters, digits, '_', '.', '-' and the wildcards * and ? only ([...], {...} and other characters are not supported)`,
      });
  });
});

export interface Setting {
  group: GroupId;
  /** Validation and default; `.optional()` for a setting whose absence means something. */
  schema: z.ZodType;
  about: string;
}

/*
 * The order of the entries is the order of the schema's keys, and so of the problems listed in a
 * configuration error; the generated files list them by group.
 */
export const SETTINGS = {
  PGHOST: {
    group: "postgres",
    schema: z.string().min(1).default("127.0.0.1"),
    about:
      "Host of Airflow's metadata database, or several separated by commas (as libpq: a primary and its standbys), tried in order until one matches `PGTARGETSESSIONATTRS` (docs/failover.md).",
  },
  PGPORT: {
    group: "postgres",
    schema: z
      .string()
      .regex(/^\s*\d{1,5}\s*(,\s*\d{1,5}\s*)*$/, {
        message: "expected a whole number (a port, 1-65535), or one per host in PGHOST separated by commas",
      })
      .default("5432"),
    about: "Port of Airflow's metadata database: one for every host in `PGHOST`, or one per host, separated by commas (as libpq).",
  },
  PGTARGETSESSIONATTRS: {
    group: "postgres",
    schema: z.enum(["any", "read-write", "read-only", "primary", "standby", "prefer-standby"]).optional(),
    about:
      "Which of the `PGHOST` hosts to use, with libpq's values: `any`, `read-write`, `read-only`, `primary`, `standby`, `prefer-standby`. Unset: `any` with one host (no extra query), `read-write` with several, the server Airflow writes to (after a failover the old primary may come back as a standby, first in the list).",
  },
  PGUSER: {
    group: "postgres",
    schema: z.string().min(1).default("postgres"),
    about:
      "Role the daemon connects as: needs `REPLICATION` (or superuser) and `SELECT` on the captured tables (`task_instance`, `dag_run`, and `xcom` with notifications).",
  },
  PGPASSWORD: { group: "postgres", schema: z.string().optional(), about: "Password of `PGUSER`. Never logged." },
  PGDATABASE: { group: "postgres", schema: z.string().min(1).default("airflow"), about: "Airflow's metadata database." },
  PGSSLMODE: {
    group: "postgres",
    schema: z.enum(["disable", "require", "verify-ca", "verify-full"]).default("disable"),
    about:
      "TLS to PostgreSQL, as libpq: `disable`; `require` (encrypted; the certificate is not checked unless `PGSSLROOTCERT` is set, then as `verify-ca`); `verify-ca` (certificate signed by a trusted CA); `verify-full` (that, and it names `PGHOST`).",
  },
  PGSSLROOTCERT: {
    group: "postgres",
    schema: z.string().optional(),
    about:
      "PEM file of the CA(s) that signed PostgreSQL's certificate. Unset: the CAs Node.js trusts (Mozilla's list). Read at start unless `PGSSLMODE=disable` (libpq ignores it then): a missing or non-PEM file is a configuration error.",
  },
  EVENTSTREAM_AIRFLOW_SCHEMA: { group: "capture", schema: identifier.default("public"), about: "Schema holding Airflow's tables." },
  EVENTSTREAM_SLOT: {
    group: "capture",
    schema: identifier.default("airflow_eventstream"),
    about: "Logical replication slot (pgoutput) the daemon reads and acknowledges.",
  },
  EVENTSTREAM_FAILOVER_SLOT: {
    group: "capture",
    schema: z.enum(["auto", "true", "false"], { message: "expected auto, true or false" }).default("auto"),
    about:
      "Create the slot as a failover slot (PostgreSQL 17+), which standbys with `sync_replication_slots=on` keep a copy of, so that the daemon continues from a promoted standby without a gap (docs/failover.md). `auto`: on where the server is 17 or later: the flag costs nothing until a standby syncs the slot, and a standby added later can then take over. `true`: required (an error before 17). `false`: off. An existing slot whose flag differs is altered at start when no one streams from it.",
  },
  EVENTSTREAM_PUBLICATION: {
    group: "capture",
    schema: identifier.default("airflow_eventstream"),
    about: "Publication of the captured tables: `task_instance`, `dag_run` (and `xcom` with notifications).",
  },
  EVENTSTREAM_CREATE_SLOT: {
    group: "capture",
    schema: bool.default(true),
    about: "Create the slot when it is missing. When false, a missing slot is an error that gives the SQL to run.",
  },
  EVENTSTREAM_CREATE_PUBLICATION: {
    group: "capture",
    schema: bool.default(true),
    about:
      "Create (or extend) the publication when it is missing; needs ownership of the tables. When false, a missing publication is an error that gives the SQL to run.",
  },
  // Named after PostgreSQL's `ALTER TABLE ... REPLICA IDENTITY DEFAULT | FULL`, so the setting reads
  // as the SQL it stands for.
  EVENTSTREAM_REPLICA_IDENTITY: {
    group: "capture",
    schema: z.enum(["default", "full"]).default("default"),
    about:
      "`default`: Airflow's tables as they are; `previous_state` comes from the daemon's memory (unknown for a row's first change after a start). `full`: `task_instance` and `dag_run` must be `REPLICA IDENTITY FULL`, so every UPDATE and DELETE carries the old row and `previous_state` is exact across restarts, for ~20% more WAL.",
  },
  EVENTSTREAM_ALTER_REPLICA_IDENTITY: {
    group: "capture",
    schema: bool.default(true),
    about:
      "With `EVENTSTREAM_REPLICA_IDENTITY=full`: run `ALTER TABLE ... REPLICA IDENTITY FULL` on the tables that lack it (needs ownership; takes a brief ACCESS EXCLUSIVE lock). When false, or not the owner, such a table is an error that gives the SQL to run.",
  },
  EVENTSTREAM_STATUS_INTERVAL_SECONDS: {
    group: "capture",
    schema: int(1, 3600).default(10),
    about: "Seconds between status updates to PostgreSQL; keep it below the server's `wal_sender_timeout` (60 s by default).",
  },

  KAFKA_BROKERS: { group: "kafka", schema: z.string().min(1).default("127.0.0.1:9092"), about: "Bootstrap brokers, comma-separated." },
  KAFKA_CLIENT_ID: { group: "kafka", schema: z.string().min(1).default("airflow-eventstream"), about: "Kafka client id." },
  KAFKA_SSL: {
    group: "kafka",
    schema: bool.default(false),
    about: "TLS to Kafka; the brokers' certificates are always checked, host names included.",
  },
  KAFKA_SSL_CA_FILE: {
    group: "kafka",
    schema: z.string().optional(),
    about:
      "PEM file of the CA(s) that signed the brokers' certificates (needs `KAFKA_SSL=true`). Unset: the CAs Node.js trusts (Mozilla's list). Read at start: a missing or non-PEM file is a configuration error.",
  },
  KAFKA_SASL_MECHANISM: {
    group: "kafka",
    schema: z.enum(["plain", "scram-sha-256", "scram-sha-512"]).optional(),
    about: "SASL mechanism, with `KAFKA_SASL_USERNAME` and `KAFKA_SASL_PASSWORD`. Unset: no SASL.",
  },
  KAFKA_SASL_USERNAME: { group: "kafka", schema: z.string().optional(), about: "SASL user name." },
  KAFKA_SASL_PASSWORD: { group: "kafka", schema: z.string().optional(), about: "SASL password. Never logged." },
  EVENTSTREAM_KAFKA_PRODUCER: {
    group: "kafka",
    schema: z.enum(["kafkajs", "wire"]).optional(),
    about:
      "The producer of events and checkpoints: `wire`, the daemon's own idempotent producer (src/sink/wire: the one request it sends, encoded without kafkajs's per-record cost, ~8x less CPU per record; bench/README.md), or `kafkajs`. Unset: `wire` in at-least-once delivery; exactly-once always uses kafkajs's transactional producer, so `wire` with `EVENTSTREAM_DELIVERY=exactly-once` is a configuration error.",
  },
  EVENTSTREAM_TOPIC: {
    group: "topics",
    schema: topicName.default("airflow.events"),
    about: "The topic for every event (key: `dag_id`), used when `EVENTSTREAM_TOPIC_TEMPLATE` is empty.",
  },
  EVENTSTREAM_ASSET_EVENTS: {
    group: "topics",
    schema: bool.default(false),
    about:
      "Publish an `asset_event` event for every row Airflow inserts into `asset_event` (3.x) or `dataset_event` (2.x), on `EVENTSTREAM_ASSET_TOPIC` keyed by the asset's URI (docs/events.md). Adds those tables and `asset`/`dataset` to the publication, and the daemon's role needs SELECT on them. Off by default so that an upgrade changes no publication or grant: turning it on with `EVENTSTREAM_CREATE_PUBLICATION=false` needs the owner's `ALTER PUBLICATION ... ADD TABLE` first (the start-up error gives it).",
  },
  EVENTSTREAM_ASSET_TOPIC: {
    group: "topics",
    schema: topicName.default("airflow.asset_events"),
    about:
      "The topic of `asset_event` events (key: the asset's URI), with `EVENTSTREAM_ASSET_EVENTS=true`. Also with `EVENTSTREAM_TOPIC_TEMPLATE`: asset events belong to no DAG.",
  },
  EVENTSTREAM_TOPIC_TEMPLATE: {
    group: "topics",
    schema: z.string().default(""),
    about:
      "One topic per DAG instead: a template containing `{dag_id}`, e.g. `airflow.{dag_id}`. A name Kafka would refuse is sanitised and ends in a hash, so distinct DAGs never share a topic. Empty: one topic.",
  },
  EVENTSTREAM_CREATE_TOPICS: {
    group: "topics",
    schema: bool.default(true),
    about: "Create missing topics. When false, a missing topic is an error naming it.",
  },
  EVENTSTREAM_TOPIC_PARTITIONS: {
    group: "topics",
    schema: int(1, 10_000).default(6),
    about: "Partitions of the topics the daemon creates.",
  },
  EVENTSTREAM_TOPIC_REPLICATION_FACTOR: {
    group: "topics",
    schema: int(-1, 32).default(-1),
    about: "Replication factor of the topics the daemon creates (-1: the broker's default).",
  },
  // The record's overhead is computed in src/sink/batch.ts.
  EVENTSTREAM_MAX_MESSAGE_BYTES: {
    group: "topics",
    schema: int(1024, 100 * 1024 * 1024).default(1_000_000),
    about:
      "Largest record, in bytes as sent: the event's UTF-8 JSON, its key and the record's overhead (so multi-byte text counts as it is sent). Keep it under the topic's `max.message.bytes` (Kafka's default is 1 MiB).",
  },
  EVENTSTREAM_DEAD_LETTER_TOPIC: {
    group: "topics",
    schema: topicName.optional(),
    about:
      "Where an event over `EVENTSTREAM_MAX_MESSAGE_BYTES` goes, as a summary with its position. Unset: the daemon stops, naming the row.",
  },
  EVENTSTREAM_STATE_TOPIC_ENABLED: {
    group: "topics",
    schema: bool.default(true),
    about:
      "Keep the current-state topic: the latest event of every task instance and DAG run under its identity, written with the events (docs/backfill.md). `false`: events only.",
  },
  EVENTSTREAM_STATE_TOPIC: {
    group: "topics",
    schema: topicName.default("airflow.state"),
    about:
      "The current-state topic: compacted, created with `EVENTSTREAM_TOPIC_PARTITIONS` partitions, `cleanup.policy=compact` and `delete.retention.ms` of 24 hours; an existing one that is not compacted is refused at start. Must be a topic of its own.",
  },
  EVENTSTREAM_SCHEMA_REGISTRY_URL: {
    group: "topics",
    schema: z.url({ protocol: /^https?$/, message: "expected an http:// or https:// URL" }).optional(),
    about:
      "A Confluent-compatible schema registry (its API root, e.g. `http://registry:8081` or Apicurio's `.../apis/ccompat/v7`). Set: the event JSON Schema is registered at start and every event and current-state value is sent in the registry's wire format (a zero byte, the 4-byte schema id, the JSON); the 5 bytes count toward `EVENTSTREAM_MAX_MESSAGE_BYTES`. Unset: plain JSON (docs/schema-registry.md).",
  },
  EVENTSTREAM_BATCH_MAX_BYTES: {
    group: "topics",
    schema: int(1024, 100 * 1024 * 1024).default(900_000),
    about:
      "Largest produce request, in bytes of event JSON (the current-state records counted apart, with the same cap). Keep it under the topics' `max.message.bytes` (1 MiB by default): one partition's share of a request is one record batch, which Kafka refuses whole over it (the daemon then retries, acknowledging nothing further, and logs which limits to bring together).",
  },
  EVENTSTREAM_BATCH_MAX_EVENTS: {
    group: "topics",
    schema: int(1, 100_000).default(2_000),
    about: "Largest number of events in one produce request.",
  },
  EVENTSTREAM_CLOUDEVENTS: {
    group: "topics",
    schema: z.enum(["off", "binary"]).default("off"),
    about:
      "`binary`: every event record carries CloudEvents 1.0 headers (`ce_id`, `ce_source`, `ce_type`, `ce_subject`, `ce_time`, ...), binary content mode of the Kafka binding; the value, key and partition stay as they are (docs/events.md#cloudevents). The headers count toward `EVENTSTREAM_MAX_MESSAGE_BYTES`. Current-state and dead-letter records get none.",
  },
  EVENTSTREAM_CLOUDEVENTS_SOURCE: {
    group: "topics",
    schema: z
      .string()
      .regex(/^[^\s]+$/, { message: "must be a URI-reference without spaces, e.g. urn:airflow-eventstream:prod" })
      .optional(),
    about:
      "The `ce_source` of every event with `EVENTSTREAM_CLOUDEVENTS=binary`, a URI-reference. Unset: `urn:airflow-eventstream:<system identifier>:<database>`, read from PostgreSQL at start.",
  },
  EVENTSTREAM_DELIVERY: {
    group: "delivery",
    schema: z.enum(["at-least-once", "exactly-once"]).default("at-least-once"),
    about:
      "`at-least-once`: a crash may publish the unacknowledged tail again (same positions). `exactly-once`: each batch is a Kafka transaction with a checkpoint; consumers reading with `isolation.level=read_committed` see every event once.",
  },
  EVENTSTREAM_CHECKPOINT_TOPIC: {
    group: "delivery",
    schema: topicName.default("airflow-eventstream.checkpoints"),
    about:
      "Compacted topic holding one checkpoint per slot (key: the slot name), created with 1 partition when topic creation is on. Used in both modes: exactly-once skips by it, and both detect a lost slot by it (`EVENTSTREAM_GAP_DETECTION`). Must be a topic of its own, not the events' or the dead-letter topic.",
  },
  EVENTSTREAM_GAP_DETECTION: {
    group: "delivery",
    schema: bool.default(true),
    about:
      "Stop (exit code 2) when the slot was invalidated, dropped, recreated or advanced behind the daemon's back: events were lost. Needs the checkpoint topic. `false` (at-least-once only): no checkpoint topic, and a dropped, recreated or advanced slot goes unnoticed, so events are lost silently; an invalidated slot (`wal_status` lost) is still refused.",
  },

  EVENTSTREAM_ON_GAP: {
    group: "delivery",
    schema: z.enum(["stop", "snapshot"]).default("stop"),
    about:
      "What a detected gap does (`EVENTSTREAM_GAP_DETECTION`). `stop`: exit with code 2 and a message saying how to recover. `snapshot`: recover without an operator: a `stream_gap` event (both LSNs) goes to every partition, the gap is accepted (the checkpoint deleted; an invalidated slot dropped, a missing one created) and every row of `dag_run` and `task_instance` is snapshotted, so consumers converge to the database's state (docs/backfill.md). Creating a slot needs `EVENTSTREAM_CREATE_SLOT`.",
  },
  EVENTSTREAM_INITIAL_SNAPSHOT: {
    group: "delivery",
    schema: z
      .string()
      .regex(/^(none|active|[1-9][0-9]{0,4}d)$/, { message: 'expected none, active, or a number of days such as "7d"' })
      .default("none"),
    about:
      "On the first start of a slot (the daemon creates it and finds no checkpoint), snapshot what already exists, so runs under way appear: `none`; `active` (runs queued or running, and their task instances); `Nd` (runs started or queued in the last N days, or not yet either, and their task instances).",
  },

  EVENTSTREAM_MAX_INFLIGHT_EVENTS: {
    group: "memory",
    schema: int(1, 10_000_000).default(10_000),
    about: "Reading from PostgreSQL pauses while this many events wait for Kafka's acknowledgement.",
  },
  EVENTSTREAM_MAX_INFLIGHT_BYTES: {
    group: "memory",
    schema: int(1024, 4 * 1024 * 1024 * 1024).default(8 * 1024 * 1024),
    about: "Reading from PostgreSQL also pauses while the events waiting for Kafka's acknowledgement reach this many bytes of JSON.",
  },
  EVENTSTREAM_NOTIFICATIONS: {
    group: "notifications",
    schema: bool.default(true),
    about: "Publish a notification event when a task pushes an XCom under `EVENTSTREAM_XCOM_KEY` (adds `xcom` to the publication).",
  },
  EVENTSTREAM_XCOM_KEY: {
    group: "notifications",
    schema: z.string().min(1).default("eventstream"),
    about: "The XCom key whose values become notification events.",
  },
  EVENTSTREAM_NOTIFICATION_RAW_MAX_BYTES: {
    group: "notifications",
    schema: int(0, 1024 * 1024).default(4096),
    about: "Largest raw value, in bytes, carried by a notification whose value failed validation.",
  },
  EVENTSTREAM_INCLUDE_DAGS: {
    group: "filters",
    schema: globList.default(""),
    about:
      "Publish only the events of DAGs whose `dag_id` matches one of these globs (task instances, DAG runs, notifications). Empty: every DAG.",
  },
  EVENTSTREAM_EXCLUDE_DAGS: {
    group: "filters",
    schema: globList.default(""),
    about: "Never publish the events of DAGs whose `dag_id` matches one of these globs, even when `EVENTSTREAM_INCLUDE_DAGS` matches too.",
  },
  EVENTSTREAM_INCLUDE_TASKS: {
    group: "filters",
    schema: globList.default(""),
    about:
      "Publish only the task-instance and notification events of tasks whose `task_id` matches one of these globs (a task in a task group is `group.task`). DAG runs are not affected. Empty: every task.",
  },
  EVENTSTREAM_EXCLUDE_TASKS: {
    group: "filters",
    schema: globList.default(""),
    about:
      "Never publish the task-instance and notification events of tasks whose `task_id` matches one of these globs, even when `EVENTSTREAM_INCLUDE_TASKS` matches too.",
  },
  EVENTSTREAM_STATE_CACHE_SIZE: {
    group: "memory",
    schema: int(1_000, 100_000_000).default(25_000),
    about:
      "Task instances whose last state is remembered, to tell transitions from heartbeats. Each costs ~260 B outside the JavaScript heap on Airflow 3.x (its id, name and state in typed arrays, which the collector never walks) and ~100 B of heap for the runs' contexts, which the start-up check counts. A row evicted before its next change has that change published with `previous_state_known: false`, even a heartbeat (one such event per eviction). The default fits the launcher's heap (`bin/airflow-eventstream`); more needs `NODE_OPTIONS=--max-old-space-size=...`, which the start-up check computes, and adds its resident memory outside the heap (1,000,000 rows: ~260 MB).",
  },
  EVENTSTREAM_SNAPSHOT_CHUNK_ROWS: {
    group: "memory",
    schema: int(1, 100_000).default(1_024),
    about:
      "Snapshots (`airflow-eventstream snapshot`, docs/backfill.md): rows read per chunk, one primary-key range scan between two watermarks. Larger chunks read faster but hold more rows in memory and lose more rows to changes made while the chunk is open (those rows come from the stream instead).",
  },
  EVENTSTREAM_SNAPSHOT_ROWS_PER_SECOND: {
    group: "memory",
    schema: int(1, 10_000_000).default(5_000),
    about:
      "Snapshots: at most this many rows read per second, so Airflow's own queries keep their share of the database (bench/README.md measures the cost).",
  },
  EVENTSTREAM_RESTART_READ_EVENTS: {
    group: "memory",
    schema: int(1, 10_000_000).default(2_000),
    about:
      "At start (both modes): records read back per partition of the event topics, so that rows' last states survive the restart and (at-least-once) replayed events Kafka already holds are not published again (~8,500 records/s).",
  },

  EVENTSTREAM_SHUTDOWN_TIMEOUT_SECONDS: {
    group: "process",
    schema: int(1, 3600).default(20),
    about: "Seconds SIGTERM or SIGINT may take to flush Kafka and acknowledge before the process exits.",
  },
  EVENTSTREAM_MODEL_THREAD: {
    group: "process",
    schema: bool.default(false),
    about:
      "Experimental: decode, map and serialise on a worker thread of its own (the model thread), while the main thread reads PostgreSQL, writes Kafka and acknowledges. Meant for a daemon with two cores to itself (PostgreSQL and Kafka elsewhere), where it has not been measured; on a 2-core host shared with them it was slower (docs/operations.md#the-model-thread). Adds a second JavaScript heap (~45 MB of resident memory). Order, acknowledgement and every record are the same either way.",
  },
  EVENTSTREAM_HTTP_PORT: {
    group: "process",
    schema: int(0, 65535).default(9464),
    about: "Port of the HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz` and `/status` (docs/operations.md). 0 turns it off.",
  },
  EVENTSTREAM_HTTP_HOST: {
    group: "process",
    schema: z.string().min(1).default("0.0.0.0"),
    about: "Address the HTTP endpoint listens on (`127.0.0.1`: this host only).",
  },
  EVENTSTREAM_READY_STALL_SECONDS: {
    group: "process",
    schema: int(1, 86_400).default(60),
    about:
      "`/readyz` answers 503 when the slot's lag grew and no acknowledgement reached PostgreSQL for this many seconds: connected but not progressing (Kafka down, a stuck produce).",
  },
  EVENTSTREAM_SERVE_PORT: {
    group: "serve",
    schema: int(0, 65535).default(9465),
    about: "Port of the query service's HTTP API (0: any free port, logged).",
  },
  EVENTSTREAM_SERVE_HOST: {
    group: "serve",
    schema: z.string().min(1).default("0.0.0.0"),
    about: "Address the query service listens on (`127.0.0.1`: this host only).",
  },
  EVENTSTREAM_SERVE_MAX_RUNS: {
    group: "serve",
    schema: int(1, 10_000_000).default(20_000),
    about:
      "Runs not yet complete held at most; past it the least recently updated are dropped (and counted). About 370 bytes of heap per task instance (docs/serve.md).",
  },
  EVENTSTREAM_SERVE_RECENT_RUNS: {
    group: "serve",
    schema: int(0, 10_000_000).default(2_000),
    about: "Complete runs held, least recently used dropped first.",
  },
  EVENTSTREAM_SERVE_HISTORY_PER_RUN: {
    group: "serve",
    schema: int(10, 1_000_000).default(1_000),
    about: "History entries (state changes, tries, clears) held per run; the oldest go first.",
  },
  EVENTSTREAM_SERVE_STUCK_SECONDS: {
    group: "serve",
    schema: z.string().default(""),
    about:
      "Stuck thresholds per task state, changing the defaults (scheduled=600, queued=600, running=3600, deferred=3600, up_for_retry=1800, up_for_reschedule=3600), e.g. `queued=300,running=7200`.",
  },
  EVENTSTREAM_SERVE_STUCK_DAGS: {
    group: "serve",
    schema: z.string().default(""),
    about: "Per-DAG stuck thresholds, `;` between DAGs: `etl_daily:running=14400;fast_dag:queued=60,running=120`.",
  },
  EVENTSTREAM_SERVE_MAX_WAITERS: {
    group: "serve",
    schema: int(1, 1_000_000).default(1_000),
    about: "`ready?wait=` requests waiting at once; more are answered 429.",
  },
  EVENTSTREAM_SERVE_MAX_STREAMS: {
    group: "serve",
    schema: int(1, 100_000).default(200),
    about: "`/events` streams open at once; more are answered 429.",
  },
  EVENTSTREAM_SERVE_EVENT_BUFFER: {
    group: "serve",
    schema: int(1, 10_000_000).default(10_000),
    about: "Recent events held for `/events` clients resuming with `Last-Event-ID` (~1 KB each).",
  },
  LOG_LEVEL: {
    group: "process",
    schema: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    about: "pino level; logs are JSON lines on stdout.",
  },
  EVENTSTREAM_SERVE_INSIGHTS: {
    group: "insights",
    schema: bool.default(true),
    about:
      "Derive insights onto `EVENTSTREAM_SERVE_INSIGHTS_TOPIC`. Needs the single-topic layout (`EVENTSTREAM_TOPIC_TEMPLATE` empty) and the current-state topic.",
  },
  EVENTSTREAM_SERVE_INSIGHTS_TOPIC: {
    group: "insights",
    schema: topicName.default("airflow.insights"),
    about:
      "The insights topic (key: `dag_id`). Created with the events topic's partition count when missing; an existing one must have that count.",
  },
  EVENTSTREAM_SERVE_INSIGHTS_GROUP: {
    group: "insights",
    schema: z.string().min(1).default("airflow-eventstream-insights"),
    about:
      "Consumer group of the insights writers: the replicas share the events topic's partitions through it, and its committed offsets say where each partition's insights stop.",
  },
  EVENTSTREAM_SERVE_INSIGHTS_SESSION_TIMEOUT_SECONDS: {
    group: "insights",
    schema: int(6, 300).default(30),
    about: "How long a replica that stopped answering keeps its partitions before another takes them (Kafka's group session timeout).",
  },
} satisfies Record<string, Setting>;

export type SettingName = keyof typeof SETTINGS;

/**
 * EVENTSTREAM_* names the daemon does not read but the project's own tooling does, so a shell set up
 * for development (`eval "$(bash scripts/services.sh env)"`, a second set of services) can start the
 * daemon: scripts/services.sh's ports, state directory and timeouts (EVENTSTREAM_SERVICES_*), the
 * tests' endpoints (EVENTSTREAM_TEST_*), their scratch PostgreSQL servers and the real-Airflow
 * suite's run mark. Any other EVENTSTREAM_* name is a mistake the daemon refuses (unknownSettings).
 */
export const TOOLING_NAMES: readonly string[] = [
  "EVENTSTREAM_PG_PORT",
  // The services' PostgreSQL major (`services.sh env` prints it) and where scripts/pg-binaries.sh unpacks servers.
  "EVENTSTREAM_PG_VERSION",
  "EVENTSTREAM_PG_BINARIES_DIR",
  "EVENTSTREAM_KAFKA_PORT",
  "EVENTSTREAM_KAFKA_CONTROLLER_PORT",
  "EVENTSTREAM_KAFKA_SASL_PORT",
  "EVENTSTREAM_SCRATCH_PG_PORTS",
  "EVENTSTREAM_E2E_MARK",
  // scripts/registry.sh's port and Apicurio Registry version (the schema registry of test/registry).
  "EVENTSTREAM_REGISTRY_PORT",
  "EVENTSTREAM_REGISTRY_VERSION",
];
export const TOOLING_PREFIXES: readonly string[] = ["EVENTSTREAM_SERVICES_", "EVENTSTREAM_TEST_"];
