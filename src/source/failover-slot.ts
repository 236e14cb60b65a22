import type pg from "pg";
import type { Config } from "../config.js";
import { SlotError, sqlState } from "../errors.js";
import type { Logger } from "../log.js";
import { connectSource } from "./connection.js";
import { ident, literal } from "./sql.js";

/**
 * Failover slots (PostgreSQL 17+): a standby with sync_replication_slots=on keeps a copy of a
 * logical slot created with failover, so that after its promotion the daemon continues from that
 * copy instead of finding no slot (a gap). docs/failover.md says what the servers need.
 */

/** What the server is, for deciding the flag: its version and whether it is a standby. */
export interface ServerKind {
  versionNum: number;
  inRecovery: boolean;
}

export async function readServerKind(client: pg.Client): Promise<ServerKind> {
  const { rows } = await client.query<{ v: string; r: boolean }>(
    "SELECT current_setting('server_version_num') AS v, pg_is_in_recovery() AS r",
  );
  return { versionNum: Number(rows[0]!.v), inRecovery: rows[0]!.r };
}

/**
 * Whether the slot should have the failover flag. `auto` is on from 17 on, on a primary: the flag
 * costs nothing until a standby syncs the slot, and a standby added later can then take over.
 * A slot on a standby (decoding from a standby) cannot have it: PostgreSQL refuses.
 */
export function wantFailover(cfg: Pick<Config, "failoverSlot" | "slot">, server: ServerKind): boolean {
  if (cfg.failoverSlot === "false") return false;
  const supported = server.versionNum >= 170000 && !server.inRecovery;
  if (cfg.failoverSlot === "auto") return supported;
  if (server.versionNum < 170000) {
    throw new SlotError(
      `EVENTSTREAM_FAILOVER_SLOT=true needs PostgreSQL 17 or later (this server is ${versionText(server.versionNum)}): upgrade, or set EVENTSTREAM_FAILOVER_SLOT=auto or false (then a failover loses the slot, and the daemon reports the gap)`,
    );
  }
  if (server.inRecovery) {
    throw new SlotError(
      `EVENTSTREAM_FAILOVER_SLOT=true, but the server the daemon connected to is a standby, where PostgreSQL cannot give a slot the failover flag: point PGHOST at the primary (or set PGTARGETSESSIONATTRS=read-write), or set EVENTSTREAM_FAILOVER_SLOT=auto to decode from this standby`,
    );
  }
  return true;
}

function versionText(num: number): string {
  return `${Math.floor(num / 10000)}.${num % 10000}`;
}

/** The SQL that creates the slot, with the failover flag where the server has it. */
export function createSlotSql(slot: string, server: ServerKind, failover: boolean): string {
  // Arguments: name, plugin, temporary, twophase, failover (the last two from 14 and 17).
  return server.versionNum >= 170000
    ? `SELECT pg_create_logical_replication_slot(${literal(slot)}, 'pgoutput', false, false, ${failover});`
    : `SELECT pg_create_logical_replication_slot(${literal(slot)}, 'pgoutput');`;
}

/**
 * Gives an existing slot the failover flag the configuration asks for, when it differs. Only called
 * when no one streams from the slot (PostgreSQL refuses to alter an active slot). `failover` is the
 * slot's flag as read (null: the server has no such column, before 17).
 */
export async function alignFailoverFlag(cfg: Config, log: Logger, server: ServerKind, failover: boolean | null): Promise<void> {
  if (failover === null) {
    wantFailover(cfg, server);
    return;
  }
  const want = wantFailover(cfg, server);
  if (failover === want) return;
  // No SQL function alters the flag: only the replication command does (PostgreSQL 17+).
  const command = `ALTER_REPLICATION_SLOT ${ident(cfg.slot)} ( FAILOVER ${want} )`;
  const { client, host } = await connectSource(cfg, { replication: true, applicationName: "airflow-eventstream-setup" });
  try {
    await client.query(command);
  } catch (e: unknown) {
    const why = sqlState(e) === "55006" ? "another connection streams from it" : (e as Error).message;
    throw new SlotError(
      `replication slot "${cfg.slot}" has failover=${failover} but EVENTSTREAM_FAILOVER_SLOT=${cfg.failoverSlot} asks for ${want}, and PostgreSQL at ${host.host}:${host.port} refused to change it (${why}). Run, on a replication connection as a role with REPLICATION (psql "dbname=${cfg.pg.database} replication=database"): ${command}; or set EVENTSTREAM_FAILOVER_SLOT=${failover}`,
      { cause: e },
    );
  } finally {
    await client.end().catch(() => undefined);
  }
  log.info(
    { slot: cfg.slot, failover: want, host: `${host.host}:${host.port}` },
    want
      ? "gave the replication slot the failover flag: standbys that sync slots now keep a copy"
      : "took the failover flag off the replication slot",
  );
}
