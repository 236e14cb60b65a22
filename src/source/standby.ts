import type pg from "pg";
import type { Config } from "../config.js";
import { UserActionError, WalLevelError, coerceError, sqlState } from "../errors.js";
import type { Logger } from "../log.js";

/**
 * Decoding from a hot standby (PostgreSQL 16+), what it needs, as measured on 16, 17 and 18
 * standbys (test/integration/standby-preflight.test.ts):
 *
 * - PostgreSQL 16 or later: before 16, creating or using a logical slot in recovery is refused.
 * - hot_standby_feedback = on: without it the primary's vacuum removes catalog rows the slot still
 *   needs, and the standby invalidates the slot (rows_removed): a gap. A physical slot on the
 *   primary (primary_slot_name) keeps that protection across the standby's disconnections.
 * - wal_level = logical on the standby itself (checkWalLevel) and on the primary: a primary below
 *   logical refuses the slot's creation, and lowering it later invalidates the slot
 *   (wal_level_insufficient).
 * - The publication and REPLICA IDENTITY FULL exist on the primary: a standby is read-only, and
 *   they reach it through the WAL.
 * - Creating the slot waits for the primary's next running-transactions record (the bgwriter
 *   writes one about every 15 s while the primary is busy; measured 19 s on 16).
 * - pg_logical_emit_message is refused in recovery (XX000 "cannot assign TransactionIds during
 *   recovery"): snapshots and EVENTSTREAM_ON_GAP=snapshot, which write their requests and
 *   watermarks with it, do not work when the daemon streams from a standby.
 */

export interface StandbyFacts {
  inRecovery: boolean;
  serverVersionNum: number;
  /** SHOW hot_standby_feedback: "on" / "off". */
  hotStandbyFeedback: string | null;
  /** SHOW primary_slot_name: "" when the standby streams without a physical slot. */
  primarySlotName: string | null;
}

export async function readStandbyFacts(client: pg.Client): Promise<StandbyFacts> {
  const { rows } = await client.query<{ r: boolean; v: string; hsf: string | null; slot: string | null }>(
    `SELECT pg_is_in_recovery() AS r, current_setting('server_version_num') AS v,
            current_setting('hot_standby_feedback', true) AS hsf, current_setting('primary_slot_name', true) AS slot`,
  );
  const r = rows[0]!;
  return { inRecovery: r.r, serverVersionNum: Number(r.v), hotStandbyFeedback: r.hsf, primarySlotName: r.slot };
}

export interface StandbyVerdict {
  /** The daemon must not stream from this server: what to do. */
  problem: string | null;
  warnings: string[];
}

/**
 * hot_standby_feedback off is a problem, not a warning: the slot would be invalidated at the
 * primary's first vacuum of catalog rows it still needs (Airflow's own DDL and temporary tables
 * make such rows), every change after that point would be lost, and the fix is a reload, not a
 * restart. A missing physical slot only narrows the protection to the times the standby is
 * connected: a warning.
 */
export function standbyVerdict(f: StandbyFacts): StandbyVerdict {
  if (!f.inRecovery) return { problem: null, warnings: [] };
  const version = `${Math.floor(f.serverVersionNum / 10000)}`;
  if (f.serverVersionNum < 160000) {
    return {
      problem:
        `this server is a standby (in recovery) running PostgreSQL ${version}: logical decoding from a standby needs PostgreSQL 16 or later. ` +
        `Point PGHOST at the primary, or upgrade the standby and its primary to PostgreSQL 16+`,
      warnings: [],
    };
  }
  if (f.hotStandbyFeedback !== "on") {
    return {
      problem:
        `this server is a standby with hot_standby_feedback ${f.hotStandbyFeedback ?? "unknown"}: the primary's vacuum would remove catalog rows the slot still needs, ` +
        `and the standby would invalidate the slot (invalidation_reason rows_removed), losing every change after it. ` +
        `On this standby run: ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf(); (no restart needed)`,
      warnings: [],
    };
  }
  const warnings: string[] = [];
  if (!f.primarySlotName) {
    warnings.push(
      "this standby streams from its primary without a physical replication slot (primary_slot_name is empty): hot_standby_feedback protects the slot only while the standby is connected, " +
        "so a disconnection lets the primary's vacuum remove catalog rows the slot needs (rows_removed). Create a physical slot on the primary and set primary_slot_name on the standby",
    );
  }
  return { problem: null, warnings };
}

/** Start-up: throws on a standby the daemon cannot decode from, logs the warnings; returns whether it is a standby. */
export async function checkStandby(client: pg.Client, log: Logger): Promise<boolean> {
  const facts = await readStandbyFacts(client);
  const v = standbyVerdict(facts);
  if (v.problem !== null) throw new UserActionError(v.problem);
  for (const w of v.warnings) log.warn({ primarySlotName: facts.primarySlotName }, w);
  return facts.inRecovery;
}

/** The error PostgreSQL gives pg_logical_emit_message (or any write) in recovery. */
export function isRecoveryWriteError(e: unknown): boolean {
  return sqlState(e) === "25006" || /during recovery/.test(coerceError(e).message);
}

/**
 * A write refused because the server is a standby, explained: `what` names what needed the write.
 * Snapshots are not written on the primary instead: the daemon holds no connection to it (PGHOST
 * is the standby), and its watermarks must be written while it reads the chunk.
 */
export function standbyWriteError(e: unknown, what: string): UserActionError | null {
  if (!isRecoveryWriteError(e)) return null;
  return new UserActionError(
    `${what} writes pg_logical_emit_message, which a standby refuses (PostgreSQL: ${coerceError(e).message}). ` +
      `Snapshots and EVENTSTREAM_ON_GAP=snapshot need a daemon that streams from the primary: point PGHOST at the primary for them, ` +
      `or have consumers reconcile from Airflow's tables instead (docs/operations.md, "Decoding from a standby: prerequisites")`,
    { cause: e },
  );
}

/** The slot's creation refused by a primary whose wal_level is below logical. */
export function primaryWalLevelError(e: unknown, cfg: Config): WalLevelError | null {
  if (!/requires wal_level >= logical on the primary/.test(coerceError(e).message)) return null;
  return new WalLevelError(
    `replication slot "${cfg.slot}" cannot be created on this standby: its primary's wal_level is below logical (PostgreSQL: ${coerceError(e).message}). ` +
      `On the primary run: ALTER SYSTEM SET wal_level = logical; then restart it`,
    { cause: e },
  );
}
