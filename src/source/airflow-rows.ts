import type pg from "pg";
import type { AssetRow } from "../airflow/asset-event.js";
import type { DagRunRow } from "../airflow/run-context.js";
import { ident } from "./sql.js";

/**
 * DAG runs that began before this session: read once at start, so task-instance events of runs
 * already under way carry their logical date and run type. Runs that start later come through the
 * stream. Logical date, run type and data interval never change for a run, so reading the current
 * row is safe even though the stream replays older changes; clear_number does change and is
 * overwritten by every dag_run row the stream carries.
 */
export async function readRunsUnderWay(client: pg.Client, schema: string, limit: number): Promise<DagRunRow[]> {
  const { rows: cols } = await client.query<{ column_name: string }>(
    "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'dag_run'",
    [schema],
  );
  const have = new Set(cols.map((c) => c.column_name));
  const text = (col: string) => (have.has(col) ? `${ident(col)}::text` : "NULL::text");
  const logical = have.has("logical_date") ? "logical_date" : "execution_date"; // 3.x : 2.x
  const { rows } = await client.query<DagRunRow>(
    `SELECT dag_id, run_id, run_type, ${text(logical)} AS logical_date,
            ${text("data_interval_start")} AS data_interval_start, ${text("data_interval_end")} AS data_interval_end,
            ${have.has("clear_number") ? "clear_number" : "NULL::int"} AS clear_number
       FROM ${ident(schema)}.dag_run
      WHERE state IS NULL OR state NOT IN ('success', 'failed') OR end_date > now() - interval '1 day'
      ORDER BY id DESC
      LIMIT $1`,
    [limit],
  );
  return rows;
}

/** Every dag_id of Airflow's dag_run table (one scan of its (dag_id, run_id) key at start; topic per DAG only). */
export async function dagIdsWithRuns(client: pg.Client, schema: string): Promise<string[]> {
  const { rows } = await client.query<{ dag_id: string }>(`SELECT DISTINCT dag_id FROM ${ident(schema)}.dag_run`);
  return rows.map((r) => r.dag_id);
}

/**
 * Every asset (3.x `asset`) or dataset (2.x) row, read once at start so that events of assets
 * created before the stream started carry their URI (see src/airflow/asset-event.ts). The table
 * is named by detectAssetTables ([] when asset events are off: nothing to read).
 */
export async function readAssets(client: pg.Client, schema: string, tables: readonly string[]): Promise<AssetRow[]> {
  const table = tables.find((t) => t === "asset" || t === "dataset");
  if (table === undefined) return [];
  // 2.x datasets have a URI only.
  const nameGroup = table === "asset" ? `name, "group"` : `NULL::text AS name, NULL::text AS "group"`;
  const { rows } = await client.query<AssetRow>(`SELECT id, uri, ${nameGroup} FROM ${ident(schema)}.${ident(table)}`);
  return rows;
}
