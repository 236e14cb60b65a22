import type { Admin, Kafka } from "kafkajs";
import { parseTarget, searchTopic, type Target } from "../backfill/offsets.js";
import { kafkaRecordSource } from "../backfill/probe.js";
import { RetentionError } from "../errors.js";
import { comparePositions, formatPosition, type Position } from "../lsn.js";
import type { DagSequencer } from "./sequencer.js";
import type { BootstrapInfo, StartFrom } from "./types.js";

/** What the start of a partition needs from the consumer around it. */
export interface StartDeps {
  kafka: Kafka;
  admin: Admin;
  groupId: string;
  from: StartFrom;
  sequencer: DagSequencer;
  /** The listed DAGs whose events go to this partition; null when the consumer lists none. */
  dagsIn(topic: string, partition: number): Promise<string[] | null>;
  /** Hands the current rows of `dags` (null: every DAG of the partition) to the handler; resolves to the state's position. */
  bootstrap(dags: string[] | null, reason: BootstrapInfo["reason"], detail?: string): Promise<string | null>;
}

/**
 * The offset a partition is read from after an assignment. The user's store decides: for the
 * listed DAGs of the partition, the first offset at or after the lowest stored position (the event
 * at it is dropped as seen, and so is what the DAGs further on had); for a DAG without one, `from`.
 * A stored position older than the partition holds, or `from: "state"` for a DAG without one,
 * bootstraps those DAGs from the current-state topic, and they continue from the state's position.
 * Without a list of DAGs, the group's committed offset is the start when there is one, else `from`.
 */
export async function startOffset(d: StartDeps, topic: string, partition: number): Promise<bigint> {
  const dags = await d.dagsIn(topic, partition);
  if (dags === null || dags.length === 0) {
    const committed = await committedOffset(d, topic, partition);
    if (committed !== null) {
      const { low } = await bounds(d, topic, partition);
      if (committed >= low) return committed;
      const lost = `the group's committed offset ${committed} of ${topic}[${partition}] is below the oldest one it holds (${low}): retention deleted records not handled`;
      return afterState(d, topic, partition, await d.bootstrap(dags, "position-not-in-kafka", lost));
    }
    if (d.from !== "state") return fromOffset(d, topic, partition, d.from);
    // A partition without any listed DAG (the shared topic beside per-DAG topics) needs no rows.
    return afterState(d, topic, partition, await d.bootstrap(dags, "requested"));
  }
  const candidates: bigint[] = [];
  const stored: { dag: string; position: Position }[] = [];
  const needState: string[] = [];
  for (const dag of dags) {
    const p = await d.sequencer.lastPosition(dag);
    if (p !== null) stored.push({ dag, position: p });
    else if (d.from === "state") needState.push(dag);
  }
  if (stored.length + needState.length < dags.length) candidates.push(await fromOffset(d, topic, partition, d.from));
  let detail: string | undefined;
  if (stored.length > 0) {
    const lowest = stored.reduce((a, b) => (comparePositions(b.position, a.position) < 0 ? b : a));
    const found = await search(d, topic, partition, parseTarget(formatPosition(lowest.position)));
    if (found.lost === null) candidates.push(found.offset);
    else {
      // Some DAGs' positions are gone: find which, one search each (this only happens after a long absence).
      for (const s of stored) {
        const each = s === lowest ? found : await search(d, topic, partition, parseTarget(formatPosition(s.position)));
        if (each.lost === null) candidates.push(each.offset);
        else {
          needState.push(s.dag);
          detail = each.lost;
        }
      }
    }
  }
  if (needState.length > 0) {
    const position = await d.bootstrap(needState, detail === undefined ? "requested" : "position-not-in-kafka", detail);
    candidates.push(await afterState(d, topic, partition, position));
  }
  return candidates.reduce((a, b) => (b < a ? b : a));
}

/** The first offset at or after the state's position; the topic's start when the state is empty. */
async function afterState(d: StartDeps, topic: string, partition: number, position: string | null): Promise<bigint> {
  if (position === null) return fromOffset(d, topic, partition, "earliest");
  const found = await search(d, topic, partition, parseTarget(position));
  if (found.lost !== null)
    throw new RetentionError(
      `the current-state topic is older than topic ${topic} still holds (${found.lost}): it is not being written with the events`,
    );
  return found.offset;
}

async function fromOffset(d: StartDeps, topic: string, partition: number, from: StartFrom): Promise<bigint> {
  if (from === "earliest" || from === "latest") {
    const o = await bounds(d, topic, partition);
    return from === "earliest" ? o.low : o.high;
  }
  const found = await search(d, topic, partition, startTarget(from));
  if (found.lost !== null)
    throw new RetentionError(`from: ${found.lost}. Start from "state" (the current-state topic), "earliest" or a later point.`);
  return found.offset;
}

/**
 * The search of src/backfill/offsets.ts over this one partition (a topic-wide search would call a
 * position lost for a partition whose own records are all still there). `lost` says why the target
 * is not in Kafka: deleted by retention, or the partition emptied by it (nothing shows whether
 * events after the target were among the deleted, so it counts as lost; a bootstrap then hands over
 * only rows after the stored position, so nothing comes twice).
 */
async function search(d: StartDeps, topic: string, partition: number, target: Target): Promise<{ offset: bigint; lost: string | null }> {
  const { low, high } = await bounds(d, topic, partition);
  const source = await kafkaRecordSource(d.kafka, [topic], "airflow-eventstream-consumer");
  try {
    const [s] = await searchTopic(source, topic, [{ partition, earliest: low, end: high }], target);
    if (s!.emptied && target.kind === "position")
      return { offset: s!.offset, lost: `${topic}[${partition}] was emptied by retention (records up to offset ${low} deleted)` };
    return { offset: s!.offset, lost: null };
  } catch (e: unknown) {
    if (e instanceof RetentionError) return { offset: -1n, lost: e.message };
    throw e;
  } finally {
    await source.close();
  }
}

async function bounds(d: StartDeps, topic: string, partition: number): Promise<{ low: bigint; high: bigint }> {
  const o = (await d.admin.fetchTopicOffsets(topic)).find((p) => p.partition === partition);
  if (!o) throw new Error(`topic ${topic} has no partition ${partition}`);
  return { low: BigInt(o.low), high: BigInt(o.high) };
}

async function committedOffset(d: StartDeps, topic: string, partition: number): Promise<bigint | null> {
  const [t] = await d.admin.fetchOffsets({ groupId: d.groupId, topics: [topic] });
  const p = t?.partitions.find((x) => x.partition === partition);
  if (!p || BigInt(p.offset) < 0n) return null;
  return BigInt(p.offset);
}

/**
 * A `from` that names a point (not "state", "earliest" or "latest") as the search takes it; a
 * TargetError (a user error) says which forms are accepted. A Date keeps its milliseconds only.
 */
export function startTarget(from: string | Date): Target {
  return parseTarget(from instanceof Date ? from.toISOString() : from);
}
