import { randomBytes } from "node:crypto";
import type { ICustomPartitioner } from "kafkajs";

/**
 * kafkajs's default partitioner, same placement, without its cost. kafkajs hashes every message's
 * key with murmur2 in 64-bit `Long` objects (a Buffer and a dozen Long allocations per key); in a
 * profile of a 100k-event drain that was ~15% of the daemon's CPU (murmur2, long.js multiply/xor/
 * toString/fromNumber, the partitioner), every event being hashed twice (its event key and its
 * current-state key). Every step of that hash only ever keeps the low 32 bits, so it is Java's
 * murmur2 on 32-bit integers (Math.imul); keys repeat (a DAG's events, a task instance's moves), so
 * each key's hash is remembered in a bounded map. The placement must stay exactly kafkajs's: the
 * partitions of earlier events, and every reader that computes them (routing.ts's dagPartitioner,
 * the consumer, backfill), assume it; test/unit/sink/partitioner.test.ts compares the two.
 */

const SEED = 0x9747b28c;
const M = 0x5bd1e995;

/** Kafka's murmur2 (Utils.murmur2 of the Java client) of the key's UTF-8 bytes, as a signed 32-bit int. */
export function murmur2(key: string | Buffer): number {
  const data = typeof key === "string" ? Buffer.from(key, "utf8") : key;
  const length = data.length;
  let h = (SEED ^ length) | 0;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  const tail = length & ~3;
  const rest = length & 3;
  if (rest > 0) {
    if (rest === 3) h ^= data[tail + 2]! << 16;
    if (rest >= 2) h ^= data[tail + 1]! << 8;
    h ^= data[tail]!;
    h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/** Keys whose hash is remembered; past it the map starts over (cheap, and a drain's keys are far fewer). */
const MAX_CACHED = 50_000;

/** A partition as placement sees it: its id and its leader's node id (-1: none). */
export interface PartitionLeader {
  partitionId: number;
  leader: number;
}

/** Places one message: an explicit partition, the key's hash, or round robin for keyless ones. */
export type Placement = (
  topic: string,
  partitions: readonly PartitionLeader[],
  key: string | Buffer | null | undefined,
  partition: number | null | undefined,
) => number;

/**
 * kafkajs's default placement as a plain function, with its own round-robin counters and key
 * cache: used by FastDefaultPartitioner (kafkajs) and by the wire producer (src/sink/wire).
 */
export function createPlacement(): Placement {
  const counters = new Map<string, number>();
  let hashes = new Map<string, number>();
  const hashOf = (key: string): number => {
    let h = hashes.get(key);
    if (h === undefined) {
      if (hashes.size >= MAX_CACHED) hashes = new Map();
      h = murmur2(key) & 0x7fffffff;
      hashes.set(key, h);
    }
    return h;
  };
  return (topic, partitions, key, partition) => {
    if (partition !== null && partition !== undefined) return partition;
    const numPartitions = partitions.length;
    if (key !== null && key !== undefined) return (typeof key === "string" ? hashOf(key) : murmur2(key) & 0x7fffffff) % numPartitions;
    // No key: round robin over the partitions with a leader, from a random start, as kafkajs does.
    const next = ((counters.get(topic) ?? randomBytes(4).readUInt32BE(0)) + 1) | 0;
    counters.set(topic, next);
    const available = partitions.filter((p) => p.leader >= 0);
    if (available.length > 0) return available[(next & 0x7fffffff) % available.length]!.partitionId;
    return (next & 0x7fffffff) % numPartitions;
  };
}

/** A kafkajs `createPartitioner` placing messages exactly as Partitioners.DefaultPartitioner does. */
export const FastDefaultPartitioner: ICustomPartitioner = () => {
  const place = createPlacement();
  return ({ topic, partitionMetadata, message }) => place(topic, partitionMetadata, message.key, message.partition);
};
