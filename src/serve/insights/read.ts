import { Partitioners, type Admin, type Kafka } from "kafkajs";
import { TransientError } from "../../errors.js";
import { privateReader } from "../../sink/reader.js";

/** The events partition of a DAG, as the daemon's producer chose it (kafkajs's default partitioner of the key dag_id). */
export function dagPartitioner(count: number): (dagId: string) => number {
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: count }, (_, i) => ({
    partitionId: i,
    leader: 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }));
  return (dagId) => partitioner({ topic: "", partitionMetadata, message: { key: dagId, value: null } });
}

/**
 * Reads `partitions` of `topic` from their beginnings to the ends they have now (last stable
 * offsets: read_committed, so aborted transactions of a fenced writer are not seen), handing each
 * record's JSON value over in offset order per partition. A partition is done when a fetched batch
 * reaches its end (commit markers included, as the state topic's reader does).
 */
export async function readPartitionsToEnd(
  kafka: Kafka,
  admin: Admin,
  topic: string,
  partitions: ReadonlySet<number>,
  group: string,
  onRecord: (partition: number, value: unknown) => void,
  timeoutMs = 120_000,
): Promise<void> {
  const ends = new Map<number, bigint>();
  for (const o of await admin.fetchTopicOffsets(topic))
    if (partitions.has(o.partition) && BigInt(o.high) > BigInt(o.low)) ends.set(o.partition, BigInt(o.high) - 1n);
  if (ends.size === 0) return;
  const { consumer, close } = privateReader(kafka, group, () => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new TransientError(`${topic} was not read to its end within ${timeoutMs} ms`)), timeoutMs);
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
            if (end === undefined || BigInt(message.offset) > end || message.value === null) return;
            try {
              onRecord(partition, JSON.parse(message.value.toString("utf8")));
            } catch {
              // Not JSON: not an insight; the caller's schema would refuse it anyway.
            }
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await close();
  }
}
