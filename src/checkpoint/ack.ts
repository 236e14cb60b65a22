import type { Lsn } from "../lsn.js";
import { coerceError } from "../errors.js";
import { maxLsn } from "../lsn.js";
import { AckTracker } from "./tracker.js";

/** How soon after Kafka acknowledges a transaction with events a checkpoint covering it is asked for (when no batch carries one first). */
export const EVENT_CHECKPOINT_MS = 100;

/** The sink's side of the rule: it reports what Kafka acknowledged and asks what a checkpoint records. */
export interface SinkAck {
  /** Kafka acknowledged every record up to and including `seq`. */
  acked(seq: number): void;
  /** A checkpoint with this acked_lsn is durably in Kafka: PostgreSQL may be acknowledged up to it. */
  checkpointed(ackedLsn: Lsn): void;
  /**
   * The acked_lsn for a checkpoint: the position PostgreSQL may be acknowledged up to once Kafka
   * has every record up to `lastSeq` (null: the records acknowledged so far), never below a
   * checkpoint's already durable.
   */
  ackedLsnFor(lastSeq: number | null): Lsn;
}

/** The replication stream, as the rule drives it. */
export interface AckStream {
  sendStatus(lsn: Lsn): void;
  pause(): void;
  resume(): void;
  readonly isPaused: boolean;
}

/** The sink, as the rule drives it. */
export interface AckSink {
  requestCheckpoint(): void;
  readonly checkpointPending: boolean;
  readonly inflightBytes: number;
}

/** The session: stopping (no checkpoint asked for, no resume), and where a failed status update goes. */
export interface AckSession {
  readonly stopping: boolean;
  fail(e: Error): void;
}

export interface AckSettings {
  statusIntervalMs: number;
  maxInflightEvents: number;
  maxInflightBytes: number;
}

/**
 * The acknowledgement rule: the only place a position for PostgreSQL, or the acked_lsn a checkpoint
 * records (ackedLsnFor), is computed.
 *
 * Invariant: the position reported to PostgreSQL is the end LSN of a commit (or a keepalive's WAL
 * end between transactions), exactly, never + 1, such that Kafka has acknowledged every event
 * before it (AckTracker's safe LSN), and, with gap detection, not past the acked_lsn of a
 * checkpoint durably in Kafka (`persisted`): a slot later found past that acked_lsn was moved by
 * someone else (src/checkpoint/gap.ts).
 *
 * A checkpoint rides in every produce request (src/sink/publisher.ts); when the safe LSN has moved past the
 * last one with no events to carry another (keepalives while Airflow is quiet, the last
 * transaction of a burst) one is asked for alone: within EVENT_CHECKPOINT_MS when that covers a
 * transaction with events (what a crash would re-deliver), else at most once per status interval,
 * so the slot still follows the WAL, that much later.
 *
 * Backpressure: reading PostgreSQL pauses when the events or bytes in flight to Kafka reach their
 * caps, and resumes at half of them, so reading does not flap on every acknowledgement.
 */
export class AckRule implements SinkAck {
  private readonly tracker: AckTracker;
  /** Gap detection: the highest acked_lsn durably in Kafka; PostgreSQL is never told more. null: no gate. */
  private persisted: Lsn | null;
  private lastReported = -1n;
  private reportScheduled = false;
  private lastCheckpointAsked = 0;
  /** The pending timer of a checkpoint asked for later (maybeCheckpoint); null: none pending. */
  private checkpointTimer: NodeJS.Timeout | null = null;
  private checkpointDue = 0;
  /** The end LSN of the last transaction that published events: a checkpoint past it is asked for soon (EVENT_CHECKPOINT_MS). */
  private eventsUpTo: Lsn = 0n;
  private statusTimer: NodeJS.Timeout | undefined;

  /**
   * `start`: the slot's confirmed position, where the replay starts and, with gap detection
   * (`gated`), what is durable already (a start checks the slot against the checkpoint).
   */
  constructor(
    start: Lsn,
    gated: boolean,
    private readonly settings: AckSettings,
    private readonly stream: AckStream,
    private readonly sink: AckSink,
    private readonly session: AckSession,
  ) {
    this.tracker = new AckTracker(start);
    this.persisted = gated ? start : null;
  }

  /** Events handed to the sink and not yet acknowledged by Kafka. */
  get inflight(): number {
    return this.tracker.inflight;
  }

  /** Sequence number for the next event handed to the sink. */
  next(): number {
    return this.tracker.next();
  }

  /** Backpressure: stops reading PostgreSQL until Kafka catches up (see maybeResume). */
  pauseIfFull(): void {
    if (this.tracker.inflight >= this.settings.maxInflightEvents || this.sink.inflightBytes >= this.settings.maxInflightBytes)
      this.stream.pause();
  }

  /** A transaction ended at `endLsn`; `withEvents`: it handed events to the sink. */
  commit(endLsn: Lsn, withEvents: boolean): void {
    if (withEvents) this.eventsUpTo = endLsn;
    this.tracker.commit(endLsn);
    this.scheduleReport();
  }

  /** A primary keepalive; its WAL end counts only between transactions. */
  keepalive(walEnd: Lsn, inTransaction: boolean, replyRequested: boolean): void {
    if (!inTransaction) this.tracker.keepalive(walEnd);
    if (replyRequested) this.report();
    else this.scheduleReport();
  }

  acked(seq: number): void {
    this.tracker.ackedUpTo(seq);
    this.scheduleReport();
    this.maybeResume();
  }

  checkpointed(ackedLsn: Lsn): void {
    if (this.persisted !== null) this.persisted = maxLsn(this.persisted, ackedLsn);
    this.scheduleReport();
  }

  ackedLsnFor(lastSeq: number | null): Lsn {
    const safe = this.tracker.safeLsnAfter(lastSeq);
    // Never below what a durable checkpoint (written, or read at start) records: PostgreSQL may
    // have been told that much already, by this session or the one before, and a lower record
    // would hide a slot later moved past it. A session that starts behind its predecessor's last
    // checkpoint (the slot confirmed less than the checkpoint recorded) would otherwise write one.
    return this.persisted === null ? safe : maxLsn(this.persisted, safe);
  }

  /** At start: the checkpoint read holds this acked_lsn, durable in Kafka already. */
  checkpointFound(ackedLsn: Lsn): void {
    if (this.persisted !== null) this.persisted = maxLsn(this.persisted, ackedLsn);
  }

  /** At start: the first checkpoint is written before streaming; it counts as the first asked for. */
  firstCheckpointAsked(): void {
    this.lastCheckpointAsked = Date.now();
  }

  /** Gap detection is on: checkpoints bound what PostgreSQL is told. */
  get gated(): boolean {
    return this.persisted !== null;
  }

  /** Kafka holds more than the last durable checkpoint says: a checkpoint would let PostgreSQL hear more. */
  get checkpointBehind(): boolean {
    return this.persisted !== null && this.tracker.safeLsn > this.persisted;
  }

  /**
   * Status updates also go out on a timer: while reading is paused (for backpressure, or while the
   * checkpoint is read) no keepalive is read, and the server drops a connection that stays silent
   * past wal_sender_timeout. With gap detection each tick also asks for a checkpoint when one is due.
   */
  startStatusTimer(): void {
    clearInterval(this.statusTimer);
    this.statusTimer = setInterval(() => this.tick(), this.settings.statusIntervalMs);
  }

  /** Ends the timers; nothing is asked for or reported by them after this. */
  close(): void {
    clearInterval(this.statusTimer);
    if (this.checkpointTimer) clearTimeout(this.checkpointTimer);
    this.checkpointTimer = null;
  }

  maybeResume(): void {
    if (!this.stream.isPaused || this.session.stopping) return;
    // Resume at half the caps, so reading does not flap on every acknowledgement.
    if (this.tracker.inflight <= this.settings.maxInflightEvents / 2 && this.sink.inflightBytes <= this.settings.maxInflightBytes / 2)
      this.stream.resume();
  }

  /** The position PostgreSQL may hear now (the invariant above). */
  get flushLsn(): Lsn {
    const safe = this.tracker.safeLsn;
    // Never past a durable checkpoint's acked_lsn: that is what makes a moved slot detectable.
    return this.persisted === null || safe < this.persisted ? safe : this.persisted;
  }

  /** Sends a status update; `onlyIfAdvanced`: only when the position moved since the last one. */
  report(onlyIfAdvanced = false): void {
    const lsn = this.flushLsn;
    if (onlyIfAdvanced && lsn <= this.lastReported) return;
    this.lastReported = lsn;
    try {
      this.stream.sendStatus(lsn);
    } catch (e: unknown) {
      this.session.fail(coerceError(e));
    }
  }

  /** Coalesces status updates: at most one per turn of the event loop. */
  private scheduleReport(): void {
    if (this.reportScheduled) return;
    this.reportScheduled = true;
    setImmediate(() => {
      this.reportScheduled = false;
      this.maybeCheckpoint();
      this.report(true);
    });
  }

  /** The status timer: a checkpoint when one is due (gap detection), and a status update. */
  private tick(): void {
    this.maybeCheckpoint();
    this.report();
  }

  /**
   * Asks the sink for a checkpoint when the safe position has moved past the last one in Kafka.
   * When that covers a transaction with events, within EVENT_CHECKPOINT_MS: until PostgreSQL hears
   * of it, a crash re-delivers it (a batch that follows meanwhile carries the checkpoint instead,
   * so under load this adds no request). Else, when only keepalives moved it (Airflow quiet, the
   * database busy), at most once per status interval: Kafka then takes one small record (exactly-
   * once: one small transaction) per interval at most.
   */
  private maybeCheckpoint(): void {
    const { sink, tracker } = this;
    if (this.persisted === null || this.session.stopping) return;
    if (tracker.safeLsn <= this.persisted || sink.checkpointPending) return;
    const events = this.eventsUpTo > this.persisted && tracker.safeLsn >= this.eventsUpTo;
    const due = this.lastCheckpointAsked + (events ? EVENT_CHECKPOINT_MS : this.settings.statusIntervalMs);
    const wait = due - Date.now();
    if (wait > 0) {
      if (this.checkpointTimer !== null && this.checkpointDue <= due) return;
      if (this.checkpointTimer !== null) clearTimeout(this.checkpointTimer);
      this.checkpointDue = due;
      this.checkpointTimer = setTimeout(() => {
        this.checkpointTimer = null;
        this.maybeCheckpoint();
      }, wait);
      return;
    }
    this.lastCheckpointAsked = Date.now();
    sink.requestCheckpoint();
  }
}
