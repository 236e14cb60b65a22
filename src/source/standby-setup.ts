import type pg from "pg";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";

/**
 * Decoding from a hot standby (PostgreSQL 16+, docs/standby.md). A standby is read-only: the
 * publication and REPLICA IDENTITY FULL cannot be made there, only on the primary, from which
 * they replicate like any catalog change. So a start on a standby checks what it needs and names
 * the SQL for the primary instead of running it; the slot is the standby's own, created there.
 */

/** What the start-time setup may do: "apply" creates and completes, "inspect" reports, "standby" checks and refuses. */
export type SetupMode = "apply" | "inspect" | "standby";

export async function inRecovery(client: pg.Client): Promise<boolean> {
  const { rows } = await client.query<{ r: boolean }>("SELECT pg_is_in_recovery() AS r");
  return rows[0]?.r === true;
}

/** "standby" on a server in recovery (said in the log: it changes what a start does), else "apply". */
export async function setupMode(client: pg.Client, cfg: Config, log: Logger): Promise<"apply" | "standby"> {
  if (!(await inRecovery(client))) return "apply";
  log.info(
    { host: cfg.pg.host, port: cfg.pg.port },
    "the server is a standby (in recovery): decoding from it; the publication and replica identity are only checked here, they are made on the primary",
  );
  return "standby";
}

/** The message for what a standby lacks: `sql` must run on the primary, and reaches the standby by replication. */
export function onPrimaryOnly(cfg: Config, what: string, sql: string): string {
  return `${what}, and ${cfg.pg.host}:${cfg.pg.port} is a standby (in recovery), where nothing can be created or changed. On the primary, as the owner of Airflow's tables, run: ${sql} It reaches the standby through replication; the daemon retries on its next start`;
}

/** How often a slot creation on a standby says it is still waiting. */
const WAIT_REPORT_MS = 15_000;

/**
 * Creating a logical slot on a standby waits for a running-transactions record from the primary
 * (the slot needs to know which transactions were open where it starts, and a standby cannot
 * write that record itself). The primary logs one every 15 s, and only while it writes WAL: on
 * an idle primary the creation waits until something is written. Said in the log at once, and
 * every 15 s while it lasts, so that a start that seems stuck says why. Returns the stop.
 */
export function explainStandbySlotWait(cfg: Config, log: Logger): () => void {
  const started = Date.now();
  const fields = { slot: cfg.slot, host: cfg.pg.host, port: cfg.pg.port };
  const why =
    "the primary logs one every 15 s while it writes WAL (not when idle); `SELECT pg_log_standby_snapshot();` run on the primary logs one at once";
  log.info(
    fields,
    `creating the replication slot on a standby: PostgreSQL waits for a running-transactions record from the primary first (${why})`,
  );
  const timer = setInterval(() => {
    log.info(
      { ...fields, waitedSeconds: Math.round((Date.now() - started) / 1000) },
      `still creating the replication slot on the standby: waiting for a running-transactions record from the primary (${why})`,
    );
  }, WAIT_REPORT_MS);
  timer.unref();
  return () => clearInterval(timer);
}
