import type { Admin, Kafka, KafkaMessage } from "kafkajs";
import { TransientError } from "../errors.js";
import { privateReader } from "./reader.js";

export interface ReadToEndOptions {
  /** Prefix of the reader's private consumer group. */
  group: string;
  /** Names the topic in errors, e.g. "the state topic"; default "topic". */
  what?: string;
  /** Only these partitions; default all. */
  partitions?: ReadonlySet<number>;
  /** An admin the caller already holds; without one, the read connects its own for the ends. */
  admin?: Admin;
  /** Gives up (TransientError) past this long; default 120 s. */
  timeoutMs?: number;
  /** Called with the consumer's close, so a caller tearing down mid-read can close it too. */
  track?: (close: () => Promise<void>) => void;
  /** Per partition, the offset to start at; default the beginning. */
  from?: ReadonlyMap<number, bigint>;
}

/**
 * Reads `topic` from its beginning (or `from`) to the ends it has when the read starts, handing each
 * record over in offset order per partition; `onRecord` returning true ends its partition's read early. read_committed, like every consumer of the daemon's topics: the ends
 * are the last stable offsets (the admin asks with READ_COMMITTED), so aborted transactions of a
 * fenced writer are not seen; a partition is done when a fetched batch's last offset reaches its end,
 * because the last offset below the end may be a commit marker that no message ever shows (see
 * read-back.ts). Records past the end a partition had at start belong to a later read and are skipped.
 */
export async function readToEnd(
  kafka: Kafka,
  topic: string,
  opts: ReadToEndOptions,
  onRecord: (partition: number, message: KafkaMessage) => boolean | void,
): Promise<void> {
  const ends = await lastOffsets(kafka, topic, opts);
  for (const [p, start] of opts.from ?? []) if (ends.has(p) && start > ends.get(p)!) ends.delete(p);
  if (ends.size === 0) return;
  const what = opts.what ?? "topic";
  const { consumer, close } = privateReader(kafka, opts.group, opts.track ?? (() => undefined));
  const timeoutMs = opts.timeoutMs ?? 120_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => {
        const behind = [...ends.keys()].join(", ");
        reject(new TransientError(`${what} ${topic} was not read to its end within ${timeoutMs} ms (partitions ${behind} behind)`));
      }, timeoutMs);
      consumer.on(consumer.events.CRASH, (e) => {
        if (!e.payload.restart)
          reject(new TransientError(`reading ${what} ${topic} failed (${e.payload.error.message})`, { cause: e.payload.error }));
      });
      const done = (partition: number): void => {
        ends.delete(partition);
        if (ends.size === 0) resolve();
      };
      consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
        const end = ends.get(e.payload.partition);
        if (end === undefined || e.payload.lastOffset === null || BigInt(e.payload.lastOffset) < end) return;
        done(e.payload.partition);
      });
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            const end = ends.get(partition);
            const offset = BigInt(message.offset);
            if (end === undefined || offset > end || offset < (opts.from?.get(partition) ?? 0n)) return;
            if (onRecord(partition, message) === true) done(partition);
          },
        })
        .then(() => {
          for (const [partition, offset] of opts.from ?? []) consumer.seek({ topic, partition, offset: String(offset) });
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await close();
  }
}

/** Per non-empty partition (of those asked for), its last offset below the last stable offset. */
async function lastOffsets(kafka: Kafka, topic: string, opts: ReadToEndOptions): Promise<Map<number, bigint>> {
  const admin = opts.admin ?? kafka.admin();
  if (opts.admin === undefined) await admin.connect();
  try {
    const ends = new Map<number, bigint>();
    for (const o of await admin.fetchTopicOffsets(topic))
      if ((opts.partitions?.has(o.partition) ?? true) && BigInt(o.high) > BigInt(o.low)) ends.set(o.partition, BigInt(o.high) - 1n);
    return ends;
  } finally {
    if (opts.admin === undefined) await admin.disconnect();
  }
}
