import type { Kafka } from "kafkajs";

/**
 * The consumer's one door to the position -> offset search of src/backfill/offsets.ts (branch
 * i10-replay): the first offset per partition at or after a position, an LSN or a time, and the
 * error that says the target is older than the topic still holds.
 * PLACEHOLDER until that branch is merged: nothing here searches.
 */

export class TargetTooOldError extends Error {
  override name = "TargetTooOldError";
}

export type SearchTarget = { kind: "position"; text: string } | { kind: "time"; at: Date };

/** Parses a `from` value that is neither "state", "earliest" nor "latest". */
export function parseSearchTarget(text: string | Date): SearchTarget {
  if (text instanceof Date) return { kind: "time", at: text };
  return { kind: "position", text };
}

/** Per partition of `topic`, the first offset whose event is at or after `target`. */
export function firstOffsetsAt(_kafka: Kafka, topic: string, _target: SearchTarget): Promise<Map<number, bigint>> {
  return Promise.reject(
    new Error(`the position -> offset search (src/backfill/offsets.ts, branch i10-replay) is not merged yet (topic ${topic})`),
  );
}
