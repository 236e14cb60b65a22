import type { TxEvent } from "../decode/types.js";
import { formatLsn } from "../lsn.js";
import { formatPosition } from "../lsn.js";
import type { SourcePosition } from "./events.js";

/** One row change as the transaction decoder hands it over. */
export type ChangeEvent = Extract<TxEvent, { kind: "change" }>;

/** What the pipeline knows of the transaction a change belongs to. */
export interface TxContext {
  xid: number;
  commitTime: string;
}

/**
 * The `source` every event carries. `position` is src/lsn.ts's formatPosition string: a start reads
 * it back from the event topics (parsePosition) to learn what Kafka holds, so it has one writer.
 */
export function position(ev: ChangeEvent, tx: TxContext): SourcePosition {
  return {
    commit_lsn: formatLsn(ev.commitLsn),
    xid: tx.xid,
    index: ev.index,
    position: formatPosition({ commitLsn: ev.commitLsn, index: ev.index }),
    commit_time: tx.commitTime,
  };
}
