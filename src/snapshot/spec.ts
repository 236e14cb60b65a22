import { z } from "zod";

/** pg_logical_emit_message prefixes (the decoder passes on only those starting "airflow-eventstream."). */
export const REQUEST_PREFIX = "airflow-eventstream.snapshot";
export const WATERMARK_PREFIX = "airflow-eventstream.watermark";

export const SNAPSHOT_TABLES = ["dag_run", "task_instance"] as const;
export type SnapshotTable = (typeof SNAPSHOT_TABLES)[number];

/** What a snapshot request asks for: written into the WAL by `airflow-eventstream snapshot`, read back from it by the daemon. */
export const SnapshotSpec = z.object({
  id: z.string().min(1).max(64),
  /** dag_run first: task-instance events then carry their run's context. */
  tables: z.array(z.enum(SNAPSHOT_TABLES)).min(1),
  /** Only these DAGs; empty: all. */
  dags: z.array(z.string()),
  /** Only rows of runs whose logical date or start is at or after it (ISO), or not started; null: all. */
  runs_since: z.string().nullable(),
  /** Only rows of runs queued or running. */
  active_only: z.boolean(),
  requested_at: z.string(),
});
export type SnapshotSpec = z.infer<typeof SnapshotSpec>;

/** Where a job stands; kept in the checkpoint record (src/sink/checkpoint-store.ts), advanced once Kafka holds its chunks. */
export const JobProgress = z.object({
  spec: SnapshotSpec,
  /** Index into spec.tables of the table being read. */
  table: z.number().int().nonnegative(),
  /** Primary-key values (text) of the last row read in that table; null: from the start. */
  last_key: z.array(z.string()).nullable(),
  rows: z.number().int().nonnegative(),
  chunks: z.number().int().nonnegative(),
  started_at: z.string(),
});
export type JobProgress = z.infer<typeof JobProgress>;

export const SnapshotProgress = z.object({
  active: JobProgress.nullable(),
  queued: z.array(SnapshotSpec),
  /** The last finished jobs, newest last: a request re-delivered after a restart is not run again. */
  done: z.array(z.object({ id: z.string(), rows: z.number().int(), finished_at: z.string(), error: z.string().optional() })),
});
export type SnapshotProgress = z.infer<typeof SnapshotProgress>;

export const EMPTY_PROGRESS: SnapshotProgress = { active: null, queued: [], done: [] };

/** How many finished jobs the progress remembers, and for how long. */
export const DONE_KEPT = 8;
export const DONE_KEPT_MS = 3_600_000;

export const Watermark = z.object({
  /** The coordinator that wrote it (one per session): a watermark re-delivered from an earlier session matches nothing. */
  run: z.string(),
  job: z.string(),
  chunk: z.number().int(),
  kind: z.enum(["low", "high"]),
});
export type Watermark = z.infer<typeof Watermark>;

/** Parses JSON `text` with `schema`; null when it is not one (a message of another version, or garbage). */
export function parseJson<T>(schema: z.ZodType<T>, text: string): T | null {
  try {
    const r = schema.safeParse(JSON.parse(text));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}
