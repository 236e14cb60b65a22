import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { AirflowMajor } from "./harness.js";

/**
 * Writes rows the way Airflow does, into the real 2.x or 3.x schema: the NOT NULL columns each
 * version requires, and nothing else. Tests then drive the state changes with plain UPDATEs.
 */

export interface TiKey {
  dag_id: string;
  task_id: string;
  run_id: string;
  map_index?: number;
}

export async function insertDagRun(c: pg.Client, major: AirflowMajor, dagId: string, runId: string, state = "queued"): Promise<number> {
  const sql =
    major === "2"
      ? `INSERT INTO dag_run (dag_id, run_id, execution_date, state, run_type, clear_number)
         VALUES ($1, $2, now() + (random() * interval '1000 days'), $3, 'manual', 0) RETURNING id`
      : `INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number, span_status)
         VALUES ($1, $2, now(), now(), $3, 'manual', 0, 'not_started') RETURNING id`;
  const { rows } = await c.query<{ id: number }>(sql, [dagId, runId, state]);
  return rows[0]!.id;
}

/** The task_instance columns the scheduler's INSERT fills (3.x adds `id` before them). */
export const TI_INSERT_COLUMNS = [
  "dag_id",
  "task_id",
  "run_id",
  "map_index",
  "state",
  "try_number",
  "max_tries",
  "pool",
  "pool_slots",
  "queue",
  "operator",
  "priority_weight",
] as const;

/** INSERT as the scheduler does when a run is created: state NULL, try_number 0. Returns the 3.x id. */
export async function insertTi(
  c: pg.Client,
  major: AirflowMajor,
  key: TiKey,
  extra: { state?: string | null; try_number?: number } = {},
): Promise<string | null> {
  const id = major === "3" ? randomUUID() : null;
  const cols: string[] = [...TI_INSERT_COLUMNS];
  const vals: unknown[] = [
    key.dag_id,
    key.task_id,
    key.run_id,
    key.map_index ?? -1,
    extra.state ?? null,
    extra.try_number ?? 0,
    0,
    "default_pool",
    1,
    "default",
    "PythonOperator",
    1,
  ];
  if (major === "3") {
    cols.unshift("id");
    vals.unshift(id);
  }
  const params = vals.map((_, i) => `$${i + 1}`).join(", ");
  await c.query(`INSERT INTO task_instance (${cols.join(", ")}) VALUES (${params})`, vals);
  return id;
}

/** UPDATE task_instance SET ... WHERE (composite key), as the scheduler and workers do. */
export async function updateTi(c: pg.Client, key: TiKey, set: Record<string, unknown>): Promise<void> {
  const names = Object.keys(set);
  const assignments = names.map((n, i) => `${n} = $${i + 1}`).join(", ");
  const base = names.length;
  await c.query(
    `UPDATE task_instance SET ${assignments} WHERE dag_id = $${base + 1} AND task_id = $${base + 2} AND run_id = $${base + 3} AND map_index = $${base + 4}`,
    [...names.map((n) => set[n]), key.dag_id, key.task_id, key.run_id, key.map_index ?? -1],
  );
}

export async function updateDagRun(c: pg.Client, id: number, set: Record<string, unknown>): Promise<void> {
  const names = Object.keys(set);
  await c.query(`UPDATE dag_run SET ${names.map((n, i) => `${n} = $${i + 1}`).join(", ")} WHERE id = $${names.length + 1}`, [
    ...names.map((n) => set[n]),
    id,
  ]);
}

/** Sets an XCom as Airflow does: DELETE then INSERT (2.x: JSON in bytea; 3.x: jsonb). */
export async function setXCom(
  c: pg.Client,
  major: AirflowMajor,
  dagRunId: number,
  key: TiKey,
  xcomKey: string,
  value: unknown,
): Promise<void> {
  const params = [dagRunId, key.task_id, key.map_index ?? -1, xcomKey];
  await c.query("DELETE FROM xcom WHERE dag_run_id = $1 AND task_id = $2 AND map_index = $3 AND key = $4", params);
  const json = JSON.stringify(value);
  await c.query(
    `INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, "timestamp")
     VALUES ($1, $2, $3, $4, $5, $6, ${major === "2" ? "convert_to($7, 'UTF8')" : "$7::jsonb"}, now())`,
    [...params, key.dag_id, key.run_id, json],
  );
}
