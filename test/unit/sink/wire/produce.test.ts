import { describe, expect, it } from "vitest";
import type { KafkaProtocolError } from "../../../../src/sink/wire/errors.js";
import { type Batch, encodeProduce, parseProduce } from "../../../../src/sink/wire/produce.js";
import { Writer } from "../../../../src/sink/wire/writer.js";

function batch(topic: string, partition: number, value: string): Batch {
  return { topic, partition, messages: [{ key: "k", value }], baseSequence: 5, bytes: null, code: 0, error: null };
}

/** A Produce response (v8) with one entry per [topic, partition, error code]. */
function response(entries: [string, number, number][]): Buffer {
  const w = new Writer(16);
  const byTopic = new Map<string, [number, number][]>();
  for (const [t, p, c] of entries) byTopic.set(t, [...(byTopic.get(t) ?? []), [p, c]]);
  w.int32(byTopic.size);
  for (const [t, parts] of byTopic) {
    w.string(t);
    w.int32(parts.length);
    for (const [p, c] of parts) {
      w.int32(p);
      w.int16(c);
      w.int64(42); // base_offset
      w.int64(-1); // log_append_time_ms
      w.int64(0); // log_start_offset
      w.int32(0); // record_errors
      w.string(c === 0 ? null : "detail");
    }
  }
  w.int32(0); // throttle_time_ms
  return w.finish();
}

describe("Produce request and answer", () => {
  it("keeps each batch as first encoded and resends exactly those bytes", () => {
    const w = new Writer(8);
    const batches = [batch("a", 0, "one"), batch("a", 1, "two"), batch("b", 0, "three")];
    const producer = { producerId: 9n, producerEpoch: 1 };
    const first = encodeProduce(w, 8, "client", 25_000, producer, batches);
    expect(first.readInt32BE(0)).toBe(first.length - 4);
    expect(first.readInt16BE(4)).toBe(0); // Produce
    expect(first.readInt16BE(6)).toBe(8);
    const encoded = batches.map((b) => Buffer.from(b.bytes!));
    // The scratch is reused: a later request must not change the kept batches.
    encodeProduce(w, 8, "client", 25_000, producer, [batch("c", 0, "x".repeat(5000))]);
    const again = encodeProduce(w, 8, "client", 25_000, producer, batches.slice(1));
    batches.forEach((b, i) => expect(b.bytes).toEqual(encoded[i]));
    expect(again.includes(encoded[1]!)).toBe(true);
    expect(again.includes(encoded[2]!)).toBe(true);
    expect(again.includes(encoded[0]!)).toBe(false);
  });

  it("reads per-partition outcomes: success, DUPLICATE_SEQUENCE_NUMBER as success, retriable and fatal errors, a partition left out", () => {
    const batches = [batch("a", 0, "1"), batch("a", 1, "2"), batch("a", 2, "3"), batch("b", 0, "4"), batch("b", 1, "5")];
    parseProduce(
      response([
        ["a", 0, 0],
        ["a", 1, 46],
        ["a", 2, 6],
        ["b", 0, 10],
      ]),
      8,
      batches,
    );
    expect(batches[0]!.error).toBeNull();
    expect(batches[1]!.error).toBeNull();
    const leader = batches[2]!.error as KafkaProtocolError;
    expect([leader.type, leader.code, leader.retriable]).toEqual(["NOT_LEADER_OR_FOLLOWER", 6, true]);
    const tooLarge = batches[3]!.error as KafkaProtocolError;
    expect([tooLarge.type, tooLarge.code, tooLarge.retriable]).toEqual(["MESSAGE_TOO_LARGE", 10, false]);
    expect(tooLarge.message).toContain("detail");
    expect((batches[4]!.error as KafkaProtocolError).retriable).toBe(true);
  });
});
