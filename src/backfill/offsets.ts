import type { Admin, Kafka } from "kafkajs";
import { RetentionError } from "../errors.js";
import { comparePositions } from "../lsn.js";
import { kafkaRecordSource, type ProbeHit, type RecordSource } from "./probe.js";
import { atOrAfter, describeKey, type RecordKey, type Target } from "./target.js";

export { parseTarget, type Target } from "./target.js";

/**
 * Position -> offset: for each partition of a topic, the first offset whose event is at or after a
 * target (a position, an LSN, or a commit time; see target.ts). Used by everything that reads the
 * event topics from a point: `airflow-eventstream replay`, the consumer helper.
 *
 * How: positions increase along each partition (one DAG's events stay in one partition, in commit
 * order), so the offset is found by binary search over [earliest, end), reading one record per probe:
 * about log2(records) probes per partition, all partitions at once.
 *
 * Records without a readable `source.position` (another producer's, a value that is not an event) are
 * passed over: a probe at offset o looks at the first record at or after o that has one. So is every
 * offset a read_committed consumer gets nothing from (transaction markers, aborted records). The
 * offset returned is then the first one such that every positioned record before it is before the
 * target and every one from it on is at or after it; records in between without a position are
 * replayed with the window.
 *
 * A time target is compared with `source.commit_time`. Commit times follow the commit LSN order, but
 * not strictly: PostgreSQL takes a transaction's commit time just before it writes the commit record,
 * so two transactions committing at once can have their times inverted by the time between the two
 * (microseconds, more under load). The search places the time among positions: events committed within
 * such an inversion of the target may land on either side of it. A position is the exact form. Kafka's
 * own timestamps (ListOffsets by time) are not used to narrow the search: they are the daemon host's
 * clock, and a clock behind PostgreSQL's would place records earlier than their commit times, so a
 * narrowed window could miss them; the binary search costs ~17 probes for 100k records anyway.
 *
 * Older than retention: a partition whose log start moved (earliest offset > 0: Kafka deleted records)
 * and whose oldest positioned record is after the target may have lost events at or after the target;
 * that is a RetentionError naming what is still there. A target before the first event ever published
 * (earliest offset 0) is not an error: nothing was lost, the window starts at the beginning. A
 * partition emptied by retention (earliest = end > 0) cannot tell either way: it starts at its end,
 * and the result says so (`emptied`).
 */

/** Where one partition's window starts, and what the search saw. Offsets are bigints; kafkajs wants strings. */
export interface PartitionStart {
  partition: number;
  /** The first offset at or after the target (`end` when every record is before it). */
  offset: bigint;
  /** The log start offset and the end (last stable offset) when the search began. */
  earliest: bigint;
  end: bigint;
  /** The oldest positioned record the partition holds (null: none). */
  oldest: RecordKey | null;
  /** Records were deleted and none remain (earliest = end > 0). */
  emptied: boolean;
  probes: number;
}

/** Per partition of `topic`, the first offset at or after `target`, as kafkajs seek() takes it. */
export async function findStartOffsets(kafka: Kafka, admin: Admin, topic: string, target: Target): Promise<Map<number, string>> {
  const starts = await findOffsets(kafka, admin, [topic], target);
  return new Map((starts.get(topic) ?? []).map((s) => [s.partition, s.offset.toString()]));
}

/** findStartOffsets for several topics with one consumer, with what the search saw (topic -> partitions). */
export async function findOffsets(
  kafka: Kafka,
  admin: Admin,
  topics: string[],
  target: Target,
  clientId = "airflow-eventstream",
): Promise<Map<string, PartitionStart[]>> {
  const out = new Map<string, PartitionStart[]>();
  if (topics.length === 0) return out;
  const source = await kafkaRecordSource(kafka, topics, clientId);
  try {
    for (const topic of topics) {
      const offsets = await admin.fetchTopicOffsets(topic);
      const ranges = offsets.map((o) => ({ partition: o.partition, earliest: BigInt(o.low), end: BigInt(o.high) }));
      out.set(topic, await searchTopic(source, topic, ranges, target));
    }
  } finally {
    await source.close();
  }
  return out;
}

/** The search over a RecordSource, all partitions at once; throws a RetentionError naming every partition that lost the target. */
export async function searchTopic(
  source: RecordSource,
  topic: string,
  ranges: { partition: number; earliest: bigint; end: bigint }[],
  target: Target,
): Promise<PartitionStart[]> {
  const starts = await Promise.all(ranges.map((r) => searchPartition(source, topic, r.partition, r.earliest, r.end, target)));
  const lost = starts.filter((s) => s.earliest > 0n && s.oldest !== null && strictlyAfter(s.oldest, target));
  if (lost.length > 0) throw retentionError(topic, target, lost);
  return starts.sort((a, b) => a.partition - b.partition);
}

export async function searchPartition(
  source: RecordSource,
  topic: string,
  partition: number,
  earliest: bigint,
  end: bigint,
  target: Target,
): Promise<PartitionStart> {
  let probes = 0;
  const probe = async (from: bigint, before: bigint): Promise<ProbeHit | null> => {
    probes++;
    // A time search passes over records without a commit time, as over those without a position.
    return source.first(topic, partition, from, before, (k) => atOrAfter(k, target) !== null);
  };
  const oldest = await probe(earliest, end);
  // Invariant: positioned records below `lo` are before the target; those at or above `hi` are not.
  let lo = earliest;
  let hi = end;
  if (oldest === null) hi = earliest;
  else if (atOrAfter(oldest.key, target) === true) hi = earliest;
  else lo = oldest.offset + 1n;
  while (lo < hi) {
    const mid = lo + (hi - lo) / 2n;
    const hit = await probe(mid, hi);
    // No positioned record in [mid, hi), or the first one is at or after the target: none in [mid, hi) is before it.
    if (hit === null || atOrAfter(hit.key, target) === true) hi = mid;
    else lo = hit.offset + 1n;
  }
  return { partition, offset: lo, earliest, end, oldest: oldest?.key ?? null, emptied: earliest > 0n && earliest === end, probes };
}

function strictlyAfter(key: RecordKey, target: Target): boolean {
  if (target.kind === "position") return comparePositions(key.position, target.position) > 0;
  return key.commitMicros !== null && key.commitMicros > target.micros;
}

function retentionError(topic: string, target: Target, lost: PartitionStart[]): RetentionError {
  const held = lost.map((s) => `partition ${s.partition}: ${describeKey(s.oldest!)} at offset ${s.earliest}`).join("; ");
  return new RetentionError(
    `${target.text} is older than what topic ${topic} still holds: Kafka's retention deleted events at or after it. ` +
      `Oldest events still available: ${held}. Start from one of these or later (they are what the topic can give), ` +
      `or bootstrap from the current state (the current-state topic, or a snapshot) and replay from the position it gives.`,
  );
}
