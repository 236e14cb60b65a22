import type { Admin, Kafka } from "kafkajs";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import { parseCheckpoint, type Checkpoint } from "../checkpoint/position.js";
import { connectClients, createClients, disconnectClients } from "../sink/client.js";
import { deliveryMode } from "../sink/delivery.js";
import { privateReader } from "../sink/reader.js";

/** Kafka clients for one command, connected (TLS checked first, one attempt), closed after `use`. */
export async function withKafka<T>(cfg: Config, log: Logger, use: (kafka: Kafka, admin: Admin) => Promise<T>): Promise<T> {
  const clients = createClients(cfg, log, true);
  try {
    await connectClients(cfg, clients);
    return await use(clients.kafka, clients.admin);
  } finally {
    await disconnectClients(clients);
  }
}

/** How long a read of the checkpoint topic may wait with nothing new before it counts as at its end. */
const IDLE_END_MS = 2_000;

/**
 * This slot's latest checkpoint, read without writing anything: the daemon's own read (CheckpointStore)
 * writes a sentinel to find the topic's end and, in exactly-once, fences the running daemon's producer;
 * `status` and `check` must do neither. So the topic is read from its beginning to the end offsets
 * fetched first (or until nothing arrives for IDLE_END_MS: a read_committed consumer is never handed
 * the transaction markers that may be the last offsets). A checkpoint written after that moment is not
 * seen, which for a report is as good as seen a moment earlier.
 */
export async function peekCheckpoint(cfg: Config, kafka: Kafka, admin: Admin): Promise<Checkpoint | null | "no topic"> {
  const target = deliveryMode(cfg).ckpt;
  if (target === null) return null;
  if (!(await admin.listTopics()).includes(target.topic)) return "no topic";
  const ends = new Map((await admin.fetchTopicOffsets(target.topic)).map((o) => [o.partition, BigInt(o.high)] as const));
  const pending = new Set([...ends].filter(([, end]) => end > 0n).map(([p]) => p));
  /** Per partition, the last value under the slot's key (null: a tombstone). */
  const last = new Map<number, string | null>();
  if (pending.size === 0) return null;
  const { consumer, close } = privateReader(kafka, `${cfg.kafka.clientId}.status`, () => undefined);
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [target.topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      let idle = setTimeout(resolve, IDLE_END_MS * 5);
      void consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            clearTimeout(idle);
            idle = setTimeout(resolve, IDLE_END_MS);
            const offset = BigInt(message.offset);
            if (message.key?.toString() === target.key) last.set(partition, message.value === null ? null : message.value.toString());
            if (offset + 1n >= (ends.get(partition) ?? 0n)) pending.delete(partition);
            if (pending.size === 0) {
              clearTimeout(idle);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await close();
  }
  // A pre-made topic with several partitions may hold the key in more than one: acked_lsn only grows.
  let latest: Checkpoint | null = null;
  for (const value of last.values()) {
    if (value === null) continue;
    const cp = parseCheckpoint(value, `the checkpoint of slot "${cfg.slot}" in ${target.topic}`);
    if (latest === null || (cp.ackedLsn ?? -1n) >= (latest.ackedLsn ?? -1n)) latest = cp;
  }
  return latest;
}
