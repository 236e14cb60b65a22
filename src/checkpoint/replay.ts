import { Partitioners, type PartitionMetadata } from "kafkajs";
import { comparePositions, type Position } from "../lsn.js";

/**
 * Which replayed changes are in Kafka already. A start replays every transaction the slot has not
 * confirmed; the ones whose events Kafka already holds are mapped (the mapper's state must stay
 * exact) but not published again.
 *
 * Two kinds of evidence, one rule ("covered" = at or before what the event's partition is known to
 * hold):
 * - exactly-once: the checkpoint's position, committed in the same transaction as the events it
 *   covers, holds for every partition (`floor`);
 * - at-least-once: per partition, the highest `source.position` present (`heads`, read back at
 *   start). Each partition's positions increase: the producer sends in push order, one request at
 *   a time (idempotent, so a retry neither reorders nor duplicates), and a request is sent only
 *   after the one before it succeeded. So a partition holding position h holds every event of that
 *   partition pushed before h: in an earlier request (which succeeded whole) or in the same
 *   partition's batch of the same request (written whole or not at all). Partitions of one
 *   request are not written together, so one partition's head says nothing of another: the global
 *   maximum would skip events of a partition whose batch was lost with the crash.
 *
 * An event's partition is worked out as the producer works it out (kafkajs's default partitioner:
 * murmur2 of the key, modulo the partition count read at start). An event without a key goes to
 * any partition: it is covered only when every partition of its topic is past it. This assumes the
 * partition count did not change while the daemon was down (a key would then hash elsewhere).
 */
export class ReplayFilter {
  private readonly partitioner = Partitioners.DefaultPartitioner();
  private readonly metadata = new Map<string, PartitionMetadata[]>();

  constructor(
    private readonly floor: Position | null,
    /** topic -> one entry per partition: the highest position it holds, null when empty. */
    private readonly heads: ReadonlyMap<string, readonly (Position | null)[]>,
  ) {
    for (const [topic, parts] of heads) {
      this.metadata.set(
        topic,
        parts.map((_, partitionId) => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [], isr: [], offlineReplicas: [] })),
      );
    }
  }

  /** Nothing can ever be covered: the replay is over once `last()` says so. */
  get empty(): boolean {
    return this.floor === null && this.heads.size === 0;
  }

  /** The highest position anything covers: past it nothing is, so the filter may be dropped. */
  last(): Position | null {
    let max = this.floor;
    for (const parts of this.heads.values()) {
      for (const h of parts) if (h !== null && (max === null || comparePositions(h, max) > 0)) max = h;
    }
    return max;
  }

  /** True when the event at `pos`, with this key, for this topic, is in Kafka already. */
  covers(topic: string, key: string | null, pos: Position): boolean {
    if (this.floor !== null && comparePositions(pos, this.floor) <= 0) return true;
    const parts = this.heads.get(topic);
    if (parts === undefined || parts.length === 0) return false;
    if (key === null) return parts.every((h) => h !== null && comparePositions(pos, h) <= 0);
    const partition = this.partitioner({ topic, partitionMetadata: this.metadata.get(topic)!, message: { key, value: null } });
    const head = parts[partition] ?? null;
    return head !== null && comparePositions(pos, head) <= 0;
  }
}
