import { Partitioners } from "kafkajs";
import { describe, expect, it } from "vitest";
import { createPlacement } from "../../../../src/sink/partitioner.js";

/** The wire producer places with createPlacement(): it must put every message where kafkajs's DefaultPartitioner does. */
function metadata(count: number, leaderless: number[] = []) {
  return Array.from({ length: count }, (_, i) => ({
    partitionId: i,
    leader: leaderless.includes(i) ? -1 : 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }));
}

describe("createPlacement", () => {
  it("places keyed messages and explicit partitions exactly as kafkajs", () => {
    const theirs = Partitioners.DefaultPartitioner();
    const place = createPlacement();
    const keys = ["", "a", "dag_1", "日本語🙂", "x".repeat(200), Buffer.from([0, 1, 2, 255])];
    for (const count of [1, 3, 6, 64]) {
      const partitionMetadata = metadata(count);
      for (const key of keys) {
        const expected = theirs({ topic: "t", partitionMetadata, message: { key, value: null } });
        expect(place("t", partitionMetadata, key, undefined)).toBe(expected);
        expect(place("t", partitionMetadata, key, null)).toBe(expected);
      }
      expect(place("t", partitionMetadata, "dag_1", count - 1)).toBe(count - 1);
    }
  });

  it("sends keyless messages round robin over the partitions with a leader, per topic", () => {
    const place = createPlacement();
    const partitions = metadata(5, [1, 3]);
    const seen = Array.from({ length: 9 }, () => place("t", partitions, null, undefined));
    expect(new Set(seen)).toEqual(new Set([0, 2, 4]));
    // Consecutive keyless messages take consecutive leader-having partitions.
    const order = [0, 2, 4];
    for (let i = 1; i < seen.length; i++) expect(order.indexOf(seen[i]!)).toBe((order.indexOf(seen[i - 1]!) + 1) % 3);
    expect(place("u", metadata(2), undefined, 1)).toBe(1);
  });
});
