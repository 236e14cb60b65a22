import type { Admin, Kafka } from "kafkajs";
import { formatPosition } from "../lsn.js";
import type { DagSequencer } from "./sequencer.js";
import { firstOffsetsAt, parseSearchTarget, TargetTooOldError } from "./search.js";
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
 * The offset a partition is read from after an assignment. The user's store decides: for each
 * listed DAG of the partition, the first offset after its stored position; for a DAG without one,
 * `from`. The partition starts at the lowest of these, and the DAGs further on drop what they had
 * (DagSequencer). A stored position older than the topic holds, or `from: "state"`, bootstraps
 * those DAGs from the current-state topic, and they continue after the state's position. Without a
 * list of DAGs, the group's committed offset is the start when there is one, else `from`.
 */
export async function startOffset(d: StartDeps, topic: string, partition: number): Promise<bigint> {
  const dags = await d.dagsIn(topic, partition);
  const candidates: bigint[] = [];
  const needState: string[] = [];
  let detail: string | undefined;
  if (dags === null || dags.length === 0) {
    const committed = await committedOffset(d, topic, partition);
    if (committed !== null) return committed;
    if (d.from !== "state") return fromOffset(d, topic, partition);
    // A partition without any listed DAG (the shared topic beside per-DAG topics) needs no rows.
    const position = await d.bootstrap(dags, "requested");
    return position === null ? fromOffsetOf(d, topic, partition, "earliest") : afterPosition(d, topic, partition, position);
  }
  for (const dag of dags) {
    const stored = await d.sequencer.lastPosition(dag);
    if (stored === null) {
      if (d.from === "state") needState.push(dag);
      else candidates.push(await fromOffset(d, topic, partition));
      continue;
    }
    try {
      candidates.push(await afterPosition(d, topic, partition, formatPosition(stored)));
    } catch (e: unknown) {
      if (!(e instanceof TargetTooOldError)) throw e;
      needState.push(dag);
      detail = e.message;
    }
  }
  if (needState.length > 0) {
    const reason = detail === undefined ? "requested" : "position-not-in-kafka";
    const position = await d.bootstrap(needState, reason, detail);
    candidates.push(
      position === null ? await fromOffsetOf(d, topic, partition, "earliest") : await afterPosition(d, topic, partition, position),
    );
  }
  return candidates.reduce((a, b) => (b < a ? b : a));
}

async function fromOffset(d: StartDeps, topic: string, partition: number): Promise<bigint> {
  return fromOffsetOf(d, topic, partition, d.from);
}

async function fromOffsetOf(d: StartDeps, topic: string, partition: number, from: StartFrom): Promise<bigint> {
  if (from === "earliest" || from === "latest") {
    const o = (await d.admin.fetchTopicOffsets(topic)).find((p) => p.partition === partition);
    if (!o) throw new Error(`topic ${topic} has no partition ${partition}`);
    return BigInt(from === "earliest" ? o.low : o.high);
  }
  return atOrAfter(d, topic, partition, from);
}

/** The first offset whose event is at or after `position`: the event at it is dropped as seen. */
function afterPosition(d: StartDeps, topic: string, partition: number, position: string): Promise<bigint> {
  return atOrAfter(d, topic, partition, position);
}

async function atOrAfter(d: StartDeps, topic: string, partition: number, target: string | Date): Promise<bigint> {
  const offsets = await firstOffsetsAt(d.kafka, topic, parseSearchTarget(target));
  const o = offsets.get(partition);
  if (o !== undefined) return o;
  // Nothing at or after the target yet: the partition's end.
  const end = (await d.admin.fetchTopicOffsets(topic)).find((p) => p.partition === partition);
  return BigInt(end?.high ?? "0");
}

async function committedOffset(d: StartDeps, topic: string, partition: number): Promise<bigint | null> {
  const [t] = await d.admin.fetchOffsets({ groupId: d.groupId, topics: [topic] });
  const p = t?.partitions.find((x) => x.partition === partition);
  if (!p || BigInt(p.offset) < 0n) return null;
  return BigInt(p.offset);
}
