import { describe, expect, it } from "vitest";
import { Partitioners } from "kafkajs";
import { FastDefaultPartitioner, createPlacement, murmur2 } from "../../../src/sink/partitioner.js";

function metadata(count: number, leaderless: number[] = []) {
  return Array.from({ length: count }, (_, i) => ({
    partitionId: i,
    leader: leaderless.includes(i) ? -1 : 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }));
}

/** Deterministic pseudo-random keys of every length 0..80, ASCII and multibyte, like dag_ids and state keys. */
function keys(): string[] {
  const alphabet = "abcdefghijklmnopqrstuvwxyz_0123456789-.é日本語🙂\u0000\u00ff";
  const out: string[] = ["", "a", "ab", "abc", "abcd", "example_dag", '{"type":"dag_run","dag_id":"d","run_id":"r"}'];
  let x = 12345;
  for (let n = 0; n < 3000; n++) {
    let s = "";
    const len = n % 81;
    for (let i = 0; i < len; i++) {
      x = (Math.imul(x, 1103515245) + 12345) | 0;
      s += alphabet[(x >>> 8) % alphabet.length];
    }
    out.push(s);
  }
  return out;
}

describe("FastDefaultPartitioner", () => {
  it("places every key exactly where kafkajs's DefaultPartitioner does", () => {
    const theirs = Partitioners.DefaultPartitioner();
    const ours = FastDefaultPartitioner();
    for (const count of [1, 3, 6, 7, 64]) {
      const partitionMetadata = metadata(count);
      for (const key of keys()) {
        const message = { key, value: null };
        // Twice: placement keeps no state per key that could change the second answer.
        const expected = theirs({ topic: "t", partitionMetadata, message });
        expect(ours({ topic: "t", partitionMetadata, message })).toBe(expected);
        expect(ours({ topic: "t", partitionMetadata, message })).toBe(expected);
      }
    }
  });

  it("hashes Buffer keys as their bytes, like string keys", () => {
    for (const key of keys().slice(0, 500)) expect(murmur2(Buffer.from(key, "utf8"))).toBe(murmur2(key));
  });

  it("hashes a string whose only non-ASCII character is in its last 1-3 characters or first block as its UTF-8 bytes", () => {
    // The ASCII path reads char codes; a code above 0x7f anywhere, tail included, must fall back to the bytes.
    for (const key of ["abcdé", "abcdeé", "abcdefé", "éabcdefgh", "abc\u007f", "abcd\u0080", "\u00ff", "a🙂"])
      expect(murmur2(key)).toBe(murmur2(Buffer.from(key, "utf8")));
  });

  it("keeps an explicit partition and round-robins keyless messages over partitions with a leader", () => {
    const ours = FastDefaultPartitioner();
    const partitionMetadata = metadata(4, [1]);
    expect(ours({ topic: "t", partitionMetadata, message: { key: "k", value: null, partition: 3 } })).toBe(3);
    const seen = new Set<number>();
    for (let i = 0; i < 12; i++) seen.add(ours({ topic: "t", partitionMetadata, message: { key: null, value: null } }));
    expect([...seen].sort()).toEqual([0, 2, 3]);
  });
});

/** The wire producer places with createPlacement(): it must put every message where kafkajs's DefaultPartitioner does. */
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
