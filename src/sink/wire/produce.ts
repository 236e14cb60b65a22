import type { Message } from "kafkajs";
import { API, beginFrame, endFrame } from "./connection.js";
import { DUPLICATE_SEQUENCE_NUMBER, KafkaProtocolError } from "./errors.js";
import { Reader } from "./reader.js";
import { writeRecordBatch } from "./record-batch.js";
import type { Writer } from "./writer.js";

/** One partition's record batch of one sendBatch, kept as encoded for a resend. */
export interface Batch {
  topic: string;
  partition: number;
  messages: readonly Message[];
  baseSequence: number;
  /** The encoded RecordBatch once sent (a view into the first request's frame), resent as is. */
  bytes: Buffer | null;
  /** The partition's error code in the last answer (0: none). */
  code: number;
  error: Error | null;
}

/**
 * A Produce request (v3-v8) for `batches`, all led by one broker: encoded into the scratch writer
 * `w` and copied out once (the Buffer goes to socket.write; the scratch is reused by the next one).
 * A batch not yet encoded is written in place; one sent before is copied as it was.
 */
export function encodeProduce(
  w: Writer,
  version: number,
  clientId: string,
  timeoutMs: number,
  producer: { producerId: bigint; producerEpoch: number },
  batches: readonly Batch[],
): Buffer {
  w.reset();
  const start = beginFrame(w, API.Produce, version, clientId);
  w.string(null); // transactional_id
  w.int16(-1); // acks: all in-sync replicas
  w.int32(timeoutMs);
  const byTopic = new Map<string, Batch[]>();
  for (const b of batches) {
    const list = byTopic.get(b.topic);
    if (list === undefined) byTopic.set(b.topic, [b]);
    else list.push(b);
  }
  const fresh: { batch: Batch; at: number; length: number }[] = [];
  const timestamp = Date.now();
  w.int32(byTopic.size);
  for (const [topic, list] of byTopic) {
    w.string(topic);
    w.int32(list.length);
    for (const b of list) {
      w.int32(b.partition);
      const lengthAt = w.pos;
      w.int32(0);
      let length: number;
      if (b.bytes === null) {
        length = writeRecordBatch(w, b.messages, { ...producer, baseSequence: b.baseSequence }, timestamp);
        fresh.push({ batch: b, at: lengthAt + 4, length });
      } else {
        length = b.bytes.length;
        w.ensure(length);
        b.bytes.copy(w.buf, w.pos);
        w.pos += length;
      }
      w.buf.writeInt32BE(length, lengthAt);
    }
  }
  endFrame(w, start);
  const frame = w.finish();
  // Views, not copies: the frame is not written to after it is sent (the correlation id of a
  // request is set before it is sent, in bytes outside the batches).
  for (const f of fresh) f.batch.bytes = frame.subarray(f.at, f.at + f.length);
  return frame;
}

/** Reads a Produce answer into the batches' `code` and `error` (DUPLICATE_SEQUENCE_NUMBER: already written, no error). */
export function parseProduce(body: Buffer, version: number, batches: readonly Batch[]): readonly Batch[] {
  const r = new Reader(body);
  const answered = new Set<Batch>();
  const find = new Map<string, Batch>();
  for (const b of batches) find.set(`${b.topic}\u0000${b.partition}`, b);
  const topics = r.int32();
  for (let t = 0; t < topics; t++) {
    const topic = r.string() ?? "";
    const partitions = r.int32();
    for (let p = 0; p < partitions; p++) {
      const partition = r.int32();
      const code = r.int16();
      r.skip(16); // base_offset, log_append_time_ms
      if (version >= 5) r.skip(8); // log_start_offset
      let detail: string | null = null;
      if (version >= 8) {
        const recordErrors = r.array((x) => `record ${x.int32()}: ${x.string() ?? "?"}`);
        detail = r.string();
        if (recordErrors.length > 0) detail = `${detail ?? ""} ${recordErrors.join("; ")}`.trim();
      }
      const b = find.get(`${topic}\u0000${partition}`);
      if (b === undefined) continue;
      answered.add(b);
      b.code = code;
      b.error =
        code === 0 || code === DUPLICATE_SEQUENCE_NUMBER
          ? null
          : new KafkaProtocolError(code, `producing to ${topic}[${partition}]`, detail);
    }
  }
  for (const b of batches) {
    if (!answered.has(b))
      b.error = new KafkaProtocolError(13, `producing to ${b.topic}[${b.partition}]`, "the broker's answer left the partition out");
  }
  return batches;
}
