import type pg from "pg";
import { decodeValue } from "../decode/values.js";
import type { Relation, Row } from "../decode/types.js";
import { parseLsn, type Lsn } from "../lsn.js";
import { ident } from "../source/sql.js";
import { standbyWriteError } from "../source/standby.js";
import { WATERMARK_PREFIX, type SnapshotSpec, type SnapshotTable, type Watermark } from "./spec.js";
import { parseSnapshot, type PgSnapshot } from "./window.js";

/** One row of a chunk: decoded as the stream decodes it, plus its primary key as text (the next chunk's start). */
export interface ChunkRow {
  row: Row;
  key: string[];
}

export interface ChunkRead {
  /** Rows the filters want, in primary-key order. */
  rows: ChunkRow[];
  /** Rows scanned (wanted or not): fewer than asked means the table is done. */
  scanned: number;
  /** The last scanned row's key; null when none was scanned. */
  lastKey: string[] | null;
  snapshot: PgSnapshot;
  relation: Relation;
  /** When the chunk was read (the database's clock): the events' commit_time. */
  readAt: string;
}

/** Every value as the server's text: converted by src/decode/values.ts by type OID, exactly as streamed rows are. */
const RAW_TEXT = { getTypeParser: () => (v: string) => v };

/**
 * Reads a table in primary-key order, one chunk at a time, over a plain connection of its own.
 * Each chunk is a keyset range scan of the primary key's index (`(pk) > ($last) ORDER BY pk
 * LIMIT n`, see the EXPLAIN in test/integration/snapshot.test.ts), in a REPEATABLE READ transaction
 * that also reads pg_current_snapshot(): the snapshot the rows were read in, for the window rule
 * (window.ts). Filters are applied to the scanned rows, not to the scan, so each chunk costs at most
 * n index entries whatever the filters leave.
 */
export class ChunkReader {
  private readonly flushAfterEmit: boolean;

  constructor(
    private readonly client: pg.Client,
    private readonly schema: string,
    serverVersionNum: number,
  ) {
    // Before 17 pg_logical_emit_message has no flush argument, and a non-transactional message
    // reaches the walsender only once something flushes the WAL (the WAL writer: up to
    // wal_writer_delay, 200 ms by default, later).
    this.flushAfterEmit = serverVersionNum < 170000;
  }

  /** The primary-key columns the stream keys the table's rows by (src/airflow/row-keys.ts: Airflow's, by name). */
  async primaryKey(table: SnapshotTable): Promise<string[]> {
    if (table === "dag_run") return ["id"];
    const r = await this.client.query(
      "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'task_instance' AND column_name = 'id'",
      [this.schema],
    );
    return r.rowCount ? ["id"] : ["dag_id", "task_id", "run_id", "map_index"];
  }

  /** Writes a watermark into the WAL; returns its LSN. */
  async emit(w: Watermark): Promise<Lsn> {
    const r = await this.client
      .query<{ lsn: string }>("SELECT pg_logical_emit_message(false, $1, $2)::text AS lsn", [WATERMARK_PREFIX, JSON.stringify(w)])
      .catch((e: unknown) => {
        throw standbyWriteError(e, "a snapshot's watermark") ?? e;
      });
    if (this.flushAfterEmit && w.kind === "high") {
      // A transactional message commits, and a commit flushes the WAL before it, the watermark included.
      await this.client.query("SELECT pg_logical_emit_message(true, $1, '')", [`${WATERMARK_PREFIX}.flush`]);
    }
    return parseLsn(r.rows[0]!.lsn);
  }

  async read(table: SnapshotTable, pk: string[], spec: SnapshotSpec, after: string[] | null, limit: number): Promise<ChunkRead> {
    const { sql, values } = chunkQuery(this.schema, table, pk, spec, after, limit);
    await this.client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    try {
      // The first statement takes the transaction's snapshot; the chunk is read in that same one.
      const snap = await this.client.query<{ s: string; t: string }>(
        `SELECT pg_current_snapshot()::text AS s, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
      );
      const res = await this.client.query({ text: sql, values, types: RAW_TEXT });
      await this.client.query("COMMIT");
      return toChunk(this.schema, table, pk, res, parseSnapshot(snap.rows[0]!.s), snap.rows[0]!.t);
    } catch (e: unknown) {
      await this.client.query("ROLLBACK").catch(() => undefined);
      throw e;
    }
  }
}

function toChunk(schema: string, table: SnapshotTable, pk: string[], res: pg.QueryResult, snapshot: PgSnapshot, readAt: string): ChunkRead {
  const fields = res.fields.filter((f) => f.name !== WANTED);
  const relation: Relation = {
    id: -1,
    schema,
    name: table,
    // Not the table's replica identity: 'f' makes src/airflow/row-keys.ts key the rows by Airflow's
    // primary key by name, which is what the stream's rows are keyed by under DEFAULT and FULL alike.
    replicaIdentity: "f",
    columns: fields.map((f) => ({ name: f.name, typeOid: f.dataTypeID, typeMod: -1, isKey: false })),
  };
  const rows: ChunkRow[] = [];
  let lastKey: string[] | null = null;
  for (const r of res.rows as Record<string, string | null>[]) {
    lastKey = pk.map((c) => r[c] ?? "");
    if (r[WANTED] !== "t") continue;
    const row: Row = {};
    for (const f of fields) {
      const v = r[f.name];
      row[f.name] = v === null || v === undefined ? null : decodeValue(f.dataTypeID, Buffer.from(v, "utf8"));
    }
    rows.push({ row, key: lastKey });
  }
  return { rows, scanned: res.rows.length, lastKey, snapshot, relation, readAt };
}

const WANTED = "__airflow_eventstream_wanted";

/** The keyset query of one chunk (exported for the EXPLAIN test). */
export function chunkQuery(
  schema: string,
  table: SnapshotTable,
  pk: string[],
  spec: SnapshotSpec,
  after: string[] | null,
  limit: number,
): { sql: string; values: unknown[] } {
  const values: unknown[] = [];
  const param = (v: unknown) => {
    values.push(v);
    return `$${values.length}`;
  };
  const cols = pk.map((c) => `t.${ident(c)}`).join(", ");
  const where = after === null ? "" : `WHERE (${cols}) > (${after.map((v) => param(v)).join(", ")})`;
  const wanted: string[] = [];
  if (spec.dags.length > 0) wanted.push(`t.dag_id = ANY(${param(spec.dags)}::text[])`);
  // The run's columns: the row itself for dag_run; for a task instance its run, looked up per row
  // through dag_run's unique (dag_id, run_id) index (LATERAL ... LIMIT 1: a semi-join would be
  // planned as a hash of every matching run, a scan of dag_run per chunk).
  const r = table === "dag_run" ? "t" : "r";
  if (spec.active_only) wanted.push(`${r}.state IN ('queued', 'running')`);
  if (spec.runs_since !== null) {
    const d = param(spec.runs_since);
    wanted.push(`(COALESCE(${r}.start_date, ${r}.queued_at) IS NULL OR COALESCE(${r}.start_date, ${r}.queued_at) >= ${d}::timestamptz)`);
  }
  const runJoin =
    table === "task_instance" && (spec.active_only || spec.runs_since !== null)
      ? `LEFT JOIN LATERAL (SELECT r.state, r.start_date, r.queued_at FROM ${ident(schema)}.dag_run r WHERE r.dag_id = t.dag_id AND r.run_id = t.run_id LIMIT 1) r ON true `
      : "";
  const sql =
    `SELECT t.*, COALESCE(${wanted.length > 0 ? wanted.join(" AND ") : "true"}, false) AS ${WANTED} ` +
    `FROM ${ident(schema)}.${ident(table)} t ${runJoin}${where} ORDER BY ${cols} LIMIT ${param(limit)}`;
  return { sql, values };
}
