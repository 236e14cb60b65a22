import type { Config } from "./config.js";
import { GAP_MESSAGE_PREFIX, gapMessage } from "./checkpoint/gap-event.js";
import { formatLsn } from "./lsn.js";
import { SlotGapError } from "./errors.js";
import { withCheckpointStore } from "./sink/checkpoint-store.js";
import { requestSnapshot } from "./snapshot/request.js";
import { withSourceClient } from "./source/connection.js";
import { standbyWriteError } from "./source/standby.js";
import { createSlot, readSlot, slotBusy } from "./source/slot.js";
import type { Logger } from "./log.js";

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
export async function recoverFromGap(cfg: Config, log: Logger, gap: SlotGapError): Promise<void> {
  const facts = gap.gap;
  const present = await withSourceClient(cfg, async (client) => {
    const row = await readSlot(client, cfg);
    if (row === null) return false;
    if (row.active_pid !== null) throw slotBusy(cfg, row.active_pid);
    if (row.wal_status !== "lost") return true;
    await client.query("SELECT pg_drop_replication_slot($1)", [cfg.slot]);
    log.warn({ slot: cfg.slot }, "gap recovery: dropped the invalidated replication slot");
    return false;
  });
  if (!present) {
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
      // The request makes no event; the snapshot's rows come at its watermarks, after the gap's event.
      const spec = await requestSnapshot(client, {});
      await client.query("SELECT pg_logical_emit_message(true, $1, $2)", [GAP_MESSAGE_PREFIX, JSON.stringify(gapMessage(facts, spec.id))]);
      await client.query("COMMIT");
      return spec.id;
    } catch (e: unknown) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw standbyWriteError(e, "EVENTSTREAM_ON_GAP=snapshot's gap record and snapshot request") ?? e;
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
