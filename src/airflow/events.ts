import { z } from "zod";

/**
 * The events consumers receive: JSON values on Kafka, keyed by dag_id (a table_truncated event, about
 * every DAG, has a null key and goes to every partition). These zod schemas are the
 * contract: the package exports them, `npm run schemas:json` writes them as JSON Schema files into
 * schemas/, and every event the daemon produces has this shape.
 *
 * Timestamps are ISO-8601 UTC strings with microseconds ("2026-11-25T08:17:27.123456Z"), exactly as
 * PostgreSQL stored them.
 */

const timestamp = z.string().describe("ISO-8601 UTC timestamp with microseconds, e.g. 2026-11-25T08:17:27.123456Z");

export const SourcePosition = z
  .object({
    commit_lsn: z.string().describe('LSN of the commit record of the PostgreSQL transaction, e.g. "0/16B3748"'),
    xid: z.number().int().describe("PostgreSQL transaction id"),
    index: z.number().int().nonnegative().describe("Ordinal of the row change within its transaction"),
    position: z
      .string()
      .regex(/^[0-9A-F]{16}-[0-9A-F]{8}$/)
      .describe(
        "Unique, increasing position within one source: commit LSN and index as fixed-width hex. Compare as strings; a re-delivered event carries the same position, so consumers de-duplicate by skipping positions not greater than the last one processed.",
      ),
    commit_time: timestamp.describe("When the transaction committed"),
  })
  .describe("Where in PostgreSQL's WAL the change was committed");
export type SourcePosition = z.infer<typeof SourcePosition>;

/** Airflow task-instance states (None is null). */
export const TaskState = z
  .string()
  .describe(
    "removed, scheduled, queued, running, success, restarting, failed, up_for_retry, up_for_reschedule, upstream_failed, skipped, deferred; new values from future Airflow versions pass through",
  );

const previousKnown = z
  .boolean()
  .describe(
    "false when the previous state is not known: PostgreSQL's WAL did not carry the old row (REPLICA IDENTITY DEFAULT) and the daemon did not remember this row: not seen since it started, nor among the events it read back from Kafka at start (the last EVENTSTREAM_RESTART_READ_EVENTS per partition), nor kept in its state cache; previous_state is then null. Always true for tables at REPLICA IDENTITY FULL (EVENTSTREAM_REPLICA_IDENTITY=full)",
  );

/** The DAG run a task instance belongs to, from dag_run rows seen in the stream or read at start. */
const runContextFields = {
  logical_date: timestamp
    .nullable()
    .describe("The run's logical date (execution_date on 2.x); null when the run is not known to the daemon or has none"),
  run_type: z.string().nullable().describe("manual, scheduled, backfill, dataset_triggered / asset_triggered; null when unknown"),
  data_interval_start: timestamp.nullable(),
  data_interval_end: timestamp.nullable(),
  clear_number: z.number().int().nullable().describe("How often the run was cleared, as of this event (Airflow 2.8+); null when unknown"),
};

const taskInstanceFields = {
  type: z.literal("task_instance"),
  dag_id: z.string(),
  task_id: z.string(),
  run_id: z.string(),
  map_index: z.number().int().describe("-1 for an unmapped task"),
  try_number: z.number().int().nullable(),
  max_tries: z.number().int().nullable(),
  state: TaskState.nullable().describe("State after the change; null is Airflow's None (not yet scheduled, or cleared)"),
  previous_state: TaskState.nullable(),
  previous_state_known: previousKnown,
  previous_try_number: z.number().int().nullable(),
  ti_id: z.string().nullable().describe("Airflow 3.x task_instance.id (UUID, new for each try); null on 2.x"),
  start_date: timestamp.nullable(),
  end_date: timestamp.nullable(),
  duration: z.number().nullable().describe("Seconds"),
  hostname: z.string().nullable(),
  operator: z.string().nullable(),
  queue: z.string().nullable(),
  pool: z.string().nullable(),
  ...runContextFields,
  source: SourcePosition,
};

export const TaskInstanceEvent = z
  .discriminatedUnion("op", [
    z.object({ op: z.literal("insert").describe("A task instance appeared"), ...taskInstanceFields }),
    z.object({
      op: z
        .literal("update")
        .describe("A transition: the state or the try number changed (heartbeats and other column churn produce no event)"),
      ...taskInstanceFields,
    }),
    z.object({
      op: z
        .literal("snapshot")
        .describe(
          "The row as a snapshot read it (`airflow-eventstream snapshot`, docs/backfill.md), at a position after every streamed event that could be newer: apply it like an update. previous_state is what the daemon remembered of the row, if anything",
        ),
      ...taskInstanceFields,
    }),
    z.object({
      op: z.literal("delete").describe("A task instance was removed from the table; state is the last one known"),
      ...taskInstanceFields,
      // On Airflow 3.x the WAL identifies a deleted row by its id alone: unless the daemon saw the
      // row earlier, the rest of its key is unknown (and the Kafka key is then null).
      dag_id: z.string().nullable(),
      task_id: z.string().nullable(),
      run_id: z.string().nullable(),
      map_index: z.number().int().nullable(),
    }),
  ])
  .describe("A task instance changed state");
export type TaskInstanceEvent = z.infer<typeof TaskInstanceEvent>;

const dagRunFields = {
  type: z.literal("dag_run"),
  dag_id: z.string(),
  run_id: z.string(),
  dag_run_id: z.number().int().describe("dag_run.id"),
  state: z.string().nullable().describe("queued, running, success, failed"),
  previous_state: z.string().nullable(),
  previous_state_known: previousKnown,
  run_type: z.string().nullable().describe("manual, scheduled, backfill, dataset_triggered / asset_triggered"),
  logical_date: timestamp.nullable().describe("logical_date (3.x) or execution_date (2.x)"),
  data_interval_start: timestamp.nullable(),
  data_interval_end: timestamp.nullable(),
  start_date: timestamp.nullable(),
  end_date: timestamp.nullable(),
  clear_number: z.number().int().nullable().describe("Times the run was cleared (Airflow 2.8+)"),
  source: SourcePosition,
};

export const DagRunEvent = z
  .discriminatedUnion("op", [
    z.object({ op: z.literal("insert"), ...dagRunFields }),
    z.object({ op: z.literal("update").describe("The state or clear_number changed"), ...dagRunFields }),
    z.object({ op: z.literal("delete"), ...dagRunFields }),
    z.object({
      op: z.literal("snapshot").describe("The row as a snapshot read it (docs/backfill.md): apply it like an update"),
      ...dagRunFields,
    }),
  ])
  .describe("A DAG run changed state");
export type DagRunEvent = z.infer<typeof DagRunEvent>;

/** What a task pushes under the configured XCom key (EVENTSTREAM_XCOM_KEY): the PushOperator's notification, without an operator. */
export const NotificationValue = z
  .object({
    request_id: z.string().optional(),
    start: z.string().optional().describe("Start of the period the artifact covers"),
    end: z.string().optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
    payload: z.unknown().optional().describe("Any JSON"),
    payload_uri: z.string().optional().describe("Where the payload's files are"),
    files: z
      .record(z.string(), z.string().regex(/^[0-9a-fA-F]{32}$/, { message: "must be an MD5 hex digest (32 hex characters)" }))
      .optional()
      .describe("File name -> MD5"),
  })
  .strict()
  .describe("The XCom value a task pushes; requestId and payloadURI (the original PushOperator's names) are accepted too");
export type NotificationValue = z.infer<typeof NotificationValue>;

export const NotificationEvent = z
  .object({
    type: z.literal("notification"),
    dag_id: z.string(),
    task_id: z.string(),
    run_id: z.string(),
    map_index: z.number().int(),
    try_number: z
      .number()
      .int()
      .nullable()
      .describe("The task instance's try when it pushed; null if the daemon had not seen the task instance"),
    logical_date: timestamp.nullable(),
    time: timestamp.describe("When the XCom was written (xcom.timestamp)"),
    xcom_key: z.string(),
    request_id: z.string().nullable(),
    start: z.string().nullable(),
    end: z.string().nullable(),
    metadata: z.record(z.string(), z.unknown()).nullable(),
    payload: z.unknown().describe("Any JSON; null when absent"),
    payload_uri: z.string().nullable(),
    files: z.record(z.string(), z.string()).nullable(),
    error: z
      .object({
        message: z.string().describe("Why the value is not a valid notification"),
        raw: z
          .string()
          .describe("The value as pushed (JSON text, or base64 when not UTF-8), cut to EVENTSTREAM_NOTIFICATION_RAW_MAX_BYTES"),
        truncated: z.boolean(),
      })
      .nullable()
      .describe("Set when the pushed value did not validate; the other value fields are then null"),
    source: SourcePosition,
  })
  .describe("A task pushed a notification XCom");
export type NotificationEvent = z.infer<typeof NotificationEvent>;

export const AssetEventEvent = z
  .object({
    type: z.literal("asset_event"),
    asset: z
      .object({
        uri: z
          .string()
          .nullable()
          .describe(
            "The asset's URI (also the Kafka key). null only when the asset row was deleted before the daemon could read it (the daemon logs a warning); the record then has a null key",
          ),
        name: z.string().nullable().describe("Airflow 3.x asset.name; null on 2.x (datasets have only a URI)"),
        group: z.string().nullable().describe("Airflow 3.x asset.group; null on 2.x"),
      })
      .describe("The asset (3.x `asset`, 2.x `dataset` row) the event is about, as of the event's commit"),
    asset_id: z.number().int().describe("asset_event.asset_id (3.x) or dataset_event.dataset_id (2.x)"),
    extra: z.record(z.string(), z.unknown()).describe("The row's JSON `extra`; {} when null"),
    source_dag_id: z.string().nullable().describe("null when the event did not come from a task (e.g. created through the REST API)"),
    source_task_id: z.string().nullable(),
    source_run_id: z.string().nullable(),
    source_map_index: z.number().int().nullable(),
    timestamp: timestamp.describe("asset_event.timestamp: when Airflow recorded the event"),
    source: SourcePosition,
  })
  .describe(
    "Airflow recorded an asset event (3.x asset_event, 2.x dataset_event): one per row inserted, on EVENTSTREAM_ASSET_TOPIC keyed by the asset's URI",
  );
export type AssetEventEvent = z.infer<typeof AssetEventEvent>;

export const TableTruncatedEvent = z
  .object({
    type: z.literal("table_truncated"),
    tables: z
      .array(z.enum(["task_instance", "dag_run", "xcom"]))
      .min(1)
      .describe("The captured Airflow tables the TRUNCATE emptied (one statement can name several)"),
    schema: z.string().describe("The schema holding them (EVENTSTREAM_AIRFLOW_SCHEMA)"),
    source: SourcePosition,
  })
  .describe(
    "Every row of these tables was removed at once (TRUNCATE): all state a consumer holds from them is void, for every DAG. No per-row events exist for a TRUNCATE. Sent with a null key to every partition of EVENTSTREAM_TOPIC, after every earlier event in that partition and before every later one; events after it describe rows written anew",
  );
export type TableTruncatedEvent = z.infer<typeof TableTruncatedEvent>;

export const StreamGapEvent = z
  .object({
    type: z.literal("stream_gap"),
    reason: z
      .enum(["slot_lost", "slot_missing", "slot_ahead"])
      .describe(
        "slot_lost: PostgreSQL invalidated the replication slot (max_slot_wal_keep_size); slot_missing: it was dropped; slot_ahead: it was recreated or advanced by something else",
      ),
    from_lsn: z.string().nullable().describe("Changes committed after this LSN were never published (null: not known)"),
    to_lsn: z.string().describe("... up to this one"),
    checkpoint_written_at: timestamp.nullable().describe("When the daemon last recorded what Kafka held, before the gap"),
    detected_at: timestamp.describe("When the daemon found the gap"),
    snapshot: z
      .string()
      .nullable()
      .describe(
        "The id of the snapshot requested with it (EVENTSTREAM_ON_GAP=snapshot): `op: snapshot` events of every task instance and DAG run follow",
      ),
    source: SourcePosition,
  })
  .describe(
    "Events were lost between from_lsn and to_lsn: transitions in that range will never arrive. Sent with a null key to every partition of EVENTSTREAM_TOPIC, like table_truncated. Every row a consumer holds may be stale until the snapshot that follows names it; a row that neither the snapshot nor a later event names was deleted in the gap",
  );
export type StreamGapEvent = z.infer<typeof StreamGapEvent>;

/** State events: a task instance or a DAG run changed. */
export const AirflowEvent = z.union([TaskInstanceEvent, DagRunEvent]);
export type AirflowEvent = z.infer<typeof AirflowEvent>;

/** Everything the daemon publishes. */
export const StreamEvent = z.union([
  TaskInstanceEvent,
  DagRunEvent,
  NotificationEvent,
  AssetEventEvent,
  TableTruncatedEvent,
  StreamGapEvent,
]);
export type StreamEvent = z.infer<typeof StreamEvent>;
