import type { Kafka } from "kafkajs";
import { readToEnd } from "./read-to-end.js";
import { applyStateRecord, emptyState, type FoldedState } from "./state-topic.js";

export interface ReadStateOptions {
  /** Gives up (TransientError) past this long; default 120 s. */
  timeoutMs?: number;
  /** Prefix of the reader's private consumer group; default "airflow-eventstream". */
  clientId?: string;
  /** Called with each consumer close, so a caller tearing down mid-read can close it too. */
  track?: (close: () => Promise<void>) => void;
}

export interface CurrentState extends FoldedState {
  /** Records read (tombstones included). */
  records: number;
}

/**
 * Reads the current-state topic from its beginning to the ends it has when the read starts, folding
 * each record as it comes (applyStateRecord): memory holds one entry per live key, whatever the
 * topic's uncompacted length. read_committed, to the last stable offsets (readToEnd).
 *
 * The result is the state as of `position` (the highest read) for the records below the ends: a
 * reader then takes the event topic from the events after it, applying them the same way.
 */
export async function readCurrentState(kafka: Kafka, topic: string, opts: ReadStateOptions = {}): Promise<CurrentState> {
  const state: CurrentState = { ...emptyState(), records: 0 };
  const group = `${opts.clientId ?? "airflow-eventstream"}.state-read`;
  await readToEnd(kafka, topic, { group, what: "the state topic", timeoutMs: opts.timeoutMs, track: opts.track }, (_partition, message) => {
    state.records++;
    applyStateRecord(state, message.key, message.value);
  });
  return state;
}
