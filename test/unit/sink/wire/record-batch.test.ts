import { createRequire } from "node:module";
import type { Message } from "kafkajs";
import { describe, expect, it } from "vitest";
import { writeRecordBatch } from "../../../../src/sink/wire/record-batch.js";
import { Writer, varintSize } from "../../../../src/sink/wire/writer.js";

/**
 * The record batches of the wire producer, read back by kafkajs's own decoder (the one its
 * consumer uses on every fetch) and checked against kafkajs's CRC-32C (which that decoder skips).
 */
const require = createRequire(import.meta.url);
const Decoder = require("kafkajs/src/protocol/decoder") as new (b: Buffer) => unknown;
const decodeBatch = require("kafkajs/src/protocol/recordBatch/v0/decoder") as (d: unknown) => Promise<DecodedBatch>;
const kafkajsCrc32C = require("kafkajs/src/protocol/recordBatch/crc32C") as (b: Buffer) => number;

interface DecodedBatch {
  firstOffset: string;
  firstTimestamp: string;
  maxTimestamp: string;
  producerId: string;
  producerEpoch: number;
  firstSequence: number;
  lastOffsetDelta: number;
  inTransaction: boolean;
  isControlBatch: boolean;
  timestampType: number;
  records: { key: Buffer | null; value: Buffer | null; headers: Record<string, Buffer | Buffer[]>; offset: string; timestamp: string }[];
}

const PRODUCER = { producerId: 4_000_000_123n, producerEpoch: 7, baseSequence: 2_147_483_000 };
const NOW = 1_780_000_000_123;

async function roundTrip(messages: Message[], writer = new Writer(16)): Promise<{ batch: DecodedBatch; bytes: Buffer }> {
  writer.pos = 3; // not at the buffer's start, as inside a request
  const length = writeRecordBatch(writer, messages, PRODUCER, NOW);
  expect(writer.pos).toBe(3 + length);
  const bytes = Buffer.from(writer.buf.subarray(3, 3 + length));
  return { batch: await decodeBatch(new Decoder(bytes)), bytes };
}

const text = (b: Buffer | null) => (b === null ? null : b.toString("utf8"));

describe("writeRecordBatch", () => {
  it("writes what kafkajs decodes: keys, values, headers, offsets, producer id, epoch, sequence, timestamps", async () => {
    const messages: Message[] = Array.from({ length: 50 }, (_, i) => ({
      key: `dag_${i % 7}`,
      value: JSON.stringify({ i, state: "success", pad: "x".repeat(i * 13) }),
      headers: { ce_type: "task_instance.state_changed", ce_id: `id-${i}` },
    }));
    const { batch, bytes } = await roundTrip(messages);
    expect(batch.firstOffset).toBe("0");
    expect(batch.producerId).toBe("4000000123");
    expect(batch.producerEpoch).toBe(7);
    expect(batch.firstSequence).toBe(2_147_483_000);
    expect(batch.lastOffsetDelta).toBe(49);
    expect(batch.firstTimestamp).toBe(String(NOW));
    expect(batch.maxTimestamp).toBe(String(NOW));
    expect(batch.inTransaction).toBe(false);
    expect(batch.isControlBatch).toBe(false);
    expect(batch.records).toHaveLength(50);
    batch.records.forEach((r, i) => {
      expect(r.offset).toBe(String(i));
      expect(r.timestamp).toBe(String(NOW));
      expect(text(r.key)).toBe(messages[i]!.key);
      expect(text(r.value)).toBe(messages[i]!.value);
      expect(Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, (v as Buffer).toString()]))).toEqual(messages[i]!.headers);
    });
    // batchLength counts from partitionLeaderEpoch to the end; the CRC-32C covers attributes..end.
    expect(bytes.readInt32BE(8)).toBe(bytes.length - 12);
    expect(bytes.readInt8(16)).toBe(2);
    expect(bytes.readUInt32BE(17)).toBe(kafkajsCrc32C(bytes.subarray(21)));
  });

  it("keeps unicode, empty and null keys and values, Buffers and repeated headers", async () => {
    const messages: Message[] = [
      { key: "日本語🙂é", value: "ünïcødé 🙂 \u0000 end" },
      { key: "", value: "" },
      { key: null, value: null },
      { key: undefined, value: "keyless" },
      { key: Buffer.from([0, 255, 1]), value: Buffer.from([9, 8, 7]), headers: { bin: Buffer.from([1, 2]), multi: ["a", "b"] } },
    ];
    const { batch, bytes } = await roundTrip(messages);
    const r = batch.records;
    expect(text(r[0]!.key)).toBe("日本語🙂é");
    expect(text(r[0]!.value)).toBe("ünïcødé 🙂 \u0000 end");
    expect(r[1]!.key).toEqual(Buffer.alloc(0));
    expect(r[1]!.value).toEqual(Buffer.alloc(0));
    expect(r[2]!.key).toBeNull();
    expect(r[2]!.value).toBeNull();
    expect(r[3]!.key).toBeNull();
    expect(text(r[3]!.value)).toBe("keyless");
    expect(r[4]!.key).toEqual(Buffer.from([0, 255, 1]));
    expect(r[4]!.value).toEqual(Buffer.from([9, 8, 7]));
    expect(r[4]!.headers.bin).toEqual(Buffer.from([1, 2]));
    expect((r[4]!.headers.multi as Buffer[]).map(String)).toEqual(["a", "b"]);
    expect(bytes.readUInt32BE(17)).toBe(kafkajsCrc32C(bytes.subarray(21)));
  });

  it("sizes every length prefix right across the varint boundaries, for strings that shrink in UTF-8 and ones that do not", async () => {
    // 63/64 (1 -> 2 bytes), 8191/8192 (2 -> 3), and long strings whose 3x bound needs a larger
    // prefix than their real UTF-8 length (the reserved prefix is shrunk and the bytes moved back).
    const lengths = [0, 1, 63, 64, 65, 2730, 2731, 8191, 8192, 8193, 100_000];
    const messages: Message[] = [];
    for (const n of lengths) {
      messages.push({ key: "k".repeat(n % 300), value: "v".repeat(n) });
      messages.push({ key: "é".repeat(n % 100), value: "€".repeat(Math.floor(n / 3)) + "a".repeat(n % 3) });
    }
    const { batch, bytes } = await roundTrip(messages, new Writer(8));
    batch.records.forEach((r, i) => {
      expect(text(r.key)).toBe(messages[i]!.key);
      expect(text(r.value)).toBe(messages[i]!.value);
      expect(r.offset).toBe(String(i));
    });
    expect(bytes.readUInt32BE(17)).toBe(kafkajsCrc32C(bytes.subarray(21)));
  });
});

describe("Writer", () => {
  it("writes Kafka's zigzag varints (the sizes varintSize predicts)", () => {
    const w = new Writer(4);
    const cases: [number, number[]][] = [
      [0, [0x00]],
      [-1, [0x01]],
      [1, [0x02]],
      [63, [0x7e]],
      [-64, [0x7f]],
      [64, [0x80, 0x01]],
      [300, [0xd8, 0x04]],
      [2_147_483_647, [0xfe, 0xff, 0xff, 0xff, 0x0f]],
      [-2_147_483_648, [0xff, 0xff, 0xff, 0xff, 0x0f]],
    ];
    for (const [n, bytes] of cases) {
      w.reset();
      w.varint(n);
      expect([...w.buf.subarray(0, w.pos)], String(n)).toEqual(bytes);
      expect(varintSize(n), String(n)).toBe(bytes.length);
    }
  });

  it("keeps what it wrote when it grows, and copies it out once", () => {
    const w = new Writer(2);
    w.int32(0x01020304);
    w.string("héllo");
    w.int64(NOW);
    w.bigInt64(-5n);
    const out = w.finish();
    expect(out.readInt32BE(0)).toBe(0x01020304);
    expect(out.readInt16BE(4)).toBe(6);
    expect(out.toString("utf8", 6, 12)).toBe("héllo");
    expect(out.readBigInt64BE(12)).toBe(BigInt(NOW));
    expect(out.readBigInt64BE(20)).toBe(-5n);
    expect(out.length).toBe(28);
    w.reset();
    w.int8(9);
    expect(out.readInt32BE(0)).toBe(0x01020304);
  });
});
