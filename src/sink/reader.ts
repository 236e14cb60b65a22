import { randomBytes } from "node:crypto";
import type { Consumer, Kafka } from "kafkajs";

/**
 * A consumer of the daemon's own, for reading its topics back at start (the checkpoint, the event
 * tails): read_committed, in a group of its own that never commits. A fixed group id would make a
 * start wait for a killed predecessor's member to time out of the group before the rebalance.
 * `track` is handed the consumer's idempotent close, so a session torn down mid-read closes it too.
 */
export function privateReader(
  kafka: Kafka,
  group: string,
  track: (close: () => Promise<void>) => void,
): { consumer: Consumer; close: () => Promise<void> } {
  const consumer = kafka.consumer({
    groupId: `${group}.${randomBytes(4).toString("hex")}`,
    readUncommitted: false,
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 100,
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
  });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await consumer.disconnect().catch(() => undefined);
  };
  track(close);
  return { consumer, close };
}
