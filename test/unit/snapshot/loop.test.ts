import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { AckRule } from "../../../src/checkpoint/ack.js";
import { loadConfig } from "../../../src/config.js";
import { AirflowMapper } from "../../../src/airflow/mapper.js";
import { TransactionDecoder } from "../../../src/decode/transactions.js";
import { Lifecycle } from "../../../src/lifecycle.js";
import { MessageLoop } from "../../../src/session-loop.js";
import { Metrics } from "../../../src/operate/metrics.js";
import type { SinkRecord } from "../../../src/sink/kafka.js";
import { TopicRouter } from "../../../src/sink/routing.js";
import type { ChunkRead } from "../../../src/snapshot/chunk-reader.js";
import { WATERMARK_PREFIX } from "../../../src/snapshot/spec.js";
import { SnapshotTap, type ChunkOutcome } from "../../../src/snapshot/tap.js";
import { parseSnapshot } from "../../../src/snapshot/window.js";

const START = 0x1000n;

/** A pgoutput 'M' message (pg_logical_emit_message), non-transactional. */
function messageBytes(lsn: bigint, prefix: string, content: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(content));
  const head = Buffer.alloc(10);
  head.write("M", 0);
  head.writeUInt8(0, 1);
  head.writeBigUInt64BE(lsn, 2);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([head, Buffer.from(`${prefix}\0`), len, body]);
}

describe("a snapshot chunk in the message loop", () => {
  it("is published at the high watermark, at (LSN - 1, 0..n-1), and holds PostgreSQL's acknowledgement like a transaction", () => {
    const cfg = loadConfig({ EVENTSTREAM_STATUS_INTERVAL_SECONDS: "60", EVENTSTREAM_GAP_DETECTION: "false" });
    const log = pino({ level: "silent" });
    const sent: bigint[] = [];
    const pushed: SinkRecord[] = [];
    const life = new Lifecycle();
    const stream = { sendStatus: (l: bigint) => void sent.push(l), pause: () => undefined, resume: () => undefined, isPaused: false };
    const ackSink = { requestCheckpoint: () => undefined, checkpointPending: false, inflightBytes: 0 };
    const ack = new AckRule(
      START,
      false,
      { statusIntervalMs: 60_000, maxInflightEvents: 1000, maxInflightBytes: 1e9 },
      stream,
      ackSink,
      life,
    );
    const mapper = new AirflowMapper({ schema: cfg.airflowSchema, cacheSize: 1000, xcomKey: null, notificationRawMaxBytes: 1000 }, log);
    const tap = new SnapshotTap(cfg.airflowSchema, () => undefined);
    const loop = new MessageLoop(cfg, log, {
      decoder: new TransactionDecoder(),
      mapper,
      router: new TopicRouter(cfg.topic, cfg.topicTemplate),
      metrics: new Metrics({ version: "", airflowSchema: cfg.airflowSchema, delivery: cfg.delivery, stallMs: 0 }, false),
      sink: { push: (r) => void pushed.push(r) },
      ack,
      life,
      snapshots: tap,
    });
    const relation = {
      id: -1,
      schema: cfg.airflowSchema,
      name: "dag_run",
      replicaIdentity: "f" as const,
      columns: ["id", "dag_id", "run_id", "state"].map((name) => ({ name, typeOid: name === "id" ? 23 : 25, typeMod: -1, isKey: false })),
    };
    const read: ChunkRead = {
      rows: [1, 2].map((id) => ({ row: { id, dag_id: "d", run_id: `r${id}`, state: "running" }, key: [String(id)] })),
      scanned: 2,
      lastKey: ["2"],
      snapshot: parseSnapshot("10:10:"),
      relation,
      readAt: "2026-12-03T00:00:00.000000Z",
    };
    const outcomes: ChunkOutcome[] = [];
    tap.register({
      run: "r",
      job: "j",
      chunk: 1,
      table: "dag_run",
      low: null,
      touched: new Set(),
      spoiled: false,
      read,
      settle: (o) => outcomes.push(o),
    });
    const w = (kind: string) => ({ run: "r", job: "j", chunk: 1, kind });
    loop.onData(messageBytes(0x2000n, WATERMARK_PREFIX, w("low")));
    loop.onData(messageBytes(0x3000n, WATERMARK_PREFIX, w("high")));

    expect(pushed.map((r) => [r.commitLsn, r.index, JSON.parse(r.value!).op, JSON.parse(r.value!).source.position])).toEqual([
      [0x2fffn, 0, "snapshot", "0000000000002FFF-00000000"],
      [0x2fffn, 1, "snapshot", "0000000000002FFF-00000001"],
    ]);
    expect(outcomes).toEqual([{ kind: "published", events: 2, lastSeq: pushed[1]!.seq }]);

    // A keepalive past the watermark: nothing past the start until Kafka has both rows.
    loop.onKeepalive(0x4000n, true);
    expect(sent.every((l) => l <= START)).toBe(true);
    ack.acked(pushed[0]!.seq);
    loop.onKeepalive(0x4000n, true);
    expect(sent[sent.length - 1]).toBe(START);
    ack.acked(pushed[1]!.seq);
    loop.onKeepalive(0x4100n, true);
    expect(sent[sent.length - 1]).toBe(0x4100n);
  });
});
