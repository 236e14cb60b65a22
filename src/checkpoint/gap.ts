import { formatLsn, type Lsn } from "../lsn.js";
import { type Checkpoint } from "./position.js";
import { formatPosition } from "../lsn.js";

/**
 * Is there a gap between what this daemon has published and what the replication slot can still
 * serve? The silent way CDC tools lose data: a slot invalidated by max_slot_wal_keep_size, or
 * dropped (and maybe recreated, which starts it at the WAL's end). A daemon that simply continues
 * from such a slot publishes what comes next as if nothing had happened.
 *
 * The evidence is the checkpoint's `acked_lsn` (see Checkpoint): the daemon never reports a flush
 * position to PostgreSQL before a checkpoint with acked_lsn at or past it is durably in Kafka. So:
 *
 * - slot invalidated (wal_status "lost"): its WAL is gone; nothing can be read from it. A gap
 *   whether or not there is a checkpoint.
 * - checkpoint present, slot missing (or created by this very session): it was dropped after this
 *   daemon streamed from it; a new slot would start at the WAL's end.
 * - checkpoint present, slot's confirmed_flush_lsn > acked_lsn: this daemon never confirmed that
 *   far, so the slot was recreated, or advanced (pg_replication_slot_advance), by something else.
 *   Nothing in between is known to be in Kafka.
 *
 * A slot *behind* acked_lsn is normal: the daemon persists acked_lsn first and reports after, and
 * a crash between the two leaves the slot behind; the changes in between are delivered again.
 * A checkpoint of an earlier version (no acked_lsn) allows only the first two checks.
 *
 * Pure: src/startup.ts (refuseGap) gathers the facts and throws SlotGapError with `gapMessage`.
 */

export interface SlotFacts {
  slot: string;
  /** null: the slot does not exist. */
  state: {
    confirmedFlushLsn: Lsn;
    /** pg_replication_slots.wal_status: reserved, extended, unreserved, lost (null before PostgreSQL 13). */
    walStatus: string | null;
    /**
     * PostgreSQL 17+: why it was invalidated (wal_removed, rows_removed, wal_level_insufficient, idle_timeout); on 16 "conflicting"
     * for a standby's slot invalidated by a conflict with recovery; null otherwise.
     */
    invalidationReason: string | null;
    /** This session created it (after finding no checkpoint): a checkpoint found later means a race with a dropped slot. */
    createdNow: boolean;
  } | null;
  /** The server's WAL position now: where a newly created slot starts. */
  walLsn: Lsn;
  /** SHOW max_slot_wal_keep_size, for the message; null when unknown. */
  maxSlotWalKeepSize: string | null;
  /** SHOW idle_replication_slot_timeout (PostgreSQL 18+), for the message; null before 18 or when unknown. */
  idleReplicationSlotTimeout: string | null;
}

export type GapReason = "slot_lost" | "slot_missing" | "slot_ahead";

export type GapVerdict =
  | {
      kind: "ok";
      /** What the decision rests on, for the log. */
      basis:
        "no checkpoint" | "acked_lsn" | "checkpoint without acked_lsn (earlier version): only a missing or invalidated slot is detected";
    }
  | {
      kind: "gap";
      reason: GapReason;
      /** Changes after this LSN are missing (null: the checkpoint does not say). */
      from: Lsn | null;
      /** ... up to this one: the slot's position, or the WAL's end. */
      to: Lsn;
    };

export function assessGap(cp: Checkpoint | null, facts: SlotFacts): GapVerdict {
  const slot = facts.state;
  if (slot !== null && slot.walStatus === "lost") {
    // What Kafka has ends at the checkpoint, or at least at the slot's last confirmed position.
    const acked = cp?.ackedLsn ?? 0n;
    return { kind: "gap", reason: "slot_lost", from: acked > slot.confirmedFlushLsn ? acked : slot.confirmedFlushLsn, to: facts.walLsn };
  }
  if (cp === null) return { kind: "ok", basis: "no checkpoint" };
  const published = cp.ackedLsn ?? cp.position?.commitLsn ?? null;
  if (slot === null || slot.createdNow) {
    return { kind: "gap", reason: "slot_missing", from: published, to: slot?.confirmedFlushLsn ?? facts.walLsn };
  }
  if (cp.ackedLsn === null)
    return { kind: "ok", basis: "checkpoint without acked_lsn (earlier version): only a missing or invalidated slot is detected" };
  if (slot.confirmedFlushLsn > cp.ackedLsn) return { kind: "gap", reason: "slot_ahead", from: cp.ackedLsn, to: slot.confirmedFlushLsn };
  return { kind: "ok", basis: "acked_lsn" };
}

export interface GapContext {
  slot: string;
  /** Where the checkpoint lives (null: at-least-once with EVENTSTREAM_GAP_DETECTION=false). */
  checkpointTopic: string | null;
  /** The slot was created by this session and it is kept (only when a race let that happen). */
  createSlot: boolean;
}

/** The operator-facing message: what happened, between which LSNs, that events were lost, how to recover. */
export function gapMessage(v: Extract<GapVerdict, { kind: "gap" }>, cp: Checkpoint | null, facts: SlotFacts, ctx: GapContext): string {
  const from = v.from === null ? "the last checkpoint" : `LSN ${formatLsn(v.from)}`;
  const to = formatLsn(v.to);
  const where =
    ctx.checkpointTopic === null
      ? ""
      : ` (checkpoint of slot "${ctx.slot}" in topic ${ctx.checkpointTopic}${cp ? describeCheckpoint(cp) : ""})`;
  let what: string;
  switch (v.reason) {
    case "slot_lost":
      what =
        `replication slot "${ctx.slot}" was invalidated by PostgreSQL (wal_status "lost": ${invalidationWhy(facts.state?.invalidationReason ?? null, facts)}). ` +
        `Changes committed after ${from}${where} up to the current WAL position ${to} can no longer be read`;
      break;
    case "slot_missing":
      what =
        `replication slot "${ctx.slot}" does not exist${facts.state?.createdNow ? " (it was created just now, after this daemon had streamed from an earlier one)" : ""}, ` +
        `but this daemon had streamed from it up to ${from}${where}: it was dropped (by an operator, a failover to a server without the slot, or a restore). ` +
        `A new slot starts at the current WAL position ${to}, so changes committed between ${from} and ${to} would never be published` +
        (facts.state?.createdNow ? "" : ". Nothing was created");
      break;
    case "slot_ahead":
      what =
        `replication slot "${ctx.slot}" is at LSN ${to}, past the last position this daemon ever acknowledged, ${from}${where}: ` +
        `the slot was dropped and recreated, or advanced, by something other than this daemon. ` +
        `Changes committed between ${from} and ${to} were never published`;
      break;
  }
  return (
    `GAP IN THE EVENT STREAM: ${what}. EVENTS WERE LOST, and the daemon stops rather than continue past the gap silently. ` +
    `To recover: (1) re-snapshot: have every consumer reconcile its state from Airflow's current state (the task_instance and dag_run tables, or Airflow's REST API), ` +
    `since transitions in that range will never arrive; (2) run \`airflow-eventstream reset-checkpoint\` with this same configuration: it deletes the checkpoint` +
    `${v.reason === "slot_lost" ? " and drops the invalidated slot" : ""}, which accepts the gap; (3) start the daemon again: it streams from ` +
    `${v.reason === "slot_ahead" ? "the slot's current position" : ctx.createSlot ? "a new slot, created at the WAL's end then" : "a slot you create (EVENTSTREAM_CREATE_SLOT is false)"}. ` +
    `See docs/delivery.md, "Gaps: an invalidated, dropped or recreated slot"`
  );
}

/**
 * Why the server invalidated the slot, in words an operator can act on. Before PostgreSQL 17 there
 * is no invalidation_reason; a primary then invalidates a slot for one reason only, WAL removed.
 */
export function invalidationWhy(
  reason: string | null,
  facts: Pick<SlotFacts, "maxSlotWalKeepSize" | "idleReplicationSlotTimeout">,
): string {
  switch (reason) {
    case null:
    case "wal_removed":
      return (
        `${reason === null ? "" : 'invalidation_reason "wal_removed": '}it fell more than max_slot_wal_keep_size` +
        `${facts.maxSlotWalKeepSize ? ` (${facts.maxSlotWalKeepSize})` : ""} behind and the WAL it still needed was removed; ` +
        `raise max_slot_wal_keep_size (-1: no limit, at the cost of disk) or keep the daemon's downtime and lag below it`
      );
    case "rows_removed":
      return (
        `invalidation_reason "rows_removed": this server is a standby and the primary removed rows of its system catalogs that the slot still needed to decode. ` +
        `Set hot_standby_feedback = on on the standby and have it stream through a physical replication slot on the primary (primary_slot_name): ` +
        `the primary then keeps those rows until the standby no longer needs them`
      );
    case "wal_level_insufficient":
      return (
        `invalidation_reason "wal_level_insufficient": the primary's wal_level went below logical, so its WAL no longer carries what decoding needs. ` +
        `Set wal_level = logical on the primary again (ALTER SYSTEM SET wal_level = logical; then restart it)`
      );
    case "idle_timeout": {
      const t = facts.idleReplicationSlotTimeout;
      return (
        `invalidation_reason "idle_timeout": no one streamed from it for longer than idle_replication_slot_timeout${t ? ` (${t})` : ""}, ` +
        `so a daemon stopped (or unable to connect) for that long loses its slot. Raise idle_replication_slot_timeout (0 turns it off) ` +
        `or keep the daemon's downtime below it`
      );
    }
    case "conflicting":
      return (
        `conflicting with recovery on this standby: PostgreSQL 16 does not say whether the primary removed catalog rows the slot needed (rows_removed) ` +
        `or its wal_level went below logical (wal_level_insufficient). Keep wal_level = logical on the primary, and hot_standby_feedback = on on the standby ` +
        `with a physical replication slot on the primary (primary_slot_name)`
      );
    default:
      return `invalidation_reason "${reason}", as PostgreSQL gave it (see pg_replication_slots in the documentation of your PostgreSQL version)`;
  }
}

function describeCheckpoint(cp: Checkpoint): string {
  const parts: string[] = [];
  if (cp.position) parts.push(`last event ${formatPosition(cp.position)}`);
  if (cp.writtenAt) parts.push(`written ${cp.writtenAt}`);
  return parts.length > 0 ? `: ${parts.join(", ")}` : "";
}
