import type { TxEvent } from "../decode/types.js";
import { lsnTexts, positionIndex } from "../lsn.js";
import type { SourcePosition } from "./events.js";

/** One row change as the transaction decoder hands it over. */
export type ChangeEvent = Extract<TxEvent, { kind: "change" }>;

/** What the pipeline knows of the transaction a change belongs to. */
export interface TxContext {
  xid: number;
  commitTime: string;
}

/** The last commit LSN `position` formatted, and its two forms: a transaction's changes share them. */
let lastLsn: bigint | null = null;
let lastLsnText = "";
let lastPrefix = "";

/**
 * The `source` every event carries. `position` is src/lsn.ts's formatPosition string: a start reads
 * it back from the event topics (parsePosition) to learn what Kafka holds, so it has one writer;
 * the commit LSN's part of it is formatted once per transaction (BigInt work), not per change.
 */
export function position(ev: ChangeEvent, tx: TxContext): SourcePosition {
  const lsn = ev.commitLsn;
  if (lsn !== lastLsn) {
    lastLsn = lsn;
    const texts = lsnTexts(lsn);
    lastLsnText = texts.text;
    lastPrefix = texts.positionPrefix;
  }
  return {
    commit_lsn: lastLsnText,
    xid: tx.xid,
    index: ev.index,
    position: lastPrefix + positionIndex(ev.index),
    commit_time: tx.commitTime,
  };
}
