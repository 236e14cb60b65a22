import type { Config } from "./config.js";
import { withCheckpointStore } from "./sink/checkpoint-store.js";
import { dropInvalidatedSlot } from "./source/slot.js";
import type { Logger } from "./log.js";

/**
 * `airflow-eventstream reset-checkpoint`: the last step of recovering from a gap (SlotGapError),
 * after consumers have re-snapshotted from Airflow's current state. It accepts the gap: deletes
 * this slot's checkpoint (a tombstone in the checkpoint topic) and drops the slot if PostgreSQL
 * invalidated it, so the next `run` starts from the slot as it is, or creates one.
 *
 * A command rather than a setting such as "accept gaps": a setting left on would make the next gap
 * silent again; the command accepts exactly the gap at hand. It refuses while a daemon streams from
 * the slot, and in exactly-once mode writes the tombstone in a transaction of the slot's
 * transactional id, which fences any producer of a daemon still alive.
 */
export interface ResetOutcome {
  slot: "missing" | "kept" | "dropped";
  /** null: no checkpoint topic in use (at-least-once, EVENTSTREAM_GAP_DETECTION=false). */
  checkpoint: "deleted" | "no checkpoint topic" | null;
}

export async function resetCheckpoint(cfg: Config, log: Logger): Promise<ResetOutcome> {
  // The slot first: it refuses while a daemon streams from it, before anything is changed.
  const slotLog = log.child({ module: "source" });
  let checkpoint: ResetOutcome["checkpoint"] = null;
  if (cfg.gapDetection) {
    await dropInvalidatedSlot(cfg, slotLog, { dryRun: true });
    const deleted = await withCheckpointStore(cfg, log.child({ module: "sink" }), (store) => store.delete());
    checkpoint = deleted ? "deleted" : "no checkpoint topic";
    log.info(
      { slot: cfg.slot, topic: cfg.checkpointTopic, outcome: checkpoint },
      checkpoint === "deleted" ? "deleted the checkpoint (tombstone)" : "the checkpoint topic does not exist: no checkpoint to delete",
    );
  }
  const slot = await dropInvalidatedSlot(cfg, slotLog, { dryRun: false });
  return { slot, checkpoint };
}
