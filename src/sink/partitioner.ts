import { randomBytes } from "node:crypto";
import type { ICustomPartitioner } from "kafkajs";

/**
 * kafkajs's default partitioner, same placement, without its cost. kafkajs hashes every message's
 * key with murmur2 in 64-bit `Long` objects (a Buffer and a dozen Long allocations per key); in a
 * profile of a 100k-event drain that was ~15% of the daemon's CPU (murmur2, long.js multiply/xor/
 * toString/fromNumber, the partitioner), every event being hashed twice (its event key and its
 * current-state key). Every step of that hash only ever keeps the low 32 bits, so it is Java's
 * murmur2 on 32-bit integers (Math.imul), over an ASCII key's char codes without encoding it
 * (murmur2Ascii). The placement must stay exactly kafkajs's: the
 * partitions of earlier events, and every reader that computes them (routing.ts's dagPartitioner,
 * the consumer, backfill), assume it; test/unit/sink/partitioner.test.ts compares the two.
 */

const SEED = 0x9747b28c;
const M = 0x5bd1e995;

/** Kafka's murmur2 (Utils.murmur2 of the Java client) of the key's UTF-8 bytes, as a signed 32-bit int. */
export function murmur2(key: string | Buffer): number {
  if (typeof key === "string") {
    const h = murmur2Ascii(key);
    if (h !== null) return h;
    key = Buffer.from(key, "utf8");
  }
  const data = key;
  const length = data.length;
  let h = (SEED ^ length) | 0;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    h = mixBlock(h, data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24));
  }
  const tail = length & ~3;
  return finish(h, length & 3, data[tail] ?? 0, data[tail + 1] ?? 0, data[tail + 2] ?? 0);
}

/**
 * murmur2 of an ASCII string read as its char codes, which are then its UTF-8 bytes; null at the
 * first code above 0x7f (the caller encodes it). Every event is placed twice (its event key, its
 * current-state key): this path allocates nothing, where a Buffer per key did. An earlier version
 * remembered each key's hash instead, in a map of up to 50,000 keys: nearly all of them
 * current-state keys (~170 B each, one per task instance, rarely seen again before eviction),
 * ~8 MB of the live heap at the end of a drain, for less than 1% of its CPU.
 */
function murmur2Ascii(key: string): number | null {
  const length = key.length;
  let h = (SEED ^ length) | 0;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    const b0 = key.charCodeAt(i4);
    const b1 = key.charCodeAt(i4 + 1);
    const b2 = key.charCodeAt(i4 + 2);
    const b3 = key.charCodeAt(i4 + 3);
    if ((b0 | b1 | b2 | b3) > 0x7f) return null;
    h = mixBlock(h, b0 | (b1 << 8) | (b2 << 16) | (b3 << 24));
  }
  const tail = length & ~3;
  const rest = length & 3;
  const t0 = rest > 0 ? key.charCodeAt(tail) : 0;
  const t1 = rest > 1 ? key.charCodeAt(tail + 1) : 0;
  const t2 = rest > 2 ? key.charCodeAt(tail + 2) : 0;
  if ((t0 | t1 | t2) > 0x7f) return null;
  return finish(h, rest, t0, t1, t2);
}

function mixBlock(h: number, block: number): number {
  let k = Math.imul(block, M);
  k ^= k >>> 24;
  k = Math.imul(k, M);
  return Math.imul(h, M) ^ k;
}

/** The 1-3 trailing bytes (`rest` of them; t0 first) and the final avalanche. */
function finish(h: number, rest: number, t0: number, t1: number, t2: number): number {
  if (rest > 0) {
    if (rest === 3) h ^= t2 << 16;
    if (rest >= 2) h ^= t1 << 8;
    h ^= t0;
    h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

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
 * kafkajs's default placement as a plain function, with its own round-robin counters: used by FastDefaultPartitioner (kafkajs) and by the wire producer (src/sink/wire).
 */
export function createPlacement(): Placement {
  const counters = new Map<string, number>();
  return (topic, partitions, key, partition) => {
    if (partition !== null && partition !== undefined) return partition;
    const numPartitions = partitions.length;
    if (key !== null && key !== undefined) return (murmur2(key) & 0x7fffffff) % numPartitions;
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
