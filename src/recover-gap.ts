import type pg from "pg";
import { z } from "zod";
import type { Config } from "./config.js";
import type { StreamGapEvent } from "./airflow/events.js";
import type { TxContext } from "./airflow/envelope.js";
import { formatLsn, formatPosition, type Lsn } from "./lsn.js";
import { SlotGapError, type GapFacts } from "./errors.js";
import { withCheckpointStore } from "./sink/checkpoint-store.js";
import { withSourceClient } from "./source/connection.js";
import { createSlot, readSlot, slotBusy } from "./source/slot.js";
import type { Logger } from "./log.js";

/** The prefix of the logical decoding message that records a gap in the WAL (pg_logical_emit_message). */
export const GAP_MESSAGE_PREFIX = "airflow-eventstream.gap";

/** How far before the last checkpoint's time a run counts as changed in the gap: clocks of the daemon and the database differ. */
const CLOCK_MARGIN_MS = 5 * 60_000;

const GapMessage = z.object({
  reason: z.enum(["slot_lost", "slot_missing", "slot_ahead"]),
  from_lsn: z.string().nullable(),
  to_lsn: z.string(),
  checkpoint_written_at: z.string().nullable(),
  detected_at: z.string(),
  snapshot: z.string().nullable(),
});

/** What recovery asks the snapshot engine for: the runs that may have changed in the gap. */
export interface GapSnapshot {
  /** Runs changed at or after this time (null: every run), and every run under way. */
  changedSince: string | null;
}

/** Writes a snapshot request into the WAL on `client`, inside the caller's transaction; returns its id. */
export type RequestSnapshot = (client: pg.Client, spec: GapSnapshot) => Promise<string>;

/**
 * EVENTSTREAM_ON_GAP=snapshot: recovers from a detected gap without an operator, in an order that
 * a crash at any step repeats rather than skips. The checkpoint is the evidence of the gap, so it
 * is deleted last, once the gap is recorded where the next session reads it:
 * 1. an invalidated slot is dropped, a missing one created (a crash here: the next start finds the
 *    slot missing or ahead of the checkpoint, i.e. the gap again);
 * 2. one transaction in the new slot's WAL holds a gap message and the snapshot request, so the
 *    next session publishes the `stream_gap` event, in order with everything else, then snapshots
 *    (a crash before it commits: the gap again; after: both come through the slot);
 * 3. the checkpoint is deleted (a crash before: the gap is found again and recorded twice, which
 *    costs a second gap event and snapshot, never a silent gap).
 * The message rides the stream rather than being published here so it is ordered, acknowledged
 * and (exactly-once) committed like every event, by whichever daemon streams next.
 */
export async function recoverFromGap(cfg: Config, log: Logger, gap: SlotGapError, requestSnapshot: RequestSnapshot): Promise<void> {
  const facts = gap.gap;
  await withSourceClient(cfg, async (client) => {
    const row = await readSlot(client, cfg);
    if (row !== null && row.active_pid !== null) throw slotBusy(cfg, row.active_pid);
    if (row !== null && row.wal_status === "lost") {
      await client.query("SELECT pg_drop_replication_slot($1)", [cfg.slot]);
      log.warn({ slot: cfg.slot }, "gap recovery: dropped the invalidated replication slot");
    }
  });
  const present = await withSourceClient(cfg, (client) => readSlot(client, cfg));
  if (present === null) {
    if (!cfg.createSlot)
      throw new SlotGapError(
        `${gap.message} (EVENTSTREAM_ON_GAP=snapshot cannot create the slot: EVENTSTREAM_CREATE_SLOT is false)`,
        facts,
      );
    await createSlot(cfg, log);
  }
  const snapshot = await withSourceClient(cfg, async (client) => {
    await client.query("BEGIN");
    try {
      const id = await requestSnapshot(client, { changedSince: changedSince(facts) });
      await client.query("SELECT pg_logical_emit_message(true, $1, $2)", [GAP_MESSAGE_PREFIX, JSON.stringify(gapMessage(facts, id))]);
      await client.query("COMMIT");
      return id;
    } catch (e: unknown) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw e;
    }
  });
  await withCheckpointStore(cfg, log.child({ module: "sink" }), (store) => store.delete());
  log.warn(
    {
      slot: cfg.slot,
      reason: facts.reason,
      gapFrom: facts.from === null ? null : formatLsn(facts.from),
      gapTo: formatLsn(facts.to),
      snapshot,
    },
    "gap recovery: the gap is recorded in the stream and a snapshot of the runs it may have changed is requested; streaming on",
  );
}

function changedSince(facts: GapFacts): string | null {
  if (facts.checkpointWrittenAt === null) return null;
  const t = Date.parse(facts.checkpointWrittenAt);
  return Number.isNaN(t) ? null : new Date(t - CLOCK_MARGIN_MS).toISOString();
}

function gapMessage(facts: GapFacts, snapshot: string): z.infer<typeof GapMessage> {
  return {
    reason: facts.reason,
    from_lsn: facts.from === null ? null : formatLsn(facts.from),
    to_lsn: formatLsn(facts.to),
    checkpoint_written_at: facts.checkpointWrittenAt,
    detected_at: new Date().toISOString(),
    snapshot,
  };
}

/**
 * The `stream_gap` event for a gap message read from the stream, at the message's place in its
 * transaction. null when the content is not a gap message of this version (logged by the caller).
 */
export function gapEvent(content: Buffer, at: { commitLsn: Lsn; index: number; xid: number }, tx: TxContext): StreamGapEvent | null {
  let json: unknown;
  try {
    json = JSON.parse(content.toString("utf8"));
  } catch {
    return null;
  }
  const m = GapMessage.safeParse(json);
  if (!m.success) return null;
  return {
    type: "stream_gap",
    ...m.data,
    source: {
      commit_lsn: formatLsn(at.commitLsn),
      xid: at.xid,
      index: at.index,
      position: formatPosition({ commitLsn: at.commitLsn, index: at.index }),
      commit_time: tx.commitTime,
    },
  };
}
