import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { readiness, type Readiness, type Role } from "./readiness.js";

const P = "airflow_eventstream_";

/** What a session reports at scrape time; read only while it is bound (see bindSession). */
export interface SessionView {
  inflightEvents(): number;
  inflightBytes(): number;
  paused(): boolean;
  /** The state cache and the counters the mapper keeps (monotonic within the session). */
  cache(): { size: number; hits: number; misses: number; churn: number };
}

/** The slot as the probe read it (slot-probe.ts). */
export interface SlotSample {
  lagBytes: number;
  retainedBytes: number;
  active: boolean;
}

/** A transaction's records waiting for Kafka's acknowledgement, for the commit → ack histogram. */
interface Pending {
  firstSeq: number;
  lastSeq: number;
  commitMs: number;
}

/**
 * One registry and every metric of the daemon, plus the facts /readyz and /status are made of. One
 * object per daemon, handed down to the session: no module-level state, so tests running several
 * daemons in one process each see their own.
 *
 * Per-event work is kept to a counter increment on a cached child and a push per transaction: the
 * gauges that describe state (in flight, cache, lags) are computed when scraped, not maintained.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly changesDecoded: Counter;
  private decodedPending = 0;
  private readonly churnDropped: Counter;
  readonly bytesProduced: Counter;
  readonly produceRequests: Counter;
  readonly produceRequestEvents: Histogram;
  readonly kafkaErrors: Counter<"kind">;
  readonly oversized: Counter;
  readonly sessionRestarts: Counter<"reason">;
  private readonly eventsPublished: Counter<"type" | "state">;
  private readonly eventsFiltered: Counter<"type">;
  /** Per type, the child of eventsFiltered (one lookup per filtered event otherwise). */
  private readonly filteredChildren = new Map<string, Counter.Internal>();
  /** Per type and state, the child and the events pushed since the last scrape; see foldCounts. */
  private readonly published = new Map<string, { child: Counter.Internal; pending: number }>();
  private readonly commitToAck: Histogram;
  private readonly cacheHits: Counter;
  private readonly cacheMisses: Counter;
  private readonly pending: Pending[] = [];
  private pendingHead = 0;
  private session: SessionView | null = null;
  /** Cache counters of sessions already ended: the metrics stay monotonic across restarts. */
  private readonly ended = { hits: 0, misses: 0, churn: 0 };
  private counted = { hits: 0, misses: 0, churn: 0 };

  private readonly pausedSeconds: Counter;
  /** Backpressure time so far, ms, and the start of the pause under way (performance.now()), if any. */
  private pausedMs = 0;
  private pausedSince: number | null = null;
  private pausedCounted = 0;

  /** Stands in for "never" in the ages below: a daemon that never acknowledged has waited since it started. */
  private readonly startedAt = Date.now();
  role: Role = "starting";
  roleSince = Date.now();
  lastCommitMs = 0;
  lastAckAt = 0;
  ackedLsn: bigint | null = null;
  checkpointAt = 0;
  checkpointLsn: bigint | null = null;
  slot: SlotSample | null = null;
  slotError: string | null = null;
  lagAtAck: number | null = null;
  postgres = "unknown";

  constructor(
    readonly build: { version: string; airflowSchema: string; delivery: string; stallMs: number },
    defaults = true,
  ) {
    const r = [this.registry];
    if (defaults) collectDefaultMetrics({ register: this.registry });
    const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name: P + name, help, labelNames, registers: r });
    // Read from the session's mapper when scraped (see foldCache), not counted per change.
    const folded = (name: string, help: string) => new Counter({ name: P + name, help, registers: r, collect: () => this.foldCache() });
    this.changesDecoded = new Counter({
      name: P + "changes_decoded_total",
      help: "Row changes of the captured tables decoded from the WAL.",
      registers: r,
      collect: () => this.foldCounts(),
    });
    // A counter of time, not only the `paused` gauge: pauses of a fraction of a second each, many
    // a minute, fall between scrapes of a gauge; their sum says how much of the time Kafka held
    // reading back (the rest of a slow drain is the daemon's own work or PostgreSQL's).
    this.pausedSeconds = new Counter({
      name: P + "paused_seconds_total",
      help: "Seconds reading PostgreSQL was paused for backpressure: the events or bytes in flight to Kafka at their caps.",
      registers: r,
      collect: () => this.foldPaused(),
    });
    this.churnDropped = folded("churn_dropped_total", "Task-instance updates that changed no state (heartbeats, pids): no event.");
    this.bytesProduced = counter("bytes_produced_total", "Bytes of event records sent to Kafka (keys and values).");
    this.produceRequests = counter("produce_requests_total", "Produce requests Kafka acknowledged.");
    this.produceRequestEvents = new Histogram({
      name: P + "produce_request_events",
      help: "Events per acknowledged produce request.",
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000],
      registers: r,
    });
    this.kafkaErrors = counter("kafka_errors_total", "Produce requests that failed after the client's retries, by error name.", ["kind"]);
    this.oversized = counter(
      "oversized_events_total",
      "Events over EVENTSTREAM_MAX_MESSAGE_BYTES (sent to the dead-letter topic, or stopping the stream).",
    );
    this.sessionRestarts = counter("session_restarts_total", "Sessions ended and restarted, by reason.", ["reason"]);
    this.eventsPublished = new Counter({
      name: P + "events_published_total",
      help: "Events handed to Kafka, by type and state.",
      labelNames: ["type", "state"] as const,
      registers: r,
      collect: () => this.foldCounts(),
    });
    this.eventsFiltered = counter(
      "events_filtered_total",
      "Events not published because of EVENTSTREAM_INCLUDE_DAGS/_EXCLUDE_DAGS/_INCLUDE_TASKS/_EXCLUDE_TASKS, by type (still acknowledged).",
      ["type"],
    );
    this.cacheHits = folded("state_cache_hits_total", "Task-instance changes whose previous state was in the state cache.");
    this.cacheMisses = folded("state_cache_misses_total", "Task-instance changes whose previous state was not in the state cache.");
    this.commitToAck = new Histogram({
      name: P + "commit_to_ack_seconds",
      help: "Per event: from its commit in PostgreSQL to Kafka's acknowledgement.",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: r,
    });
    this.gauges();
  }

  /** The gauges, each computed when scraped from what the daemon knows then. */
  private gauges(): void {
    const gauge = (name: string, help: string, collect: (g: Gauge) => void, labelNames: string[] = []) =>
      new Gauge({
        name: P + name,
        help,
        labelNames,
        registers: [this.registry],
        collect: function (this: Gauge) {
          collect(this);
        },
      });
    // The slot's gauges are NaN while unknown (no probe yet, the slot missing, PostgreSQL away): 0
    // would read as "caught up" to an alert.
    const sec = (ms: number) => (Date.now() - (ms === 0 ? this.startedAt : ms)) / 1000;
    gauge("slot_lag_bytes", "pg_current_wal_lsn() - the slot's confirmed_flush_lsn.", (g) => g.set(this.slot?.lagBytes ?? NaN));
    gauge("slot_retained_wal_bytes", "pg_current_wal_lsn() - the slot's restart_lsn: WAL the slot keeps.", (g) =>
      g.set(this.slot?.retainedBytes ?? NaN),
    );
    gauge("source_lag_seconds", "Now - the commit time of the newest transaction received.", (g) => g.set(sec(this.lastCommitMs)));
    gauge("seconds_since_ack", "Seconds since PostgreSQL was last told a higher flush position.", (g) => g.set(sec(this.lastAckAt)));
    gauge("checkpoint_age_seconds", "Seconds since the last checkpoint was durable in Kafka.", (g) => g.set(sec(this.checkpointAt)));
    gauge("checkpoint_acked_lsn", "acked_lsn of the last durable checkpoint, as a number.", (g) => g.set(Number(this.checkpointLsn ?? 0n)));
    gauge("inflight_events", "Events handed to Kafka and not yet acknowledged.", (g) => g.set(this.session?.inflightEvents() ?? 0));
    gauge("inflight_bytes", "Bytes handed to Kafka and not yet acknowledged.", (g) => g.set(this.session?.inflightBytes() ?? 0));
    gauge("paused", "1 while reading PostgreSQL is paused for backpressure.", (g) => g.set(this.session?.paused() ? 1 : 0));
    gauge("state_cache_size", "Task instances whose last state is remembered.", (g) => g.set(this.session?.cache().size ?? 0));
    gauge(
      "role",
      "1 on the daemon's current role: active (holds the slot, streaming) or standby (waiting for it).",
      (g) => {
        g.set({ role: "active" }, this.role === "active" ? 1 : 0);
        g.set({ role: "standby" }, this.role === "standby" ? 1 : 0);
      },
      ["role"],
    );
    gauge(
      "build_info",
      "Always 1; the labels say what runs.",
      (g) => {
        g.reset();
        const b = this.build;
        g.set(
          { version: b.version, node: process.version, postgres: this.postgres, airflow_schema: b.airflowSchema, delivery: b.delivery },
          1,
        );
      },
      ["version", "node", "postgres", "airflow_schema", "delivery"],
    );
  }

  setRole(role: Role): void {
    if (role === this.role) return;
    this.role = role;
    this.roleSince = Date.now();
    this.lagAtAck = null;
  }

  /** The session whose in-flight counts and cache the scrape reads; null when it ended. */
  bindSession(view: SessionView | null): void {
    // A session that ends paused ends its pause: the next one starts reading.
    this.backpressure(false);
    this.foldCache();
    if (this.session !== null) {
      const c = this.session.cache();
      this.ended.hits += c.hits;
      this.ended.misses += c.misses;
      this.ended.churn += c.churn;
    }
    this.session = view;
    this.pending.length = 0;
    this.pendingHead = 0;
  }

  /** Reading PostgreSQL paused (true: again while paused changes nothing) or resumed for backpressure. */
  backpressure(paused: boolean): void {
    const now = performance.now();
    if (paused) {
      this.pausedSince ??= now;
      return;
    }
    if (this.pausedSince === null) return;
    this.pausedMs += now - this.pausedSince;
    this.pausedSince = null;
  }

  /** Seconds paused for backpressure so far, the pause under way included. */
  get pausedTotalSeconds(): number {
    return (this.pausedMs + (this.pausedSince === null ? 0 : performance.now() - this.pausedSince)) / 1000;
  }

  private foldPaused(): void {
    const now = this.pausedTotalSeconds;
    if (now > this.pausedCounted) this.pausedSeconds.inc(now - this.pausedCounted);
    this.pausedCounted = now;
  }

  /** Brings the cache counters up to the bound session's. */
  private foldCache(): void {
    const c = this.session?.cache() ?? { hits: 0, misses: 0, churn: 0 };
    const now = { hits: this.ended.hits + c.hits, misses: this.ended.misses + c.misses, churn: this.ended.churn + c.churn };
    if (now.hits > this.counted.hits) this.cacheHits.inc(now.hits - this.counted.hits);
    if (now.misses > this.counted.misses) this.cacheMisses.inc(now.misses - this.counted.misses);
    if (now.churn > this.counted.churn) this.churnDropped.inc(now.churn - this.counted.churn);
    this.counted = now;
  }

  decoded(n = 1): void {
    this.decodedPending += n;
  }

  /** At a scrape (collect), adds the counts gathered since the last: prom-client's inc() per event was ~2% of a drain's CPU. */
  private foldCounts(): void {
    if (this.decodedPending > 0) this.changesDecoded.inc(this.decodedPending);
    this.decodedPending = 0;
    for (const c of this.published.values()) {
      if (c.pending > 0) c.child.inc(c.pending);
      c.pending = 0;
    }
  }

  /** A transaction began; `ms` is PostgreSQL's timestamp of its commit, in ms since the Unix epoch (no Date.parse per transaction). */
  began(ms: number): number {
    if (ms > this.lastCommitMs) this.lastCommitMs = ms;
    return ms;
  }

  /** An event handed to the sink as record `seq`, of a transaction committed at `commitMs`. */
  pushed(type: string, state: string | null, seq: number, commitMs: number): void {
    const k = `${type}\u0000${state ?? ""}`;
    let c = this.published.get(k);
    if (c === undefined) this.published.set(k, (c = { child: this.eventsPublished.labels(type, state ?? "none"), pending: 0 }));
    c.pending++;
    const last = this.pending.length > this.pendingHead ? this.pending[this.pending.length - 1]! : null;
    if (last !== null && last.commitMs === commitMs && last.lastSeq === seq - 1) last.lastSeq = seq;
    else this.pending.push({ firstSeq: seq, lastSeq: seq, commitMs });
  }

  /** An event of `type` the filters left out. */
  filtered(type: string): void {
    let c = this.filteredChildren.get(type);
    if (c === undefined) this.filteredChildren.set(type, (c = this.eventsFiltered.labels(type)));
    c.inc();
  }

  /** Kafka acknowledged every record up to `seq`. */
  acked(seq: number): void {
    const now = Date.now();
    while (this.pendingHead < this.pending.length) {
      const p = this.pending[this.pendingHead]!;
      if (p.firstSeq > seq) break;
      const upTo = Math.min(p.lastSeq, seq);
      const s = Math.max(0, (now - p.commitMs) / 1000);
      for (let i = p.firstSeq; i <= upTo; i++) this.commitToAck.observe(s);
      p.firstSeq = upTo + 1;
      if (p.firstSeq <= p.lastSeq) break;
      this.pendingHead++;
    }
    if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      this.pending.splice(0, this.pendingHead);
      this.pendingHead = 0;
    }
  }

  /** A produce request of `events` events and `bytes` bytes was acknowledged. */
  produced(events: number, bytes: number): void {
    this.produceRequests.inc();
    if (events > 0) this.produceRequestEvents.observe(events);
    this.bytesProduced.inc(bytes);
  }

  /** PostgreSQL was sent flush position `lsn`. */
  flushed(lsn: bigint): void {
    if (this.ackedLsn !== null && lsn <= this.ackedLsn) return;
    this.ackedLsn = lsn;
    this.lastAckAt = Date.now();
    this.lagAtAck = null;
  }

  checkpointed(lsn: bigint): void {
    this.checkpointAt = Date.now();
    this.checkpointLsn = lsn;
  }

  /** A probe of the slot (slot-probe.ts); null: it failed with `error`. */
  probed(sample: SlotSample | null, error: string | null = null): void {
    this.slot = sample;
    this.slotError = error;
    if (sample !== null && this.lagAtAck === null) this.lagAtAck = sample.lagBytes;
  }

  readiness(now = Date.now()): Readiness {
    return readiness({
      role: this.role,
      now,
      roleSince: this.roleSince,
      lastAckAt: this.lastAckAt,
      lagAtAck: this.lagAtAck,
      lagNow: this.slot?.lagBytes ?? null,
      stallMs: this.build.stallMs,
    });
  }

  /** /status: the facts a person asks for, as JSON. */
  status(): Record<string, unknown> {
    const iso = (ms: number) => (ms === 0 ? null : new Date(ms).toISOString());
    const lsn = (l: bigint | null) =>
      l === null ? null : `${(l >> 32n).toString(16).toUpperCase()}/${(l & 0xffffffffn).toString(16).toUpperCase()}`;
    return {
      ...this.readiness(),
      role: this.role,
      role_since: iso(this.roleSince),
      version: this.build.version,
      delivery: this.build.delivery,
      postgres: this.postgres,
      slot:
        this.slot === null
          ? { error: this.slotError }
          : { lag_bytes: this.slot.lagBytes, retained_wal_bytes: this.slot.retainedBytes, active: this.slot.active },
      newest_commit: iso(this.lastCommitMs),
      last_ack: iso(this.lastAckAt),
      acked_lsn: lsn(this.ackedLsn),
      checkpoint: { acked_lsn: lsn(this.checkpointLsn), written: iso(this.checkpointAt) },
      inflight_events: this.session?.inflightEvents() ?? 0,
      inflight_bytes: this.session?.inflightBytes() ?? 0,
      paused: this.session?.paused() ?? false,
      paused_seconds_total: Math.round(this.pausedTotalSeconds * 1000) / 1000,
    };
  }
}
