import { afterEach, describe, expect, it } from "vitest";
import { pino } from "pino";
import { loadConfig } from "../../src/config.js";
import type { Checkpoint } from "../../src/checkpoint/position.js";
import type { Lsn, Position } from "../../src/lsn.js";
import { Session } from "../../src/pipeline.js";
import type { SinkCallbacks, SinkRecord } from "../../src/sink/kafka.js";
import type { ReadBackResult } from "../../src/sink/read-back.js";
import type { StreamHandlers } from "../../src/source/replication.js";
import type { SourceReady } from "../../src/source/slot.js";
import type { ReplicationSource, Sink, SourceStream, Stages } from "../../src/stages.js";

/**
 * The session between fakes of its three stages (src/stages.ts): the replication source and its
 * stream, the event publisher and the checkpoint store. The start-up protocol, the message loop,
 * the mapper and the ack rule are the real ones; only PostgreSQL and Kafka are not there. Every
 * open and close lands in `events`, in order.
 */

const SLOT_AT = 0x1000n;
const READY: SourceReady = {
  slot: { confirmedFlushLsn: SLOT_AT, walStatus: "reserved", invalidationReason: null },
  walLsn: 0x9000n,
  maxSlotWalKeepSize: null,
  idleReplicationSlotTimeout: null,
};

interface Gate<T> {
  promise: Promise<T>;
  open(value: T): void;
}

function gate<T>(): Gate<T> {
  let open: (value: T) => void = () => undefined;
  const promise = new Promise<T>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

class FakeStream implements SourceStream {
  handlers: StreamHandlers | null = null;
  readonly statuses: Lsn[] = [];
  readonly done: Promise<void>;
  private settle: { resolve: () => void; reject: (e: Error) => void } = { resolve: () => undefined, reject: () => undefined };
  private open = true;
  private paused = false;

  constructor(private readonly events: string[]) {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.done.catch(() => undefined);
  }

  async start(handlers: StreamHandlers): Promise<void> {
    this.events.push("stream.start");
    this.handlers = handlers;
  }

  sendStatus(lsn: Lsn): void {
    if (this.open) this.statuses.push(lsn);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  get isOpen(): boolean {
    return this.open;
  }

  async stop(): Promise<void> {
    this.events.push("stream.stop");
    this.end();
  }

  /** The server ended the stream (resolves `done`), or it failed (`e`). */
  end(e?: Error): void {
    if (!this.open) return;
    this.open = false;
    if (e) this.settle.reject(e);
    else this.settle.resolve();
  }
}

/** Which of the stages' start-up steps wait for the test to let them go on. */
interface Holds {
  prepare?: Gate<void>;
  connect?: Gate<void>;
  readBack?: Gate<void>;
  /** What the read-back finds: topic -> per partition, the highest position Kafka holds. */
  heads?: Map<string, (Position | null)[]>;
}

class FakeSink implements Sink {
  readonly pushed: SinkRecord[] = [];
  readonly inflightBytes = 0;
  readonly checkpointPending = false;

  constructor(
    private readonly events: string[],
    readonly callbacks: SinkCallbacks,
    private readonly holds: Holds,
    private readonly checkpoint: Checkpoint | null,
  ) {}

  async connect(): Promise<void> {
    this.events.push("sink.connect");
    await this.holds.connect?.promise;
  }

  async readBack(): Promise<ReadBackResult> {
    this.events.push("sink.readBack");
    await this.holds.readBack?.promise;
    return { heads: this.holds.heads ?? new Map(), records: 0, ms: 0 };
  }

  async readCheckpoint(): Promise<Checkpoint | null> {
    this.events.push("sink.readCheckpoint");
    return this.checkpoint;
  }

  push(rec: SinkRecord): void {
    this.pushed.push(rec);
  }

  async idle(): Promise<void> {}

  requestCheckpoint(): void {}

  async checkpointNow(): Promise<Lsn | null> {
    this.events.push("sink.checkpointNow");
    const lsn = this.callbacks.ack.ackedLsnFor(null);
    this.callbacks.ack.checkpointed(lsn);
    return lsn;
  }

  async close(): Promise<void> {
    this.events.push("sink.close");
  }
}

function harness(env: Record<string, string> = {}, holds: Holds = {}, checkpoint: Checkpoint | null = null) {
  const cfg = loadConfig({ EVENTSTREAM_STATUS_INTERVAL_SECONDS: "60", ...env });
  const events: string[] = [];
  const streams: FakeStream[] = [];
  const sinks: FakeSink[] = [];
  const source: ReplicationSource = {
    prepare: async () => {
      events.push("source.prepare");
      await holds.prepare?.promise;
      return READY;
    },
    readIdentity: async () => ({ systemIdentifier: "7000000000000000001", database: "airflow" }),
    createSlot: async () => READY.slot!,
    readSlotNow: async () => READY,
    runsUnderWay: async () => [],
    assets: async () => [],
    dagIdsWithRuns: async () => [],
    requestSnapshot: async (req) => {
      events.push(`source.requestSnapshot ${JSON.stringify(req)}`);
      return "s-1";
    },
    explainFailure: async () => null,
    openStream: () => {
      const s = new FakeStream(events);
      streams.push(s);
      return s;
    },
  };
  const stages: Stages = {
    source,
    sink: (callbacks) => {
      const s = new FakeSink(events, callbacks, holds, checkpoint);
      sinks.push(s);
      return s;
    },
  };
  const session = new Session(cfg, pino({ level: "silent" }), stages);
  return {
    session,
    events,
    get stream(): FakeStream {
      return streams[0]!;
    },
    get sink(): FakeSink {
      return sinks[0]!;
    },
    streams,
    sinks,
    /** What was opened and closed, in order. */
    get teardown(): string[] {
      return events.filter((e) => e === "stream.stop" || e === "sink.close");
    },
  };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  expect(cond()).toBe(true);
}

// pgoutput messages, encoded as PostgreSQL sends them (src/decode/pgoutput.ts reads them).
const TEXT = 25;
const INT4 = 23;
const TI_COLUMNS: [string, number, boolean][] = [
  ["task_id", TEXT, true],
  ["dag_id", TEXT, true],
  ["run_id", TEXT, true],
  ["map_index", INT4, true],
  ["state", TEXT, false],
  ["try_number", INT4, false],
  ["max_tries", INT4, false],
  ["hostname", TEXT, false],
  ["operator", TEXT, false],
  ["queue", TEXT, false],
  ["pool", TEXT, false],
];
const REL_ID = 16400;

const u8 = (n: number): Buffer => Buffer.from([n]);
const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
const i32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};
const cstr = (s: string): Buffer => Buffer.concat([Buffer.from(s), u8(0)]);

function relationMessage(): Buffer {
  const cols = TI_COLUMNS.map(([name, oid, key]) => Buffer.concat([u8(key ? 1 : 0), cstr(name), i32(oid), i32(-1)]));
  return Buffer.concat([u8(0x52), i32(REL_ID), cstr("public"), cstr("task_instance"), u8(0x66), u16(TI_COLUMNS.length), ...cols]);
}

/** One transaction inserting a task instance of `taskId`, its commit ending at `endLsn`. */
function insertTransaction(taskId: string, endLsn: Lsn): Buffer[] {
  const values = [taskId, "etl", "manual__1", "-1", "scheduled", "1", "0", "", "BashOperator", "default", "default_pool"];
  const tuple = Buffer.concat([
    u16(values.length),
    ...values.map((v) => Buffer.concat([u8(0x74), i32(Buffer.byteLength(v)), Buffer.from(v)])),
  ]);
  return [
    Buffer.concat([u8(0x42), u64(endLsn - 0x10n), u64(0n), i32(700)]),
    Buffer.concat([u8(0x49), i32(REL_ID), u8(0x4e), tuple]),
    Buffer.concat([u8(0x43), u8(0), u64(endLsn - 0x10n), u64(endLsn), u64(0n)]),
  ];
}

function feed(stream: FakeStream, messages: Buffer[]): void {
  for (const m of messages) stream.handlers!.onData(m);
}

/** The session a test runs, ended after it whatever happened. */
let live: { session: Session; run: Promise<void> } | null = null;
function start(h: { session: Session }): Promise<void> {
  live = { session: h.session, run: h.session.run() };
  return live.run;
}
afterEach(async () => {
  // A test that failed half-way leaves no session streaming into the next.
  if (live === null) return;
  await live.session.stop(100);
  await live.run.catch(() => undefined);
  live = null;
});

describe("Session: teardown", () => {
  it("a publisher failure ends the session and closes the stream, then the sink, once each", async () => {
    const h = harness();
    const run = start(h);
    await until(() => h.session.streamingSince > 0);
    feed(h.stream, [relationMessage(), ...insertTransaction("extract", SLOT_AT + 0x100n)]);
    expect(h.sink.pushed).toHaveLength(1);

    const failure = new Error("NOT_LEADER_FOR_PARTITION");
    h.sink.callbacks.failed(failure);
    // The halted guard: messages still in the socket's last read are not decoded or handed on.
    feed(h.stream, insertTransaction("load", SLOT_AT + 0x200n));
    expect(h.sink.pushed).toHaveLength(1);

    await expect(run).rejects.toBe(failure);
    expect(h.teardown).toEqual(["stream.stop", "sink.close"]);
    expect(h.sink.pushed).toHaveLength(1);
    // Kafka acknowledged nothing: what PostgreSQL heard last is still the slot's position.
    expect(h.stream.statuses.at(-1)).toBe(SLOT_AT);
  });

  it("a stream that fails ends the session and closes the sink after the stream", async () => {
    const h = harness({ EVENTSTREAM_GAP_DETECTION: "false" });
    const run = start(h);
    await until(() => h.session.streamingSince > 0);
    const failure = new Error("replication connection to PostgreSQL closed");
    h.stream.end(failure);
    await expect(run).rejects.toBe(failure);
    expect(h.teardown).toEqual(["stream.stop", "sink.close"]);
  });

  it("a stream that ends ends the session and closes the sink", async () => {
    const h = harness();
    const run = start(h);
    await until(() => h.session.streamingSince > 0);
    h.stream.end();
    await expect(run).resolves.toBeUndefined();
    expect(h.teardown).toEqual(["stream.stop", "sink.close"]);
  });

  it("a failure during the start-up protocol closes what was built", async () => {
    const readBack = gate<void>();
    const h = harness({}, { readBack });
    const run = start(h);
    await until(() => h.events.includes("sink.readBack"));
    const failure = new Error("the checkpoint topic is not writable");
    h.sink.callbacks.failed(failure);
    await expect(run).rejects.toBe(failure);
    expect(h.teardown).toEqual(["stream.stop", "sink.close"]);
    expect(h.session.streamingSince).toBe(0);
  });
});

describe("Session: stop() during start-up", () => {
  it("before the source is ready: nothing is built", async () => {
    const prepare = gate<void>();
    const h = harness({}, { prepare });
    const run = start(h);
    await until(() => h.events.includes("source.prepare"));
    await h.session.stop(1_000);
    prepare.open();
    await expect(run).resolves.toBeUndefined();
    expect(h.sinks).toHaveLength(0);
    expect(h.streams).toHaveLength(0);
  });

  it("while Kafka connects: the sink is closed, no stream is opened", async () => {
    const connect = gate<void>();
    const h = harness({}, { connect });
    const run = start(h);
    await until(() => h.events.includes("sink.connect"));
    await h.session.stop(1_000);
    connect.open();
    await expect(run).resolves.toBeUndefined();
    expect(h.streams).toHaveLength(0);
    expect(h.teardown).toEqual(["sink.close"]);
  });

  it("while the event topics are read back: the stream and the sink are closed, the sink last and once", async () => {
    const readBack = gate<void>();
    const h = harness({}, { readBack });
    const run = start(h);
    await until(() => h.events.includes("sink.readBack"));
    await h.session.stop(1_000);
    readBack.open();
    await expect(run).resolves.toBeUndefined();
    expect(h.session.streamingSince).toBe(0);
    expect(h.teardown.at(-1)).toBe("sink.close");
    expect(h.teardown.filter((e) => e === "sink.close")).toHaveLength(1);
    expect(h.teardown).toContain("stream.stop");
  });
});

describe("Session: the checkpoint found at start", () => {
  const found = (ackedLsn: Lsn): Checkpoint => ({
    position: null,
    ackedLsn,
    slot: "airflow_eventstream",
    systemIdentifier: null,
    database: "airflow",
    writtenAt: null,
  });

  it("bounds the acked_lsn of every later checkpoint from below", async () => {
    // The slot confirmed less than the last checkpoint recorded (a crash between the two).
    const ackedLsn = SLOT_AT + 0x500n;
    const h = harness({}, {}, found(ackedLsn));
    void start(h);
    await until(() => h.session.streamingSince > 0);
    expect(h.events).toContain("sink.readCheckpoint");
    expect(h.sink.callbacks.ack.ackedLsnFor(null)).toBe(ackedLsn);
    await h.session.stop(1_000);
  });

  it("ahead of the server's WAL (restored to an earlier point) bounds nothing: the rule starts over from the slot", async () => {
    const h = harness({}, {}, found(READY.walLsn + 0x100n));
    void start(h);
    await until(() => h.session.streamingSince > 0);
    expect(h.sink.callbacks.ack.ackedLsnFor(null)).toBe(SLOT_AT);
    await h.session.stop(1_000);
  });
});

describe("Session: the current-state topic in an at-least-once replay", () => {
  // Kafka's event topic holds the first transaction's event in every partition (read back at start).
  const heads = (upTo: Lsn) => new Map([["airflow.events", Array.from({ length: 6 }, (): Position => ({ commitLsn: upTo, index: 0 }))]]);
  const KEY = '{"type":"task_instance","dag_id":"etl","run_id":"manual__1","task_id":"a","map_index":-1}';

  it("sends a covered event's state record again, alone on the state topic; an uncovered event goes with its own", async () => {
    const h = harness({}, { heads: heads(0x2000n - 0x10n) });
    void start(h);
    await until(() => h.session.streamingSince > 0);
    feed(h.stream, [relationMessage(), ...insertTransaction("a", 0x2000n), ...insertTransaction("b", 0x3000n)]);
    await until(() => h.sink.pushed.length === 2);
    const [resent, published] = h.sink.pushed;
    expect(resent).toMatchObject({ topic: "airflow.state", key: KEY, commitLsn: 0x2000n - 0x10n });
    expect(JSON.parse(resent!.value!)).toMatchObject({ type: "task_instance", task_id: "a", state: "scheduled" });
    expect(resent!.state).toBeUndefined();
    expect(published).toMatchObject({ topic: "airflow.events", key: "etl" });
    expect(published!.state).toEqual([{ key: KEY.replace('"a"', '"b"'), value: published!.value }]);
    // The state record holds the transaction's acknowledgement back like an event.
    expect(resent!.seq).toBeLessThan(published!.seq);
    await h.session.stop(1_000);
  });

  it("sends nothing for a covered event without a state topic", async () => {
    const h = harness({ EVENTSTREAM_STATE_TOPIC_ENABLED: "false" }, { heads: heads(0x2000n - 0x10n) });
    void start(h);
    await until(() => h.session.streamingSince > 0);
    feed(h.stream, [relationMessage(), ...insertTransaction("a", 0x2000n), ...insertTransaction("b", 0x3000n)]);
    await until(() => h.sink.pushed.length === 1);
    expect(h.sink.pushed[0]).toMatchObject({ topic: "airflow.events" });
    expect(h.sink.pushed[0]!.state).toBeUndefined();
    await h.session.stop(1_000);
  });
});
