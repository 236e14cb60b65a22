import type { Message, TopicMessages } from "kafkajs";
import { describe, expect, it } from "vitest";
import { pino } from "pino";
import type { SchemaRegistryClient } from "../../../src/sink/schema-registry.js";
import { ValueFraming } from "../../../src/sink/schema-registry.js";
import { WIRE_HEADER_BYTES, framedSchemaId, parseEventValue } from "../../../src/sink/wire-format.js";
import { loadConfig } from "../../../src/config.js";
import type { Lsn } from "../../../src/lsn.js";
import type { Position } from "../../../src/lsn.js";
import { TransientError } from "../../../src/errors.js";
import { RECORD_BATCH_OVERHEAD_BYTES, recordBytes } from "../../../src/sink/batch.js";
import {
  Publisher,
  type CheckpointRecords,
  type PublishProducer,
  type PublisherTopics,
  type SinkCallbacks,
  type SinkRecord,
} from "../../../src/sink/publisher.js";

const TOPIC = "airflow.events";
const CKPT = "ckpt";
const CAP = 2_048;

/** One produce request as the fake producer received it. */
interface Request {
  topicMessages: TopicMessages[];
  transactional: boolean;
  outcome: "sent" | "committed" | "aborted" | "failed";
}

/**
 * A kafkajs producer that records each request and answers it on the next turn of the event loop,
 * as a broker would; `fail(n)` makes the n-th request (from 0) fail instead.
 */
function fakeProducer(failAt = new Set<number>()): { producer: PublishProducer; requests: Request[] } {
  const requests: Request[] = [];
  const answer = async (req: Request): Promise<void> => {
    const i = requests.push(req) - 1;
    await new Promise((r) => setImmediate(r));
    if (failAt.has(i)) {
      req.outcome = "failed";
      throw Object.assign(new Error("NOT_LEADER_FOR_PARTITION"), { type: "NOT_LEADER_FOR_PARTITION" });
    }
  };
  const producer = {
    sendBatch: async ({ topicMessages }: { topicMessages: TopicMessages[] }) => {
      const req: Request = { topicMessages: topicMessages ?? [], transactional: false, outcome: "sent" };
      await answer(req);
      return [];
    },
    transaction: async () => {
      let req: Request | null = null;
      return {
        sendBatch: async ({ topicMessages }: { topicMessages: TopicMessages[] }) => {
          req = { topicMessages: topicMessages ?? [], transactional: true, outcome: "sent" };
          await answer(req);
          return [];
        },
        commit: async () => {
          if (req) req.outcome = "committed";
        },
        abort: async () => {
          if (req && req.outcome !== "failed") req.outcome = "aborted";
        },
      };
    },
  } as unknown as PublishProducer;
  return { producer, requests };
}

const topics: PublisherTopics = {
  ensureKnown: async () => undefined,
  partitions: async (ts) => new Map(ts.map((t) => [t, [0, 1, 2]])),
};

/** A checkpoint store that records what the publisher told it. */
function fakeCheckpoints(ready = true) {
  const log: string[] = [];
  const store: CheckpointRecords = {
    topic: CKPT,
    ready,
    next: (last: SinkRecord | null, ackedLsn: Lsn) => {
      log.push(`next ${last?.seq ?? "-"} ${ackedLsn}`);
      return { topic: CKPT, messages: [{ key: "slot", value: `ckpt ${last?.seq ?? "-"} ${ackedLsn}` }] };
    },
    acknowledged: (p: Position) => log.push(`acknowledged ${p.commitLsn}/${p.index}`),
  };
  return { store, log };
}

function callbacks() {
  const acked: number[] = [];
  const failures: Error[] = [];
  const checkpointed: Lsn[] = [];
  const asked: (number | null)[] = [];
  const cb: SinkCallbacks = {
    failed: (e) => failures.push(e),
    ack: {
      acked: (seq) => acked.push(seq),
      ackedLsnFor: (seq) => {
        asked.push(seq);
        return BigInt(1000 + (seq ?? 0));
      },
      checkpointed: (lsn) => checkpointed.push(lsn),
    },
  };
  return { cb, acked, failures, checkpointed, asked };
}

const record = (seq: number, bytes = 100, topic = TOPIC): SinkRecord => ({
  topic,
  key: `dag_${seq % 3}`,
  value: JSON.stringify({ seq, pad: "x".repeat(Math.max(0, bytes - 20)) }),
  seq,
  commitLsn: BigInt(seq),
  index: 0,
});

const events = (req: Request): Message[] => req.topicMessages.filter((t) => t.topic !== CKPT).flatMap((t) => t.messages);
const seqOf = (m: Message): number => (JSON.parse(String(m.value)) as { seq: number }).seq;

function setup(env: Record<string, string> = {}, opts: { failAt?: number[]; checkpoints?: boolean } = {}) {
  const cfg = loadConfig({ EVENTSTREAM_BATCH_MAX_BYTES: String(CAP), ...env });
  const fake = fakeProducer(new Set(opts.failAt ?? []));
  const ckpt = fakeCheckpoints();
  const cbs = callbacks();
  const publisher = new Publisher(cfg, fake.producer, topics, opts.checkpoints === false ? null : ckpt.store, cbs.cb);
  return { publisher, ...fake, ckpt, ...cbs };
}

describe("the publisher's byte-capped batches", () => {
  it("never puts more than the byte cap of events in one request, and keeps the push order", async () => {
    const { publisher, requests, acked } = setup();
    const sizes = [100, 700, 300, 900, 50, 1_500, 20, 400, 800, 60, 1_000, 1_000, 10];
    const recs = Array.from({ length: 60 }, (_, i) => record(i + 1, sizes[i % sizes.length]));
    for (const r of recs) publisher.push(r);
    await publisher.idle();

    expect(requests.length).toBeGreaterThan(5);
    for (const req of requests) {
      const msgs = events(req);
      const bytes = msgs.reduce((n, m) => n + recordBytes(String(m.value), m.key as string | null), 0);
      if (msgs.length > 1) expect(RECORD_BATCH_OVERHEAD_BYTES + bytes).toBeLessThanOrEqual(CAP);
    }
    // In push order, each once.
    expect(requests.flatMap(events).map(seqOf)).toEqual(recs.map((r) => r.seq));
    // Each request acknowledged by its last record, in push order, ending with the last one.
    expect(acked).toEqual(requests.map((req) => seqOf(events(req).at(-1)!)));
    expect(acked.at(-1)).toBe(60);
    expect(publisher.inflightBytes).toBe(0);
  });

  it("sends a record alone over the cap by itself, between its neighbours", async () => {
    const { publisher, requests } = setup();
    publisher.push(record(1));
    publisher.push(record(2));
    publisher.push(record(3, CAP * 2));
    publisher.push(record(4));
    await publisher.idle();
    expect(requests.map((req) => events(req).map(seqOf))).toEqual([[1], [2], [3], [4]]);
  });

  it("caps a request by count too", async () => {
    const { publisher, requests } = setup({ EVENTSTREAM_BATCH_MAX_EVENTS: "4", EVENTSTREAM_BATCH_MAX_BYTES: "1000000" });
    for (let i = 1; i <= 10; i++) publisher.push(record(i, 10));
    await publisher.idle();
    expect(requests.map((req) => events(req).map(seqOf))).toEqual([[1], [2, 3, 4, 5], [6, 7, 8, 9], [10]]);
  });

  it("counts inflight bytes until Kafka acknowledges them", async () => {
    const { publisher } = setup();
    publisher.push(record(1, 200));
    publisher.push(record(2, 300));
    expect(publisher.inflightBytes).toBe(recordBytes(record(1, 200).value, "dag_1") + recordBytes(record(2, 300).value, "dag_2"));
    await publisher.idle();
    expect(publisher.inflightBytes).toBe(0);
  });

  it("sends an all-partitions record once to each partition, the others as they were", async () => {
    const { publisher, requests } = setup();
    publisher.push(record(1));
    publisher.push(record(2));
    publisher.push({ ...record(3), allPartitions: true });
    publisher.push(record(4));
    await publisher.idle();
    const second = requests[1]!.topicMessages.find((t) => t.topic === TOPIC)!.messages;
    expect(second.map((m) => [seqOf(m), m.partition])).toEqual([
      [2, undefined],
      [3, 0],
      [3, 1],
      [3, 2],
      [4, undefined],
    ]);
  });
});

describe("the publisher's checkpoints", () => {
  it("puts a checkpoint into every request with events, asked of the tracker by the request's last seq", async () => {
    const { publisher, requests, ckpt, asked, checkpointed, acked } = setup();
    for (let i = 1; i <= 5; i++) publisher.push(record(i, 600));
    await publisher.idle();
    for (const req of requests) expect(req.topicMessages.at(-1)!.topic).toBe(CKPT);
    expect(asked).toEqual(acked);
    expect(checkpointed).toEqual(acked.map((s) => BigInt(1000 + s)));
    // The store hears of the events Kafka holds before it builds the next checkpoint record.
    expect(ckpt.log.slice(0, 3)).toEqual(["next 1 1001", "acknowledged 1/0", "next 4 1004"]);
  });

  it("writes a checkpoint alone when asked while idle, and answers checkpointNow with its acked_lsn", async () => {
    const { publisher, requests, asked } = setup();
    await expect(publisher.checkpointNow()).resolves.toBe(1000n);
    expect(asked).toEqual([null]);
    expect(requests).toHaveLength(1);
    expect(requests[0]!.topicMessages.map((t) => t.topic)).toEqual([CKPT]);
    expect(publisher.checkpointPending).toBe(false);
  });

  it("writes no checkpoint before the checkpoint was read, nor without a checkpoint topic", async () => {
    const notReady = setup();
    (notReady.ckpt.store as { ready: boolean }).ready = false;
    notReady.publisher.push(record(1));
    await notReady.publisher.idle();
    expect(notReady.requests.map((r) => r.topicMessages.map((t) => t.topic))).toEqual([[TOPIC]]);
    await expect(notReady.publisher.checkpointNow()).resolves.toBeNull();

    const none = setup({}, { checkpoints: false });
    none.publisher.push(record(1));
    none.publisher.requestCheckpoint();
    await none.publisher.idle();
    expect(none.requests.map((r) => r.topicMessages.map((t) => t.topic))).toEqual([[TOPIC]]);
    expect(none.acked).toEqual([1]);
  });

  it("exactly-once: each batch and its checkpoint are one committed transaction", async () => {
    const { publisher, requests } = setup({ EVENTSTREAM_DELIVERY: "exactly-once" });
    for (let i = 1; i <= 4; i++) publisher.push(record(i, 900));
    await publisher.idle();
    expect(requests.every((r) => r.transactional && r.outcome === "committed")).toBe(true);
    expect(requests.every((r) => r.topicMessages.at(-1)!.topic === CKPT)).toBe(true);
  });
});

describe("a failed request", () => {
  it("is reported through failed, acknowledges nothing of it, and stops the events", async () => {
    const { publisher, requests, acked, failures, checkpointed } = setup({}, { failAt: [1] });
    for (let i = 1; i <= 20; i++) publisher.push(record(i, 500));
    await publisher.idle();
    expect(failures).toHaveLength(1);
    expect(failures[0]).toBeInstanceOf(TransientError);
    expect(failures[0]!.message).toMatch(/^publishing \d+ events to Kafka failed \(NOT_LEADER_FOR_PARTITION\)/);
    // Only the first request was acknowledged; nothing was sent after the failure.
    expect(acked).toEqual([1]);
    expect(checkpointed).toEqual([1001n]);
    expect(requests).toHaveLength(2);
    publisher.push(record(21));
    await new Promise((r) => setImmediate(r));
    expect(requests).toHaveLength(2);
  });

  it("at-least-once: a checkpoint may still be written after it; exactly-once: not", async () => {
    const alo = setup({}, { failAt: [0] });
    alo.publisher.push(record(1));
    await alo.publisher.idle();
    await expect(alo.publisher.checkpointNow()).resolves.toBe(1000n);
    expect(alo.asked).toEqual([1, null]);

    const eos = setup({ EVENTSTREAM_DELIVERY: "exactly-once" }, { failAt: [0] });
    eos.publisher.push(record(1));
    await eos.publisher.idle();
    expect(eos.requests[0]!.outcome).toBe("failed");
    await expect(eos.publisher.checkpointNow()).resolves.toBeNull();
    expect(eos.requests).toHaveLength(1);
  });

  it("answers a waiting checkpointNow with null when stopped", async () => {
    const { publisher } = setup();
    publisher.push(record(1));
    const waiting = publisher.checkpointNow();
    publisher.stop();
    await expect(waiting).resolves.toBeNull();
    await expect(publisher.checkpointNow()).resolves.toBeNull();
  });
});

describe("the publisher's current-state records", () => {
  const STATE = "airflow.state";
  const withState = (seq: number, bytes = 100): SinkRecord => ({ ...record(seq, bytes), state: [{ key: `k${seq}`, value: `s${seq}` }] });

  for (const delivery of ["at-least-once", "exactly-once"] as const) {
    it(`sends them in the same request as their events (${delivery}), in push order`, async () => {
      const { publisher, requests } = setup({ EVENTSTREAM_DELIVERY: delivery });
      for (let i = 1; i <= 6; i++) publisher.push(i % 3 === 0 ? record(i) : withState(i));
      await publisher.idle();
      for (const req of requests) {
        const evs = req.topicMessages.find((t) => t.topic === TOPIC)?.messages.map(seqOf) ?? [];
        const states = req.topicMessages.find((t) => t.topic === STATE)?.messages.map((m) => m.key) ?? [];
        expect(states).toEqual(evs.filter((s) => s % 3 !== 0).map((s) => `k${s}`));
        expect(req.transactional).toBe(delivery === "exactly-once");
      }
      expect(requests.flatMap((r) => r.topicMessages.find((t) => t.topic === STATE)?.messages ?? []).map((m) => m.value)).toEqual([
        "s1",
        "s2",
        "s4",
        "s5",
      ]);
    });
  }

  it("caps their bytes on their own: a request holds up to the cap of events and up to the cap of state records", async () => {
    const { publisher, requests } = setup();
    // Events of 100 bytes (many fit), state records of ~1,000 (one fits): the state cap binds.
    const bigState = (seq: number): SinkRecord => ({ ...record(seq, 100), state: [{ key: `k${seq}`, value: "v".repeat(1_000) }] });
    for (let i = 1; i <= 4; i++) publisher.push(bigState(i));
    expect(publisher.inflightBytes).toBe(4 * (recordBytes(record(1, 100).value, "dag_1") + recordBytes("v".repeat(1_000), "k1")));
    await publisher.idle();
    const evs = (req: Request) => req.topicMessages.find((t) => t.topic === TOPIC)?.messages.map(seqOf) ?? [];
    expect(requests.map(evs)).toEqual([[1], [2], [3], [4]]);
    // Events of ~700 bytes with small state records: two per request, as without a state topic.
    const { publisher: p2, requests: r2 } = setup();
    for (let i = 1; i <= 4; i++) p2.push(withState(i, 700));
    await p2.idle();
    expect(r2.map(evs)).toEqual([[1], [2, 3], [4]]);
  });
});

describe("the publisher with a schema registry (EVENTSTREAM_SCHEMA_REGISTRY_URL)", () => {
  /** A registry that hands out ids per subject; the real one is test/registry's. */
  function framingWith(cfg: ReturnType<typeof loadConfig>) {
    const subjects: string[] = [];
    const client = {
      setCompatibility: async () => undefined,
      register: async (subject: string) => subjects.push(subject) + 40,
    } as unknown as SchemaRegistryClient;
    return { framing: new ValueFraming(cfg, pino({ level: "silent" }), client), subjects };
  }

  it("frames event values with their topic's schema id, leaves the dead-letter topic plain, and counts the 5 bytes", async () => {
    const cfg = loadConfig({
      EVENTSTREAM_BATCH_MAX_BYTES: String(CAP),
      EVENTSTREAM_SCHEMA_REGISTRY_URL: "http://registry.invalid/apis/ccompat/v7",
      EVENTSTREAM_DEAD_LETTER_TOPIC: "dlq",
    });
    const { framing, subjects } = framingWith(cfg);
    await framing.start();
    const fake = fakeProducer();
    const cbs = callbacks();
    const publisher = new Publisher(cfg, fake.producer, topics, null, cbs.cb, framing);
    publisher.push(record(1, 200));
    publisher.push(record(2, 100, "dlq"));
    expect(publisher.inflightBytes).toBe(
      recordBytes(record(1, 200).value, "dag_1") + WIRE_HEADER_BYTES + recordBytes(record(2, 100).value, "dag_2"),
    );
    await publisher.idle();
    const sent = fake.requests.flatMap((r) => r.topicMessages);
    const event = sent.find((t) => t.topic === TOPIC)!.messages[0]!.value as Buffer;
    expect(framedSchemaId(event)).toBe(41);
    expect(parseEventValue(event)).toEqual(JSON.parse(record(1, 200).value!));
    expect(sent.find((t) => t.topic === "dlq")!.messages[0]!.value).toBe(record(2, 100, "dlq").value);
    expect(subjects).toEqual([`${TOPIC}-value`, "airflow.state-value"]);
  });
});
