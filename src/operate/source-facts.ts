import type pg from "pg";
import type { Config } from "../config.js";
import { assessGap, gapMessage, invalidationWhy } from "../checkpoint/gap.js";
import type { Checkpoint } from "../checkpoint/position.js";
import { formatLsn, type Lsn } from "../lsn.js";
import { readSlot, serverWal, slotState, type SlotRow } from "../source/slot.js";
import { literal } from "../source/sql.js";
import type { Finding } from "./report.js";

/** The slot as `status` and `check` report it: pg_replication_slots, with the byte distances worked out by the server. */
export interface SlotReport {
  /** null: the slot does not exist. */
  row: SlotRow | null;
  /** Server WAL position minus confirmed_flush_lsn: what the daemon has yet to confirm. */
  lagBytes: bigint | null;
  /** Server WAL position minus restart_lsn: the WAL the slot keeps on the server's disk. */
  retainedBytes: bigint | null;
  /** PostgreSQL 13+: bytes left before max_slot_wal_keep_size invalidates it (null: no limit, or missing). */
  safeWalSize: bigint | null;
  walLsn: Lsn;
  maxSlotWalKeepSize: string | null;
  idleReplicationSlotTimeout: string | null;
}

export async function readSlotReport(client: pg.Client, cfg: Config): Promise<SlotReport> {
  const row = await readSlot(client, cfg);
  const wal = await serverWal(client);
  if (row === null) return { row, lagBytes: null, retainedBytes: null, safeWalSize: null, ...wal };
  const { rows } = await client.query<{ lag: string | null; retained: string | null; safe: string | null }>(
    `SELECT (w.lsn - s.confirmed_flush_lsn)::text AS lag, (w.lsn - s.restart_lsn)::text AS retained,
            (to_jsonb(s) ->> 'safe_wal_size') AS safe
       FROM pg_replication_slots s,
            (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn) w
      WHERE s.slot_name = $1`,
    [cfg.slot],
  );
  const big = (v: string | null | undefined) => (v === null || v === undefined ? null : BigInt(v.split(".")[0]!));
  return { row, lagBytes: big(rows[0]?.lag), retainedBytes: big(rows[0]?.retained), safeWalSize: big(rows[0]?.safe), ...wal };
}

/**
 * The slot as `check` sees it before a start: missing is a warning when the daemon creates it, an
 * invalidated slot a problem; a slot in use is fine (a daemon streams from it; another one waits).
 */
export function slotFinding(cfg: Config, s: SlotReport): Finding {
  const check = "replication slot";
  const row = s.row;
  if (row === null) {
    const create = `SELECT pg_create_logical_replication_slot(${literal(cfg.slot)}, 'pgoutput');`;
    return cfg.createSlot
      ? { check, verdict: "warning", detail: `slot "${cfg.slot}" does not exist: the first start creates it, and events start there` }
      : {
          check,
          verdict: "problem",
          detail: `slot "${cfg.slot}" does not exist and EVENTSTREAM_CREATE_SLOT is false. Run: ${create} (the stream starts at the slot's creation)`,
        };
  }
  if (row.wal_status === "lost") {
    return {
      check,
      verdict: "problem",
      detail: `slot "${cfg.slot}" was invalidated by PostgreSQL (wal_status lost: ${invalidationWhy(row.invalidation_reason, s)}): it can never stream again; see the gap verdict for what to do`,
    };
  }
  const where = `at ${row.confirmed_flush_lsn ?? "?"}, ${lagText(s)}`;
  if (row.wal_status === "unreserved") {
    return {
      check,
      verdict: "warning",
      detail: `slot "${cfg.slot}" (${where}) is more than max_slot_wal_keep_size (${s.maxSlotWalKeepSize}) behind: PostgreSQL invalidates it at its next checkpoint unless the daemon catches up first`,
    };
  }
  const holder = row.active_pid === null ? "not in use" : `in use by PostgreSQL backend ${row.active_pid}`;
  return { check, verdict: "ok", detail: `slot "${cfg.slot}" exists (${where}; ${holder}; wal_status ${row.wal_status ?? "unknown"})` };
}

export function lagText(s: SlotReport): string {
  return `lag ${bytes(s.lagBytes)}, WAL retained ${bytes(s.retainedBytes)}`;
}

export function bytes(n: bigint | null): string {
  if (n === null) return "unknown";
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 ** 2) return `${(v / 1024).toFixed(1)} KiB`;
  if (v < 1024 ** 3) return `${(v / 1024 ** 2).toFixed(1)} MiB`;
  return `${(v / 1024 ** 3).toFixed(2)} GiB`;
}

/** The start's gap verdict (src/checkpoint/gap.ts), for the checkpoint read without writing. */
export function gapFinding(cfg: Config, cp: Checkpoint | null, s: SlotReport): Finding {
  const check = "gap verdict";
  const facts = {
    slot: cfg.slot,
    state: s.row === null ? null : { ...slotState(s.row), createdNow: false },
    walLsn: s.walLsn,
    maxSlotWalKeepSize: s.maxSlotWalKeepSize,
    idleReplicationSlotTimeout: s.idleReplicationSlotTimeout,
  };
  const v = assessGap(cp, facts);
  if (v.kind === "ok") {
    const acked = cp === null || cp.ackedLsn === null ? "" : ` (checkpoint acked_lsn ${formatLsn(cp.ackedLsn)})`;
    return { check, verdict: "ok", detail: `no gap: ${v.basis}${acked}` };
  }
  return {
    check,
    verdict: "problem",
    detail: gapMessage(v, cp, facts, { slot: cfg.slot, checkpointTopic: cfg.checkpointTopic, createSlot: cfg.createSlot }),
  };
}

/**
 * PostgreSQL 18's idle_replication_slot_timeout invalidates a slot no one has streamed from for
 * that long, at the next checkpoint: a daemon stopped (an outage, a long maintenance window) longer
 * than that loses its slot, and its next start reports a gap. A warning, not a problem: the
 * setting is legitimate, the operator has to know the bound.
 */
export async function idleTimeoutFinding(client: pg.Client): Promise<Finding> {
  const check = "idle_replication_slot_timeout";
  const { rows } = await client.query<{ shown: string; setting: string }>(
    "SELECT current_setting(name) AS shown, setting FROM pg_settings WHERE name = 'idle_replication_slot_timeout'",
  );
  const row = rows[0];
  if (!row)
    return {
      check,
      verdict: "ok",
      detail: "not on this server (PostgreSQL 17 or earlier): an idle slot is never invalidated for idleness",
    };
  if (Number(row.setting) <= 0) return { check, verdict: "ok", detail: "0 (off): an idle slot is not invalidated for idleness" };
  return {
    check,
    verdict: "warning",
    detail: `${row.shown}: if the daemon is down (or cannot connect) longer than ${row.shown}, PostgreSQL invalidates its slot at the next checkpoint (invalidation_reason idle_timeout) and the next start reports a gap; raise it above the longest outage you plan for, or set it to 0`,
  };
}
