import { crc32c } from "@node-rs/crc32";
import type { Message } from "kafkajs";
import { varintSize, type Writer } from "./writer.js";

/**
 * Kafka's RecordBatch (magic 2), written straight into the request being built: no compression,
 * CreateTime, one timestamp for the batch (every record's delta 0), the idempotent producer's id,
 * epoch and first sequence number. Layout: https://kafka.apache.org/documentation/#recordbatch
 */

export interface BatchProducer {
  producerId: bigint;
  producerEpoch: number;
  baseSequence: number;
}

/** Offsets inside the batch (from its first byte) of the fields filled in after the records. */
const BATCH_LENGTH_AT = 8;
const CRC_AT = 17;
const ATTRIBUTES_AT = 21;
/** Bytes before batchLength's end are not counted in it (baseOffset, batchLength). */
const BATCH_LENGTH_EXCLUDES = 12;

type HeaderValue = string | Buffer | (string | Buffer)[] | undefined;

/** Bytes a part can take at most: its varint length and 3 UTF-8 bytes per UTF-16 unit. */
function partBound(v: string | Buffer | null | undefined): number {
  if (v === null || v === undefined) return 1;
  return 5 + (typeof v === "string" ? v.length * 3 : v.length);
}

function headerBound(headers: Record<string, HeaderValue> | undefined): number {
  if (headers === undefined) return 1;
  let n = 5;
  for (const key in headers) {
    const v = headers[key];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) n += partBound(key) + partBound(x);
    else n += partBound(key) + partBound(v);
  }
  return n;
}

function writeHeaders(w: Writer, headers: Record<string, HeaderValue> | undefined): void {
  if (headers === undefined) {
    w.varint(0);
    return;
  }
  let count = 0;
  for (const key in headers) {
    const v = headers[key];
    if (v !== undefined) count += Array.isArray(v) ? v.length : 1;
  }
  w.varint(count);
  for (const key in headers) {
    const v = headers[key];
    if (v === undefined) continue;
    // kafkajs's IHeaders allow several values under one key: one header each, in order.
    for (const x of Array.isArray(v) ? v : [v]) {
      w.varBytes(key);
      w.varBytes(x);
    }
  }
}

/** Appends one record batch of `messages` (at least one) at w.pos; returns its length in bytes. */
export function writeRecordBatch(w: Writer, messages: readonly Message[], producer: BatchProducer, timestamp: number): number {
  const start = w.pos;
  w.ensure(61);
  w.int64(0); // baseOffset: the broker assigns offsets
  w.int32(0); // batchLength, below
  w.int32(-1); // partitionLeaderEpoch: set by the broker
  w.int8(2); // magic
  w.int32(0); // crc, below
  w.int16(0); // attributes: no compression, CreateTime, not transactional, not control
  w.int32(messages.length - 1); // lastOffsetDelta
  w.int64(timestamp); // firstTimestamp
  w.int64(timestamp); // maxTimestamp
  w.bigInt64(producer.producerId);
  w.int16(producer.producerEpoch);
  w.int32(producer.baseSequence);
  w.int32(messages.length);
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    const headers = m.headers as Record<string, HeaderValue> | undefined;
    // The record's length precedes it; reserved for its longest case, moved back when shorter
    // (for records of up to ~2,700 bytes both need the same varint size: no move).
    const bound = 3 + varintSize(i) + partBound(m.key) + partBound(m.value) + headerBound(headers);
    const reserve = varintSize(bound);
    w.ensure(reserve + bound);
    const lengthAt = w.pos;
    w.pos += reserve;
    const bodyAt = w.pos;
    w.int8(0); // attributes
    w.int8(0); // timestampDelta (varlong 0)
    w.varint(i); // offsetDelta
    w.varBytes(m.key);
    w.varBytes(m.value);
    writeHeaders(w, headers);
    const size = w.pos - bodyAt;
    const need = varintSize(size);
    if (need !== reserve) w.buf.copyWithin(lengthAt + need, bodyAt, w.pos);
    const end = lengthAt + need + size;
    w.pos = lengthAt;
    w.varint(size);
    w.pos = end;
  }
  const length = w.pos - start;
  w.buf.writeInt32BE(length - BATCH_LENGTH_EXCLUDES, start + BATCH_LENGTH_AT);
  w.buf.writeUInt32BE(crc32c(w.buf.subarray(start + ATTRIBUTES_AT, w.pos)), start + CRC_AT);
  return length;
}
