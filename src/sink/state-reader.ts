import type { Kafka } from "kafkajs";
import { TransientError } from "../errors.js";
import { privateReader } from "./reader.js";
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
 * topic's uncompacted length. read_committed, like every consumer of the daemon's topics: the ends
 * are the last stable offsets (the admin asks with READ_COMMITTED), and a partition is done when a
 * fetched batch's last offset (commit markers included, see read-back.ts) reaches its end.
 *
 * The result is the state as of `position` (the highest read) for the records below the ends: a
 * reader then takes the event topic from the events after it, applying them the same way.
 */
export async function readCurrentState(kafka: Kafka, topic: string, opts: ReadStateOptions = {}): Promise<CurrentState> {
  const state: CurrentState = { ...emptyState(), records: 0 };
  const ends = await endOffsets(kafka, topic);
  if (ends.size === 0) return state;
  const { consumer, close } = privateReader(kafka, `${opts.clientId ?? "airflow-eventstream"}.state-read`, opts.track ?? (() => undefined));
  const timeoutMs = opts.timeoutMs ?? 120_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new TransientError(
              `the state topic ${topic} was not read to its end within ${timeoutMs} ms (partitions ${[...ends.keys()].join(", ")} behind)`,
            ),
          ),
        timeoutMs,
      );
      consumer.on(consumer.events.CRASH, (e) => {
        if (!e.payload.restart)
          reject(new TransientError(`reading the state topic ${topic} failed (${e.payload.error.message})`, { cause: e.payload.error }));
      });
      consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
        const end = ends.get(e.payload.partition);
        if (end === undefined || e.payload.lastOffset === null || BigInt(e.payload.lastOffset) < end) return;
        ends.delete(e.payload.partition);
        if (ends.size === 0) resolve();
      });
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            const end = ends.get(partition);
            // Past the end read at start (or a partition done): a later state, not this read's.
            if (end === undefined || BigInt(message.offset) > end) return;
            state.records++;
            applyStateRecord(state, message.key, message.value);
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await close();
  }
  return state;
}

/** Per non-empty partition, its last offset below the last stable offset. */
async function endOffsets(kafka: Kafka, topic: string): Promise<Map<number, bigint>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const ends = new Map<number, bigint>();
    for (const o of await admin.fetchTopicOffsets(topic)) if (BigInt(o.high) > BigInt(o.low)) ends.set(o.partition, BigInt(o.high) - 1n);
    return ends;
  } finally {
    await admin.disconnect();
  }
}
