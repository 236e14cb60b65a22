import type pg from "pg";
import type { Config } from "../config.js";
import { parseLsn, type Lsn } from "../lsn.js";
import { SlotError, SlotBusyError, sqlState } from "../errors.js";
import type { Logger } from "../log.js";
import type { SourceIdentity } from "../checkpoint/position.js";
import { withSourceClient } from "./connection.js";
import { createSlotSql, readServerKind, wantFailover } from "./failover-slot.js";
import { literal } from "./sql.js";
import { primaryWalLevelError } from "./standby.js";
import { explainStandbySlotWait } from "./standby-setup.js";

/** The slot's state, as pg_replication_slots shows it. */
export interface SlotState {
  /** Where the slot resumes: everything after it is delivered again. */
  confirmedFlushLsn: Lsn;
  /** reserved, extended, unreserved, lost (null before PostgreSQL 13). */
  walStatus: string | null;
  /** Why PostgreSQL invalidated it (PostgreSQL 17+: wal_removed, rows_removed, ...); null before 17 or when valid. */
  invalidationReason: string | null;
}

export interface SourceReady {
  /** null: the slot does not exist. It is created only once the gap check allows (createSlot). */
  slot: SlotState | null;
  /** The server's WAL position, max_slot_wal_keep_size and idle_replication_slot_timeout, for the gap check and its message. */
  walLsn: Lsn;
  maxSlotWalKeepSize: string | null;
  idleReplicationSlotTimeout: string | null;
}

/** The slot now, with the WAL position: after START_REPLICATION, when the slot is this session's. */
export async function readSlotNow(client: pg.Client, cfg: Config): Promise<SourceReady> {
  const row = await readSlot(client, cfg);
  return { slot: row && slotState(row), ...(await serverWal(client)) };
}

/** A row of pg_replication_slots, as readSlot selects it. */
export interface SlotRow {
  plugin: string | null;
  slot_type: string;
  database: string | null;
  active_pid: number | null;
  confirmed_flush_lsn: string | null;
  wal_status: string | null;
  invalidation_reason: string | null;
  /** "true" or "false" from PostgreSQL 17 on; null before. */
  failover: string | null;
}

/** The slot's row, or null; a slot this daemon cannot use (another plugin or database) is an error. */
export async function readSlot(client: pg.Client, cfg: Config): Promise<SlotRow | null> {
  const { rows } = await client.query<SlotRow>(
    // invalidation_reason exists from PostgreSQL 17 on: read through to_jsonb, which has no
    // such key (NULL) on earlier versions instead of failing. PostgreSQL 16 says only that a slot on
    // a standby was invalidated by a conflict with recovery (conflicting): "conflicting" then. Only
    // on a standby: 16.10 also shows conflicting = true for a primary's slot invalidated because its
    // WAL was removed (seen in slot-gap.test.ts), and a primary has no recovery to conflict with.
    `SELECT plugin, slot_type, database, active_pid, confirmed_flush_lsn::text, wal_status,
            COALESCE(to_jsonb(s) ->> 'invalidation_reason',
                     CASE WHEN to_jsonb(s) ->> 'conflicting' = 'true' AND pg_is_in_recovery() THEN 'conflicting' END)
              AS invalidation_reason,
            to_jsonb(s) ->> 'failover' AS failover
       FROM pg_replication_slots s WHERE slot_name = $1`,
    [cfg.slot],
  );
  const slot = rows[0];
  if (!slot) return null;
  const drop = `SELECT pg_drop_replication_slot(${literal(cfg.slot)});`;
  if (slot.slot_type !== "logical" || slot.plugin !== "pgoutput") {
    throw new SlotError(
      `replication slot "${cfg.slot}" exists but is ${slot.slot_type === "logical" ? `a logical slot of plugin "${slot.plugin}"` : "a physical slot"}, not pgoutput. Set EVENTSTREAM_SLOT to another name, or drop it if nothing uses it: ${drop}`,
    );
  }
  if (slot.database !== cfg.pg.database) {
    throw new SlotError(
      `replication slot "${cfg.slot}" belongs to database "${slot.database}", not "${cfg.pg.database}". Set EVENTSTREAM_SLOT to another name, or check PGDATABASE`,
    );
  }
  return slot;
}

export function slotState(row: SlotRow): SlotState {
  return {
    confirmedFlushLsn: parseLsn(row.confirmed_flush_lsn ?? "0/0"),
    walStatus: row.wal_status,
    invalidationReason: row.invalidation_reason,
  };
}

export function slotBusy(cfg: Config, pid: number): SlotBusyError {
  return new SlotBusyError(
    `replication slot "${cfg.slot}" is in use by PostgreSQL backend ${pid} (another airflow-eventstream?); waiting for it to be released`,
  );
}

export async function serverWal(client: pg.Client): Promise<Omit<SourceReady, "slot">> {
  const walLsn = await readWalLsn(client);
  // idle_replication_slot_timeout exists from PostgreSQL 18 on: current_setting(..., true) is NULL before.
  const { rows } = await client.query<{ keep: string | null; idle: string | null }>(
    "SELECT current_setting('max_slot_wal_keep_size', true) AS keep, current_setting('idle_replication_slot_timeout', true) AS idle",
  );
  return { walLsn, maxSlotWalKeepSize: rows[0]?.keep ?? null, idleReplicationSlotTimeout: rows[0]?.idle ?? null };
}

/**
 * Creates the slot, once the gap check found no checkpoint that says one existed before (or when
 * gap detection is off). A peer that created it at the same moment is not an error: its slot is used.
 */
export async function createSlot(cfg: Config, log: Logger): Promise<SlotState> {
  return withSourceClient(cfg, async (client) => {
    const server = await readServerKind(client);
    const failover = wantFailover(cfg, server);
    const createSql = createSlotSql(cfg.slot, server, failover);
    if (!cfg.createSlot) {
      throw new SlotError(
        `replication slot "${cfg.slot}" does not exist and EVENTSTREAM_CREATE_SLOT is false. Run: ${createSql} (the stream starts at the slot's creation: changes before it are not delivered)`,
      );
    }
    const stopExplaining = server.inRecovery ? explainStandbySlotWait(cfg, log) : () => undefined;
    try {
      const created = await client.query<{ lsn: string }>(createSql.replace(/^SELECT /, "SELECT lsn::text FROM ").replace(/;$/, ""));
      log.info(
        { slot: cfg.slot, lsn: created.rows[0]!.lsn, failover, host: `${client.host}:${client.port}` },
        "created replication slot; events start from here",
      );
      return { confirmedFlushLsn: parseLsn(created.rows[0]!.lsn), walStatus: "reserved", invalidationReason: null };
    } catch (e: unknown) {
      if (sqlState(e) !== "42710") throw primaryWalLevelError(e, cfg) ?? e;
      // Created concurrently by a peer.
      const row = await readSlot(client, cfg);
      if (!row) throw e;
      if (row.active_pid !== null) throw slotBusy(cfg, row.active_pid);
      return slotState(row);
    } finally {
      stopExplaining();
    }
  });
}

/**
 * Drops the slot if PostgreSQL invalidated it (it can never stream again); for
 * `airflow-eventstream reset-checkpoint`. Refuses while a daemon streams from the slot. Returns
 * what it found; `dryRun` only checks.
 */
export async function dropInvalidatedSlot(
  cfg: Config,
  log: Logger,
  { dryRun }: { dryRun: boolean },
): Promise<"missing" | "kept" | "dropped"> {
  return withSourceClient(cfg, async (client) => {
    const row = await readSlot(client, cfg);
    if (!row) return "missing";
    if (row.active_pid !== null) {
      throw new SlotError(
        `replication slot "${cfg.slot}" is in use by PostgreSQL backend ${row.active_pid}: stop the airflow-eventstream daemon(s) on this slot before resetting its checkpoint`,
      );
    }
    if (row.wal_status !== "lost") return "kept";
    if (dryRun) return "dropped";
    await client.query("SELECT pg_drop_replication_slot($1)", [cfg.slot]);
    log.info({ slot: cfg.slot, confirmedFlushLsn: row.confirmed_flush_lsn }, "dropped the invalidated replication slot");
    return "dropped";
  });
}

/**
 * Which PostgreSQL cluster and database this is, in both delivery modes whenever the checkpoint
 * topic is in use: every checkpoint carries it, and one written for another cluster is refused
 * when read. pg_control_system() is open to every role on PostgreSQL; where a managed service
 * withholds it, the system identifier is null and not checked.
 */
export async function readSourceIdentity(client: pg.Client): Promise<SourceIdentity> {
  const { rows } = await client.query<{ db: string }>("SELECT current_database() AS db");
  const database = rows[0]!.db;
  try {
    const sys = await client.query<{ sysid: string }>("SELECT system_identifier::text AS sysid FROM pg_control_system()");
    return { systemIdentifier: sys.rows[0]?.sysid ?? null, database };
  } catch {
    return { systemIdentifier: null, database };
  }
}

/** The server's WAL position now: where it inserts (on a standby: where it replays). */
export async function readWalLsn(client: pg.Client): Promise<Lsn> {
  const { rows } = await client.query<{ wal: string | null }>(
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS wal",
  );
  const wal = rows[0]?.wal;
  return wal ? parseLsn(wal) : 0n;
}
