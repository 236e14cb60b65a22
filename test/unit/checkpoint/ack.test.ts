import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AckRule, EVENT_CHECKPOINT_MS, type AckSettings } from "../../../src/checkpoint/ack.js";

const START = 0x1000n;
const SETTINGS: AckSettings = { statusIntervalMs: 10_000, maxInflightEvents: 2, maxInflightBytes: 1_000 };

/**
 * The ack rule between fakes of the stream, the sink and the session, next to an independent model
 * of the two bounds: what Kafka acknowledged (the highest commit end or keepalive WAL end with every
 * event before it acknowledged) and what a durable checkpoint says. Every status update is checked
 * against both when it is sent, and against the positions that exist (a commit end or a keepalive's
 * WAL end, exactly).
 */
class World {
  readonly sent: bigint[] = [];
  readonly violations: string[] = [];
  readonly failures: Error[] = [];
  paused = false;
  stopping = false;
  checkpointPending = false;
  checkpointsAsked = 0;
  inflightBytes = 0;
  sendError: Error | null = null;
  readonly rule: AckRule;
  /** The model. */
  private wal = START;
  private pushed = 0;
  private acked = 0;
  private readonly markers: { lsn: bigint; seq: number }[] = [];
  private readonly positions = new Set<bigint>([START]);
  private durable = START;
  private inTx = false;

  constructor(
    readonly gated: boolean,
    settings: AckSettings = SETTINGS,
  ) {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const world = this;
    const stream = {
      sendStatus: (lsn: bigint) => this.sendStatus(lsn),
      pause: () => void (this.paused = true),
      resume: () => void (this.paused = false),
      get isPaused() {
        return world.paused;
      },
    };
    const sink = {
      requestCheckpoint: () => {
        this.checkpointsAsked++;
        this.checkpointPending = true;
      },
      get checkpointPending() {
        return world.checkpointPending;
      },
      get inflightBytes() {
        return world.inflightBytes;
      },
    };
    const session = {
      get stopping() {
        return world.stopping;
      },
      fail: (e: Error) => void this.failures.push(e),
    };
    this.rule = new AckRule(START, gated, settings, stream, sink, session);
  }

  /** The highest position Kafka's acknowledgements allow. */
  get kafkaBound(): bigint {
    let b = START;
    for (const m of this.markers) if (m.seq <= this.acked && m.lsn > b) b = m.lsn;
    return b;
  }

  /** The highest position PostgreSQL may hear: both bounds. */
  get bound(): bigint {
    const k = this.kafkaBound;
    return this.gated && this.durable < k ? this.durable : k;
  }

  get last(): bigint | undefined {
    return this.sent[this.sent.length - 1];
  }

  /** A transaction of `events` events (and a keepalive in its middle, which must not count). */
  tx(events: number): bigint {
    this.wal += 0x100n;
    this.inTx = true;
    for (let i = 0; i < events; i++) {
      this.event();
      if (i === 0) this.keepalive(0xffff_0000n);
    }
    this.inTx = false;
    this.wal += 0x100n;
    const end = this.wal;
    this.markers.push({ lsn: end, seq: this.pushed });
    this.positions.add(end);
    this.rule.commit(end, events > 0);
    return end;
  }

  /** A keepalive; between transactions at the next WAL position unless given. */
  keepalive(walEnd = (this.wal += 0x80n), replyRequested = false): void {
    if (!this.inTx) {
      this.markers.push({ lsn: walEnd, seq: this.pushed });
      this.positions.add(walEnd);
    }
    this.rule.keepalive(walEnd, this.inTx, replyRequested);
  }

  event(bytes = 100): void {
    this.pushed = this.rule.next();
    this.inflightBytes += bytes;
    this.rule.pauseIfFull();
  }

  /** Kafka acknowledges every event pushed so far. */
  kafkaAck(): void {
    if (this.acked === this.pushed) return;
    this.acked = this.pushed;
    this.inflightBytes = 0;
    this.rule.acked(this.acked);
  }

  /** The sink writes a checkpoint alone (asked for or not): acked_lsn as the sink computes it. */
  checkpoint(): void {
    const lsn = this.rule.ackedLsnFor(null);
    if (lsn > this.kafkaBound) this.violations.push(`checkpoint-only acked_lsn ${lsn} past Kafka's ${this.kafkaBound}`);
    this.checkpointPending = false;
    if (lsn > this.durable) this.durable = lsn;
    this.rule.checkpointed(lsn);
  }

  /** One produce request with every event not yet acknowledged and a checkpoint, as Publisher sends it. */
  batch(): void {
    const last = this.pushed;
    const lsn = this.rule.ackedLsnFor(last === this.acked ? null : last);
    this.checkpointPending = false;
    this.acked = last;
    this.inflightBytes = 0;
    if (lsn !== this.kafkaBound) this.violations.push(`batch acked_lsn ${lsn}, the position after it is ${this.kafkaBound}`);
    this.rule.acked(last);
    if (lsn > this.durable) this.durable = lsn;
    this.rule.checkpointed(lsn);
  }

  /** Lets timers and immediates run. */
  advance(ms = 1): void {
    vi.advanceTimersByTime(ms);
  }

  private sendStatus(lsn: bigint): void {
    if (this.sendError) throw this.sendError;
    if (!this.positions.has(lsn)) this.violations.push(`reported ${lsn.toString(16)}: not a commit end nor a keepalive's WAL end`);
    if (lsn > this.kafkaBound)
      this.violations.push(`reported ${lsn.toString(16)} past what Kafka acknowledged (${this.kafkaBound.toString(16)})`);
    if (this.gated && lsn > this.durable)
      this.violations.push(`reported ${lsn.toString(16)} past the durable checkpoint (${this.durable.toString(16)})`);
    this.sent.push(lsn);
  }
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

type Op = "tx1" | "tx2" | "keepalive" | "kafkaAck" | "checkpoint" | "batch" | "time";
const OPS: Op[] = ["tx1", "tx2", "keepalive", "kafkaAck", "checkpoint", "batch", "time"];

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

function play(w: World, op: Op, reply: boolean): void {
  switch (op) {
    case "tx1":
      w.tx(1);
      break;
    case "tx2":
      w.tx(2);
      // Two events reach the cap of 2 in flight.
      if (!w.paused) w.violations.push("not paused at the cap of events in flight");
      break;
    case "keepalive":
      w.keepalive(undefined, reply);
      break;
    case "kafkaAck":
      w.kafkaAck();
      if (w.paused) w.violations.push("still paused with nothing in flight");
      break;
    case "checkpoint":
      w.checkpoint();
      break;
    case "batch":
      w.batch();
      if (w.paused) w.violations.push("still paused with nothing in flight");
      break;
    case "time":
      w.advance(SETTINGS.statusIntervalMs);
      if (w.checkpointPending) w.checkpoint();
      break;
  }
}

describe("AckRule: every ordering of commit, keepalive, Kafka ack, durable checkpoint, pause/resume", () => {
  it.each([
    ["gap detection on, keepalives without reply", true, false],
    ["gap detection on, keepalives asking for a reply", true, true],
    ["gap detection off", false, false],
    ["gap detection off, keepalives asking for a reply", false, true],
  ])("%s: never past either bound, always an exact position, and all of it once everything is durable", (_, gated, reply) => {
    let orderings = 0;
    for (const order of permutations(OPS)) {
      vi.setSystemTime(1_000_000);
      const w = new World(gated);
      w.rule.startStatusTimer();
      for (const op of order) {
        play(w, op, reply);
        w.advance();
      }
      // Then everything settles: Kafka has it all, a checkpoint says so, time passes.
      w.kafkaAck();
      w.advance(SETTINGS.statusIntervalMs);
      w.checkpoint();
      w.advance(SETTINGS.statusIntervalMs);
      w.rule.close();
      expect(w.violations, order.join(" ")).toEqual([]);
      expect(w.last, order.join(" ")).toBe(w.bound);
      expect(w.bound, order.join(" ")).toBe(w.kafkaBound);
      orderings++;
    }
    expect(orderings).toBe(5040);
  });
});

describe("AckRule: what PostgreSQL hears", () => {
  it("a commit's end LSN exactly, once Kafka acknowledged its events and a checkpoint holds it", () => {
    const w = new World(true);
    const end = w.tx(1);
    w.keepalive(undefined, false);
    w.advance();
    expect(w.sent).toEqual([START]);
    w.kafkaAck();
    w.advance();
    // Kafka has it, no checkpoint yet: the slot stays at the start.
    expect(w.last ?? START).toBe(START);
    w.advance(EVENT_CHECKPOINT_MS);
    expect(w.checkpointsAsked).toBe(1);
    w.checkpoint();
    w.advance();
    // The keepalive after the commit counts too, once Kafka has everything before it.
    expect(w.last).toBe(w.bound);
    expect(w.bound).toBeGreaterThan(end);
    expect(w.violations).toEqual([]);
  });

  it("nothing Kafka has not acknowledged, even when the server asks for a reply", () => {
    const w = new World(false);
    w.tx(1);
    w.keepalive(undefined, true);
    expect(w.sent).toEqual([START]);
    w.kafkaAck();
    w.advance();
    expect(w.violations).toEqual([]);
  });

  it("without gap detection, the Kafka-acknowledged commit end exactly, with no checkpoint", () => {
    const w = new World(false);
    const end = w.tx(1);
    w.kafkaAck();
    w.advance();
    expect(w.sent).toEqual([end]);
    expect(w.checkpointsAsked).toBe(0);
  });

  it("never past the durable checkpoint's acked_lsn while Kafka is ahead of it", () => {
    const w = new World(true);
    const first = w.tx(1);
    w.batch();
    w.advance();
    expect(w.last).toBe(first);
    w.tx(1);
    w.kafkaAck();
    w.advance();
    w.keepalive(undefined, true);
    expect(w.last).toBe(first);
    expect(w.violations).toEqual([]);
  });

  it("a checkpoint found at start bounds like one written", () => {
    const w = new World(true);
    w.rule.checkpointFound(START + 0x100n);
    expect(w.rule.flushLsn).toBe(START);
    expect(w.rule.checkpointBehind).toBe(false);
  });

  it("never has a checkpoint record an acked_lsn below the one found at start", () => {
    // A session that starts behind its predecessor's last checkpoint: the slot confirmed less than
    // that checkpoint recorded, and PostgreSQL may have been told that much.
    const found = START + 0x1000n;
    const w = new World(true);
    w.rule.checkpointFound(found);
    const end = w.tx(1);
    expect(end).toBeLessThan(found);
    expect(w.rule.ackedLsnFor(null)).toBe(found);
    expect(w.rule.ackedLsnFor(1)).toBe(found);
    // Without gap detection no checkpoint bounds anything.
    const ungated = new World(false);
    ungated.rule.checkpointFound(found);
    expect(ungated.rule.ackedLsnFor(null)).toBe(START);
  });

  it("reports once per turn of the event loop however many commits, and only when it moved", () => {
    const w = new World(false);
    for (let i = 0; i < 5; i++) w.tx(0);
    w.advance();
    expect(w.sent).toHaveLength(1);
    w.advance();
    w.keepalive(w.last!, false);
    w.advance();
    expect(w.sent).toHaveLength(1);
  });

  it("the status timer reports every interval until closed", () => {
    const w = new World(true);
    w.rule.startStatusTimer();
    w.advance(SETTINGS.statusIntervalMs * 3);
    expect(w.sent).toEqual([START, START, START]);
    w.rule.close();
    w.advance(SETTINGS.statusIntervalMs * 3);
    expect(w.sent).toHaveLength(3);
  });

  it("a status update that cannot be sent fails the session", () => {
    const w = new World(false);
    w.sendError = new Error("socket closed");
    w.rule.report();
    expect(w.failures.map((e) => e.message)).toEqual(["socket closed"]);
  });

  it("tells the sink the acked_lsn a request's checkpoint records: the position once its events are in Kafka", () => {
    const w = new World(true);
    w.tx(1); // seq 1
    const second = w.tx(2); // seq 2, 3
    expect(w.rule.ackedLsnFor(null)).toBe(START);
    expect(w.rule.ackedLsnFor(2)).toBeLessThan(second);
    expect(w.rule.ackedLsnFor(3)).toBe(second);
  });
});

describe("AckRule: when a checkpoint is asked for", () => {
  it("within EVENT_CHECKPOINT_MS of a transaction with events, once Kafka has it", () => {
    const w = new World(true);
    w.rule.firstCheckpointAsked();
    w.tx(1);
    w.kafkaAck();
    w.advance(EVENT_CHECKPOINT_MS - 2);
    expect(w.checkpointsAsked).toBe(0);
    w.advance(2);
    expect(w.checkpointsAsked).toBe(1);
  });

  it("at most once per status interval when only keepalives moved the position", () => {
    const w = new World(true);
    w.rule.firstCheckpointAsked();
    w.keepalive();
    w.advance(SETTINGS.statusIntervalMs - 2);
    expect(w.checkpointsAsked).toBe(0);
    w.advance(2);
    expect(w.checkpointsAsked).toBe(1);
    w.checkpoint();
    w.keepalive();
    w.advance(SETTINGS.statusIntervalMs / 2);
    expect(w.checkpointsAsked).toBe(1);
    w.advance(SETTINGS.statusIntervalMs / 2);
    expect(w.checkpointsAsked).toBe(2);
  });

  it("not while one is pending, not when nothing moved, not while stopping, never without gap detection", () => {
    const pending = new World(true);
    pending.checkpointPending = true;
    pending.tx(1);
    pending.kafkaAck();
    pending.advance(SETTINGS.statusIntervalMs);
    expect(pending.checkpointsAsked).toBe(0);

    const still = new World(true);
    still.advance(SETTINGS.statusIntervalMs);
    expect(still.checkpointsAsked).toBe(0);

    const stopping = new World(true);
    stopping.stopping = true;
    stopping.tx(1);
    stopping.kafkaAck();
    stopping.advance(SETTINGS.statusIntervalMs);
    expect(stopping.checkpointsAsked).toBe(0);

    const off = new World(false);
    off.tx(1);
    off.kafkaAck();
    off.advance(SETTINGS.statusIntervalMs);
    expect(off.checkpointsAsked).toBe(0);
    expect(off.rule.checkpointBehind).toBe(false);
  });
});

describe("AckRule: backpressure", () => {
  it("pauses at the cap of events in flight and resumes at half of it", () => {
    const w = new World(false, { ...SETTINGS, maxInflightEvents: 4 });
    for (let i = 0; i < 3; i++) w.event();
    expect(w.paused).toBe(false);
    w.event();
    expect(w.paused).toBe(true);
    w.rule.acked(1);
    expect(w.paused).toBe(true);
    w.rule.acked(2);
    expect(w.paused).toBe(false);
  });

  it("pauses at the cap of bytes in flight and resumes at half of it", () => {
    const w = new World(false, { ...SETTINGS, maxInflightEvents: 100, maxInflightBytes: 1_000 });
    w.event(999);
    expect(w.paused).toBe(false);
    w.event(1);
    expect(w.paused).toBe(true);
    w.inflightBytes = 501;
    w.rule.acked(1);
    expect(w.paused).toBe(true);
    w.inflightBytes = 500;
    w.rule.acked(2);
    expect(w.paused).toBe(false);
  });

  it("does not resume while stopping", () => {
    const w = new World(false);
    w.tx(2);
    expect(w.paused).toBe(true);
    w.stopping = true;
    w.kafkaAck();
    expect(w.paused).toBe(true);
  });
});
