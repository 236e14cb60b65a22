import { randomBytes } from "node:crypto";
import type pg from "pg";
import { REQUEST_PREFIX, SNAPSHOT_TABLES, type SnapshotSpec, type SnapshotTable } from "./spec.js";

/** What a caller chooses; the rest of a SnapshotSpec (id, time) is filled in. */
export interface SnapshotRequest {
  tables?: SnapshotTable[];
  dags?: string[];
  runsSince?: string | null;
  activeOnly?: boolean;
}

export function newSpec(req: SnapshotRequest): SnapshotSpec {
  const tables = SNAPSHOT_TABLES.filter((t) => (req.tables ?? SNAPSHOT_TABLES).includes(t));
  return {
    id: randomBytes(8).toString("hex"),
    tables,
    dags: req.dags ?? [],
    runs_since: req.runsSince ?? null,
    active_only: req.activeOnly ?? false,
    requested_at: new Date().toISOString(),
  };
}

/**
 * Asks whichever daemon streams from this database to snapshot: the request is a transactional
 * logical decoding message, so it reaches the active daemon through the WAL, in order, once
 * committed, and nothing is written to Airflow's tables. Returns the spec (its id names the job).
 * `client`: any connection to the Airflow database whose role may execute pg_logical_emit_message.
 */
export async function requestSnapshot(client: pg.Client, req: SnapshotRequest): Promise<SnapshotSpec> {
  const spec = newSpec(req);
  await client.query("SELECT pg_logical_emit_message(true, $1, $2)", [REQUEST_PREFIX, JSON.stringify(spec)]);
  return spec;
}
