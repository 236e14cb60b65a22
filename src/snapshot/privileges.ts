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
  // PostgreSQL 17 added a fourth argument (flush boolean DEFAULT false): the three-argument
  // signature no longer names a function there, and has_function_privilege fails on it.
  const four = "pg_catalog.pg_logical_emit_message(boolean, text, text, boolean)";
  const three = "pg_catalog.pg_logical_emit_message(boolean, text, text)";
  const { rows } = await client.query<{ ok: boolean; four: boolean }>(
    `SELECT has_function_privilege(COALESCE(to_regprocedure($1), to_regprocedure($2))::oid, 'EXECUTE') AS ok,
            to_regprocedure($1) IS NOT NULL AS four`,
    [four, three],
  );
  if (rows[0]?.ok !== true) {
    throw new PrivilegeError(
      `role "${cfg.pg.user}" may not execute pg_logical_emit_message, which snapshots write their watermarks with (docs/backfill.md). As a superuser run: GRANT EXECUTE ON FUNCTION ${rows[0]?.four ? four : three} TO ${ident(cfg.pg.user)};`,
    );
  }
}
