import { z } from "zod";
import type { StreamGapEvent } from "../airflow/events.js";
import type { TxContext } from "../airflow/envelope.js";
import type { GapFacts } from "../errors.js";
import { formatLsn, formatPosition, type Lsn } from "../lsn.js";

/** The prefix of the logical decoding message that records a gap in the WAL (pg_logical_emit_message). */
export const GAP_MESSAGE_PREFIX = "airflow-eventstream.gap";

export const GapMessage = z.object({
  reason: z.enum(["slot_lost", "slot_missing", "slot_ahead"]),
  from_lsn: z.string().nullable(),
  to_lsn: z.string(),
  checkpoint_written_at: z.string().nullable(),
  detected_at: z.string(),
  snapshot: z.string().nullable(),
});

/** The gap message's content: what SlotGapError found, and the snapshot requested with it. */
export function gapMessage(facts: GapFacts, snapshot: string): z.infer<typeof GapMessage> {
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
