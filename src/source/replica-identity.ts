import type pg from "pg";
import type { Config } from "../config.js";
import { ReplicaIdentityError, TransientError, UserActionError, sqlState } from "../errors.js";
import type { Logger } from "../log.js";
import { ident } from "./sql.js";
import { onPrimaryOnly, type SetupMode } from "./standby-setup.js";

/**
 * Tables EVENTSTREAM_REPLICA_IDENTITY=full makes FULL: the ones whose previous state events carry.
 * Not xcom: its old values are never used, and Airflow sets an XCom as DELETE + INSERT, so FULL
 * would log every replaced value (up to megabytes of JSON) a second time.
 */
export const FULL_IDENTITY_TABLES = ["task_instance", "dag_run"] as const;

/**
 * How long `ALTER TABLE ... REPLICA IDENTITY FULL` may wait for its ACCESS EXCLUSIVE lock. While
 * it waits, every new query of Airflow's on the table queues behind it, so the scheduler would
 * stall for as long as the longest open transaction; past this the attempt is given up and the
 * session retried with backoff (a TransientError), each time stalling Airflow at most this long.
 */
const ALTER_LOCK_TIMEOUT = "2s";

const IDENTITY_NAMES: Record<string, string> = { d: "DEFAULT", n: "NOTHING", f: "FULL", i: "USING INDEX" };

/**
 * EVENTSTREAM_REPLICA_IDENTITY=full: task_instance and dag_run must be REPLICA IDENTITY FULL, or
 * the WAL carries no old rows and previous_state is memory again. Made so when the configuration
 * allows and the role owns the tables; otherwise an error with the SQL for the owner. (In
 * `default` mode nothing is checked: the mapper uses old rows whenever the WAL has them.)
 */
export async function ensureReplicaIdentity(client: pg.Client, cfg: Config, log: Logger, mode: SetupMode): Promise<string | null> {
  if (cfg.replicaIdentity !== "full") return null;
  const names = [...FULL_IDENTITY_TABLES];
  const qualified = names.map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`);
  const { rows } = await client.query<{ name: string; qualified: string; relreplident: string; owner: string; may_alter: boolean }>(
    `SELECT t.name, t.qualified, c.relreplident::text AS relreplident, pg_get_userbyid(c.relowner) AS owner,
            pg_has_role(c.relowner, 'USAGE') AS may_alter
       FROM unnest($1::text[], $2::text[]) AS t(name, qualified)
       JOIN pg_class c ON c.oid = to_regclass(t.qualified)`,
    [names, qualified],
  );
  const lacking = rows.filter((r) => r.relreplident !== "f");
  if (lacking.length === 0) return null;
  const sql = lacking.map((r) => `ALTER TABLE ${r.qualified} REPLICA IDENTITY FULL;`).join(" ");
  const current = lacking.map((r) => `${r.name} is REPLICA IDENTITY ${IDENTITY_NAMES[r.relreplident] ?? r.relreplident}`).join(", ");
  const alternative = "(or set EVENTSTREAM_REPLICA_IDENTITY=default: previous_state then comes from the daemon's memory)";
  if (mode === "standby") throw new ReplicaIdentityError(`${onPrimaryOnly(cfg, current, sql)} ${alternative}`);
  if (!cfg.alterReplicaIdentity) {
    throw new ReplicaIdentityError(
      `EVENTSTREAM_REPLICA_IDENTITY is full but ${current}, and EVENTSTREAM_ALTER_REPLICA_IDENTITY is false. As the owner of Airflow's tables run: ${sql} ${alternative}`,
    );
  }
  const foreign = lacking.filter((r) => !r.may_alter);
  if (foreign.length > 0) {
    const owners = [...new Set(foreign.map((r) => r.owner))].map((o) => `"${o}"`).join(", ");
    throw new ReplicaIdentityError(
      `EVENTSTREAM_REPLICA_IDENTITY is full but ${current}, and role "${cfg.pg.user}" may not change that: only the owner (${owners}) may. As ${owners} run: ${sql} ${alternative}`,
    );
  }
  if (mode === "inspect") return `${current}: a start runs ${sql}`;
  try {
    await client.query("BEGIN");
    await client.query(`SET LOCAL lock_timeout = '${ALTER_LOCK_TIMEOUT}'`);
    for (const r of lacking) await client.query(`ALTER TABLE ${r.qualified} REPLICA IDENTITY FULL`);
    await client.query("COMMIT");
  } catch (e: unknown) {
    await client.query("ROLLBACK").catch(() => undefined);
    if (sqlState(e) === "55P03") {
      const tables = lacking.map((r) => r.qualified).join(", ");
      throw new TransientError(
        `ALTER TABLE ... REPLICA IDENTITY FULL waited ${ALTER_LOCK_TIMEOUT} for the lock on ${tables}, held by open transactions (Airflow's?), and gave up so as not to stall Airflow; retrying`,
        { cause: e },
      );
    }
    if (sqlState(e) === "42501") {
      throw new ReplicaIdentityError(
        `role "${cfg.pg.user}" may not change the replica identity (PostgreSQL: ${(e as Error).message}). As the owner of Airflow's tables run: ${sql} ${alternative}`,
        { cause: e },
      );
    }
    throw new UserActionError(`running "${sql}" failed: ${(e as Error).message}`, { cause: e });
  }
  log.info(
    { tables: lacking.map((r) => r.qualified), was: lacking.map((r) => IDENTITY_NAMES[r.relreplident] ?? r.relreplident) },
    "set REPLICA IDENTITY FULL: the WAL carries the old row of every update and delete from here on",
  );
  return null;
}
