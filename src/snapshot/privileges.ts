import type pg from "pg";
import type { Config } from "../config.js";
import { PrivilegeError } from "../errors.js";
import { ident } from "../source/sql.js";

/**
 * Snapshots write their watermarks with pg_logical_emit_message (the daemon's own role, over a
 * normal connection); SELECT on task_instance and dag_run is checked with the captured tables.
 * PostgreSQL grants EXECUTE on the function to PUBLIC by default (measured on 15: no ACL, a role
 * without REPLICATION may call it); an installation that revoked it learns so at start, not at its
 * first snapshot.
 */
export async function checkSnapshotPrivileges(client: pg.Client, cfg: Config): Promise<void> {
  const sig = await emitMessageSignature(client);
  const { rows } = await client.query<{ ok: boolean }>("SELECT has_function_privilege($1, 'EXECUTE') AS ok", [
    `pg_catalog.pg_logical_emit_message(${sig})`,
  ]);
  if (rows[0]?.ok !== true) {
    throw new PrivilegeError(
      `role "${cfg.pg.user}" may not execute pg_logical_emit_message, which snapshots write their watermarks with (docs/backfill.md). As a superuser run: GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(${sig}) TO ${ident(cfg.pg.user)};`,
    );
  }
}

/**
 * The argument types of the text variant on this server: PostgreSQL 17 added a fourth, `flush
 * boolean DEFAULT false`, so the three-argument signature names no function there (a privilege
 * check or GRANT written with it fails with "function ... does not exist").
 */
export async function emitMessageSignature(client: pg.Client): Promise<string> {
  const { rows } = await client.query<{ four: boolean }>(
    "SELECT to_regprocedure('pg_catalog.pg_logical_emit_message(boolean, text, text, boolean)') IS NOT NULL AS four",
  );
  return rows[0]?.four === true ? "boolean, text, text, boolean" : "boolean, text, text";
}
