import type { Writable } from "node:stream";
import { type IHeaders, type Kafka, type Message, type Producer } from "kafkajs";
import type { RecordSink, SourceRecord } from "./copy.js";
import { FastDefaultPartitioner } from "../sink/partitioner.js";
import { parseEventValue } from "../sink/wire-format.js";

/** The header naming the replay a copied record came from (its id), and the one naming the record it copies. */
export const REPLAY_HEADER = "eventstream-replay";
export const REPLAY_SOURCE_HEADER = "eventstream-replay-source";

/**
 * Records per produce request. A fetched batch (up to 1 MiB per partition) sent as one request would
 * land as one record batch in one output partition and could pass the broker's message.max.bytes
 * (1 MiB by default); chunks of this many bytes (plus headers) stay under it.
 */
const CHUNK_BYTES = 512 * 1024;

/**
 * The copy of a record for the output topic: key, value and headers as they are (Buffers, so byte
 * for byte), plus the replay's two headers (appended to a header of the same name that a replayed
 * replay already carries, not replacing it). Keyed records go by kafkajs's default partitioner, as
 * the daemon's did: one DAG in one partition, in order. Records without a key (table_truncated, which
 * the daemon copies to every partition) keep their partition number (modulo the output's count).
 * The timestamp is the copy's own: Kafka's time-based retention of the output topic counts from the
 * replay, not from the original write.
 */
export function copyOf(r: SourceRecord, replayId: string, outPartitions: number): Message {
  const headers: IHeaders = { ...(r.message.headers ?? {}) };
  const add = (name: string, value: string) => {
    const old = headers[name];
    headers[name] = old === undefined ? value : [...(Array.isArray(old) ? old : [old]), value];
  };
  add(REPLAY_HEADER, replayId);
  add(REPLAY_SOURCE_HEADER, `${r.topic}/${r.partition}/${r.message.offset}`);
  return {
    key: r.message.key,
    value: r.message.value,
    headers,
    ...(r.message.key === null ? { partition: r.partition % outPartitions } : {}),
  };
}

/**
 * Writes the copies to `topic`, each fetched batch before the next is read; in a transaction of its
 * own per batch when `transactional` (the producer then has a transactional id).
 */
export function topicSink(producer: Producer, topic: string, replayId: string, outPartitions: number, transactional: boolean): RecordSink {
  return {
    async write(records) {
      const chunks: Message[][] = [[]];
      let bytes = 0;
      for (const r of records) {
        const m = copyOf(r, replayId, outPartitions);
        const size = (r.message.value?.length ?? 0) + (r.message.key?.length ?? 0) + 128;
        if (bytes + size > CHUNK_BYTES && chunks.at(-1)!.length > 0) {
          chunks.push([]);
          bytes = 0;
        }
        chunks.at(-1)!.push(m);
        bytes += size;
      }
      if (!transactional) {
        for (const messages of chunks) await producer.send({ topic, acks: -1, messages });
        return;
      }
      const tx = await producer.transaction();
      try {
        for (const messages of chunks) await tx.send({ topic, acks: -1, messages });
        await tx.commit();
      } catch (e: unknown) {
        await tx.abort().catch(() => undefined);
        throw e;
      }
    },
  };
}

/** The replay's producer: idempotent; with a transactional id in exactly-once mode. */
export function replayProducer(kafka: Kafka, transactionalId: string | null): Producer {
  return kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: FastDefaultPartitioner,
    ...(transactionalId === null ? {} : { transactionalId }),
  });
}

/**
 * A record as a JSON line: the value parsed; a value that is not JSON (another producer's) as null
 * with `value_base64`, its bytes; headers as UTF-8 text.
 */
export function jsonLine(r: SourceRecord): string {
  let value: unknown = null;
  let raw: string | undefined;
  if (r.message.value !== null) {
    try {
      value = parseEventValue(r.message.value);
    } catch {
      raw = r.message.value.toString("base64");
    }
  }
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(r.message.headers ?? {})) {
    if (v === undefined) continue;
    headers[k] = Array.isArray(v) ? v.map((x) => x.toString()) : v.toString();
  }
  return `${JSON.stringify({
    topic: r.topic,
    partition: r.partition,
    offset: r.message.offset,
    key: r.message.key?.toString("utf8") ?? null,
    value,
    ...(raw === undefined ? {} : { value_base64: raw }),
    headers,
    timestamp: new Date(Number(r.message.timestamp)).toISOString(),
  })}\n`;
}

/** JSON lines to `out`, waiting for it to drain when its buffer is full (a slow pipe slows the read). */
export function stdoutSink(out: Writable): RecordSink {
  return {
    async write(records) {
      const text = records.map(jsonLine).join("");
      if (out.write(text)) return;
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          out.off("error", onError);
          resolve();
        };
        const onError = (e: Error) => {
          out.off("drain", onDrain);
          reject(e);
        };
        out.once("drain", onDrain);
        out.once("error", onError);
      });
    },
  };
}
