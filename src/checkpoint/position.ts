import { z } from "zod";
import { CheckpointError } from "../errors.js";
import { comparePositions, formatLsn, formatPosition, parseLsn, parsePosition, type Lsn, type Position } from "../lsn.js";

/**
 * The checkpoint record, the value under key = slot name in the checkpoint topic (compacted).
 *
 * `position`: every event at or before it is in Kafka. Exactly-once writes it in the same Kafka
 * transaction as the events it covers and skips by it after a restart; at-least-once writes the
 * position of the last event Kafka acknowledged, and does not skip by it.
 *
 * `acked_lsn`: an upper bound of what this daemon ever reports to PostgreSQL as flushed. The
 * daemon sends a flush position X to PostgreSQL only once a checkpoint with acked_lsn >= X is
 * durably in Kafka, so the slot's confirmed_flush_lsn can never be past it by the daemon's doing;
 * a slot found past it was recreated or moved by something else, and a missing slot with a
 * checkpoint present was dropped (src/checkpoint/gap.ts). Both are gaps: events in between were
 * never published. (It may run one batch ahead of what Kafka has: see CheckpointStore.next.)
 *
 * `system_identifier` is PostgreSQL's (pg_control_system()): positions of another cluster are not
 * comparable, so a checkpoint from one must never be used to skip changes of this one.
 *
 * The format is still version 1: acked_lsn and a null position were added without changing the
 * meaning of the other fields, so a record written by an earlier version (no acked_lsn) is read
 * as "acked_lsn unknown", and an earlier version reads the new records (it ignores acked_lsn).
 */
export interface Checkpoint {
  /** The last event published under this slot; null while none has been. */
  position: Position | null;
  /** See above; null in a record written by a version before acked_lsn existed (unknown). */
  ackedLsn: Lsn | null;
  slot: string;
  /** null when the server did not tell (the check is then skipped). */
  systemIdentifier: string | null;
  database: string | null;
  writtenAt: string | null;
  /** Snapshot jobs' progress (src/snapshot/spec.ts, validated there), carried with the checkpoint; absent: none. */
  snapshot?: unknown;
}

export const CHECKPOINT_VERSION = 1;

const CheckpointValue = z.object({
  version: z.literal(CHECKPOINT_VERSION),
  slot: z.string(),
  // Required keys, null before the first event: a record missing one is refused, not guessed at.
  position: z.string().nullable(),
  commit_lsn: z.string().nullable(),
  index: z.number().int().nonnegative().max(0xffffffff).nullable(),
  acked_lsn: z.string().nullable().optional(),
  system_identifier: z.string().nullable().optional(),
  database: z.string().nullable().optional(),
  written_at: z.string().nullable().optional(),
  snapshot: z.unknown().optional(),
});

export function encodeCheckpoint(cp: Checkpoint): string {
  const p = cp.position;
  return JSON.stringify({
    version: CHECKPOINT_VERSION,
    slot: cp.slot,
    position: p === null ? null : formatPosition(p),
    commit_lsn: p === null ? null : formatLsn(p.commitLsn),
    index: p === null ? null : p.index,
    acked_lsn: cp.ackedLsn === null ? null : formatLsn(cp.ackedLsn),
    system_identifier: cp.systemIdentifier,
    database: cp.database,
    written_at: cp.writtenAt,
    ...(cp.snapshot === undefined || cp.snapshot === null ? {} : { snapshot: cp.snapshot }),
  });
}

/**
 * Reads a checkpoint value. The position is taken from `commit_lsn` and `index` as numbers, and
 * the `position` text must agree with them: a record that does not parse or contradicts itself
 * stops the daemon (CheckpointError) rather than being guessed at, since skipping by a wrong
 * position would drop events.
 */
export function parseCheckpoint(value: string, where: string): Checkpoint {
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch (e: unknown) {
    throw new CheckpointError(`${where} is not JSON (${(e as Error).message}). ${CHECKPOINT_FIX}`, { cause: e });
  }
  const parsed = CheckpointValue.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "value"}: ${i.message}`).join("; ");
    throw new CheckpointError(`${where} is not a checkpoint of this version (${issues}). ${CHECKPOINT_FIX}`);
  }
  const v = parsed.data;
  const given = [v.position, v.commit_lsn, v.index].filter((x) => x !== null).length;
  if (given !== 0 && given !== 3) {
    throw new CheckpointError(`${where} has some of position, commit_lsn and index null but not all. ${CHECKPOINT_FIX}`);
  }
  let position: Position | null = null;
  let ackedLsn: Lsn | null = null;
  try {
    if (v.position !== null && v.commit_lsn !== null && v.index !== null) {
      position = { commitLsn: parseLsn(v.commit_lsn), index: v.index };
      const fromText = parsePosition(v.position);
      if (comparePositions(position, fromText) !== 0) {
        throw new CheckpointError(
          `${where} contradicts itself: position ${v.position} but commit_lsn ${v.commit_lsn} index ${v.index}. ${CHECKPOINT_FIX}`,
        );
      }
    }
    if (v.acked_lsn !== undefined && v.acked_lsn !== null) ackedLsn = parseLsn(v.acked_lsn);
  } catch (e: unknown) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`${where}: ${(e as Error).message}. ${CHECKPOINT_FIX}`, { cause: e });
  }
  return {
    position,
    ackedLsn,
    slot: v.slot,
    systemIdentifier: v.system_identifier ?? null,
    database: v.database ?? null,
    writtenAt: v.written_at ?? null,
    ...(v.snapshot === undefined || v.snapshot === null ? {} : { snapshot: v.snapshot }),
  };
}

export const CHECKPOINT_FIX =
  "To start over from the slot (events not yet acknowledged to PostgreSQL may then be published twice), delete the record: run `airflow-eventstream reset-checkpoint` with the same configuration (it writes a tombstone, a null value, for this key), or produce the tombstone yourself, e.g. `kcat -P -b BROKER -t TOPIC -K: -Z <<< 'SLOT:'`, or set EVENTSTREAM_CHECKPOINT_TOPIC to a new topic";

/** Which PostgreSQL cluster and database a checkpoint belongs to. */
export interface SourceIdentity {
  /** pg_control_system().system_identifier; null when the server would not say. */
  systemIdentifier: string | null;
  database: string;
}
