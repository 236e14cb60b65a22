import { Partitioners } from "kafkajs";
import { describe, expect, it } from "vitest";
import { ReplayFilter } from "../../../src/checkpoint/replay.js";

const pos = (commitLsn: bigint, index = 0) => ({ commitLsn, index });

/** Which of 3 partitions the producer puts `key` in. */
function partitionOf(key: string): number {
  const meta = [0, 1, 2].map((partitionId) => ({
    partitionId,
    leader: 0,
    partitionErrorCode: 0,
    replicas: [],
    isr: [],
    offlineReplicas: [],
  }));
  return Partitioners.DefaultPartitioner()({ topic: "t", partitionMetadata: meta, message: { key, value: null } });
}

/** Keys that land in partitions 0, 1 and 2. */
const keys = (() => {
  const found: string[] = [];
  for (let i = 0; found.filter(Boolean).length < 3 && i < 1000; i++) {
    const k = `dag_${i}`;
    found[partitionOf(k)] ??= k;
  }
  return found as [string, string, string];
})();

describe("ReplayFilter", () => {
  it("covers per partition: a head in one partition says nothing of another", () => {
    const f = new ReplayFilter(null, new Map([["t", [pos(100n), pos(50n), null]]]));
    expect(f.covers("t", keys[0], pos(100n))).toBe(true);
    expect(f.covers("t", keys[0], pos(100n, 1))).toBe(false);
    expect(f.covers("t", keys[1], pos(60n))).toBe(false);
    expect(f.covers("t", keys[1], pos(49n, 7))).toBe(true);
    expect(f.covers("t", keys[2], pos(1n))).toBe(false);
    expect(f.covers("other", keys[0], pos(1n))).toBe(false);
    expect(f.last()).toEqual(pos(100n));
  });

  it("an event without a key is covered only when every partition is past it", () => {
    expect(new ReplayFilter(null, new Map([["t", [pos(100n), pos(50n), null]]])).covers("t", null, pos(10n))).toBe(false);
    const f = new ReplayFilter(null, new Map([["t", [pos(100n), pos(50n), pos(70n)]]]));
    expect(f.covers("t", null, pos(50n))).toBe(true);
    expect(f.covers("t", null, pos(51n))).toBe(false);
  });

  it("exactly-once's checkpoint covers every topic and partition up to it", () => {
    const f = new ReplayFilter(pos(80n, 2), new Map());
    expect(f.covers("any", keys[2], pos(80n, 2))).toBe(true);
    expect(f.covers("any", null, pos(80n, 3))).toBe(false);
    expect(f.last()).toEqual(pos(80n, 2));
  });
});
