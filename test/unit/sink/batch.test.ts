import { describe, expect, it } from "vitest";
import {
  RECORD_BATCH_OVERHEAD_BYTES,
  RECORD_OVERHEAD_BYTES,
  batchEnd,
  recordBytes,
  recordBytesOf,
  stateBytes,
} from "../../../src/sink/batch.js";

/** A notification-like value of `chars` characters of `ch`, as JSON. */
const value = (ch: string, chars: number) => JSON.stringify({ type: "notification", payload: ch.repeat(chars) });

describe("record sizes are bytes of UTF-8", () => {
  it.each([
    ["ASCII", "a", 1],
    ["Latin-1 (2 bytes)", "é", 2],
    ["CJK (3 bytes)", "数", 3],
    ["outside the BMP (a surrogate pair, 4 bytes)", "𝄞", 4],
  ])("%s", (_, ch, perChar) => {
    const v = value(ch, 1000);
    const jsonOverhead = JSON.stringify({ type: "notification", payload: "" }).length;
    expect(recordBytes(v, null)).toBe(jsonOverhead + 1000 * perChar + RECORD_OVERHEAD_BYTES);
    expect(recordBytes(v, "données")).toBe(recordBytes(v, null) + 8);
  });
});

describe("counting an event's value once for its state records", () => {
  it("gives the same bytes as counting each record on its own, the event's value shared or not", () => {
    const v = value("数", 300);
    const other = value("é", 200);
    const state = [
      { key: '{"type":"task_instance","dag_id":"données"}', value: v },
      { key: "k2", value: other },
      { key: "k3", value: null },
    ];
    const vBytes = Buffer.byteLength(v, "utf8");
    expect(recordBytesOf(vBytes, "données")).toBe(recordBytes(v, "données"));
    expect(stateBytes(state, v, vBytes)).toBe(stateBytes(state));
    expect(stateBytes(state, null, 0)).toBe(stateBytes(state));
    expect(stateBytes(state)).toBe(recordBytes(v, state[0]!.key) + recordBytes(other, "k2") + recordBytes(null, "k3"));
  });
});

describe("the batch byte cap", () => {
  const cap = 900_000;

  it("cuts a run of CJK notifications by their bytes: 4 of ~300 KB are 2 batches, not 1 of 1.2 MB", () => {
    // 100,000 characters: 100,000 UTF-16 units, 300,000 bytes.
    const v = value("数", 100_000);
    expect(v.length * 4).toBeLessThan(cap);
    const sizes = Array.from({ length: 4 }, () => recordBytes(v, "cjk_dag"));
    const first = batchEnd(sizes, 0, 2000, cap);
    expect(first.end).toBe(2);
    expect(RECORD_BATCH_OVERHEAD_BYTES + first.bytes).toBeLessThanOrEqual(cap);
    const second = batchEnd(sizes, first.end, 2000, cap);
    expect(second).toEqual({ end: 4, bytes: 2 * sizes[0]! });
  });

  it.each([
    // sizes, maxEvents, maxBytes, head → end
    [[100, 100, 100], 10, RECORD_BATCH_OVERHEAD_BYTES + 300, 0, 3],
    [[100, 100, 100], 10, RECORD_BATCH_OVERHEAD_BYTES + 299, 0, 2],
    [[100, 100, 100], 2, 1_000_000, 0, 2],
    [[100, 100, 100], 2, 1_000_000, 2, 3],
    // One record over the cap alone still goes, alone.
    [[5000, 100], 10, 1000, 0, 1],
    [[100, 5000], 10, 1000, 0, 1],
    [[100, 5000], 10, 1000, 1, 2],
  ])("sizes %o, at most %i events and %i bytes, from %i: ends at %i", (sizes, maxEvents, maxBytes, head, end) => {
    const r = batchEnd(sizes, head, maxEvents, maxBytes);
    expect(r.end).toBe(end);
    expect(r.bytes).toBe(sizes.slice(head, end).reduce((a, b) => a + b, 0));
  });
});

describe("batchEnd with state records", () => {
  it("caps the state records' bytes apart from the events': whichever fills first ends the batch", () => {
    const cap = 1_000;
    // Events fill first.
    expect(batchEnd([400, 400, 400], 0, 100, cap, [10, 10, 10])).toEqual({ end: 2, bytes: 820 });
    // State records fill first.
    expect(batchEnd([10, 10, 10], 0, 100, cap, [400, 400, 400])).toEqual({ end: 2, bytes: 820 });
    // Together over the cap, each under it: one batch.
    expect(batchEnd([450, 450], 0, 100, cap, [450, 450])).toEqual({ end: 2, bytes: 1_800 });
    // The first record always goes.
    expect(batchEnd([10], 0, 100, cap, [5_000])).toEqual({ end: 1, bytes: 5_010 });
  });
});
