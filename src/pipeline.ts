import type { Config } from "./config.js";
import { AckTracker } from "./checkpoint/tracker.js";
import { formatLsn, maxLsn, type Lsn } from "./lsn.js";
import { comparePositions, formatPosition, type Checkpoint, type Position } from "./checkpoint/position.js";
import { ReplayFilter } from "./checkpoint/replay.js";
import { positionOf } from "./sink/read-back.js";
import { assessGap, gapMessage, type GapVerdict, type SlotFacts } from "./checkpoint/gap.js";
import { decodePgoutput } from "./decode/pgoutput.js";
import { TransactionDecoder } from "./decode/transactions.js";
import { AirflowMapper, runCacheSize, type TxContext } from "./airflow/mapper.js";
import { KafkaSink } from "./sink/kafka.js";
import { RECORD_OVERHEAD_BYTES, recordBytes } from "./sink/batch.js";
import { TopicRouter } from "./sink/routing.js";
import { explainPublicationDropped, prepareSource } from "./source/preflight.js";
import { createSlot, readSlotNow, readSourceIdentity, type SourceReady } from "./source/slot.js";
import { withSourceClient } from "./source/connection.js";
import { dagIdsWithRuns, readRunsUnderWay } from "./source/airflow-rows.js";
import { runContexts } from "./airflow/run-context.js";
import { ReplicationStream } from "./source/replication.js";
import { MessageTooLargeError, SlotGapError, coerceError } from "./errors.js";
import type { StreamEvent } from "./airflow/events.js";
import type { Logger } from "./log.js";

/**
 * One streaming session: source → decode → airflow model → sink → checkpoint, wired in that order.
 * It ends when `stop()` is called (resolves) or on the first error anywhere (rejects); the
 * supervisor in main.ts then starts a new session from the slot's confirmed position. Nothing is
 * carried over between sessions: the slot re-delivers every transaction not yet acknowledged, and
 * the mapper's state cache must not be newer than what is replayed, or a re-delivered transition
 * would look like churn and be dropped.
 *
 * Gap detection (both modes unless EVENTSTREAM_GAP_DETECTION=false; src/checkpoint/gap.ts): the
 * position reported to PostgreSQL is the tracker's safe LSN, but never more than the acked_lsn of
 * a checkpoint durably in Kafka (`persisted`). A checkpoint rides in every produce request (see
 * KafkaSink); when the safe LSN has moved past the last one with no events to carry another
 * (keepalives while Airflow is quiet, the last transaction of a burst) one is asked for alone:
 * within EVENT_CHECKPOINT_MS when that covers a transaction with events (what a crash would
 * re-deliver), else at most once per status interval, so the slot still follows the WAL, that much
 * later. A start checks the slot against the checkpoint before anything is created or published.
 *
 * Replay (a start re-reads every transaction the slot has not confirmed): changes whose events are
 * in Kafka already are mapped but not published again (ReplayFilter). Exactly-once knows that from
 * its checkpoint; at-least-once from the tail of the event topics, read back at start
 * (KafkaSink.readBack): per partition the highest position it holds. Both modes read that tail
 * (exactly-once what is committed) for the events, whose rows' states seed the mapper.
 * Only events from before the slot's confirmed position seed it (those are not replayed), so the
 * mapper's state for a row is, at every replayed change, the state after that row's previous
 * change: exactly what the first publication saw when it had seen the row. A seed from a replayed
 * event would be newer than the changes replayed before it, and turn a real transition into churn.
 */
/** How soon after Kafka acknowledges a transaction with events a checkpoint covering it is asked for (when no batch carries one first). */
const EVENT_CHECKPOINT_MS = 100;

export class Session {
  private stream: ReplicationStream | null = null;
  private sink: KafkaSink | null = null;
  private tracker: AckTracker | null = null;
  private stopping = false;
  private failure: ((e: Error) => void) | null = null;
  /**
   * The session failed: nothing more is handed to the sink. Events of messages after the one that
   * failed would reach Kafka ahead of it, and after the restart a consumer skipping positions not
   * greater than the last it saw would skip the failed one when it comes.
   */
  private halted = false;
  private lastReported = -1n;
  private reportScheduled = false;
  private deadLettered = 0;
  /** Gap detection: the highest acked_lsn durably in Kafka; PostgreSQL is never told more. null: no gate. */
  private persisted: Lsn | null = null;
  private lastCheckpointAsked = 0;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private checkpointDue = 0;
  /** The end LSN of the last transaction that published events: a checkpoint past it is asked for soon (EVENT_CHECKPOINT_MS). */
  private eventsUpTo: Lsn = 0n;
  /** Set once the stream is up; the supervisor uses it to reset its backoff. */
  streamingSince = 0;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {}

  async run(): Promise<void> {
    const { cfg, log } = this;
    const sourceLog = log.child({ module: "source" });
    const ready = await prepareSource(cfg, sourceLog);
    if (this.stopping) return;
    // An invalidated slot can never stream again (START_REPLICATION fails on it): refused before
    // Kafka is even asked, with or without a checkpoint.
    this.refuseGap(null, facts(cfg.slot, ready, false));
    const router = new TopicRouter(cfg.topic, cfg.topicTemplate);
    const failed = new Promise<never>((_, reject) => {
      this.failure = (e) => {
        this.halted = true;
        reject(e);
      };
    });
    failed.catch(() => undefined);

    const sink = (this.sink = new KafkaSink(cfg, log.child({ module: "sink" }), {
      acked: (seq) => {
        this.tracker!.ackedUpTo(seq);
        this.scheduleReport();
        this.maybeResume();
      },
      failed: (e) => this.failure?.(e),
      ackedLsnFor: (seq) => this.tracker!.safeLsnAfter(seq),
      checkpointed: (lsn) => {
        if (this.persisted !== null) this.persisted = maxLsn(this.persisted, lsn);
        this.scheduleReport();
      },
    }));
    try {
      await sink.connect(cfg.topicTemplate === null ? cfg.topic : null);
      if (this.stopping) return;
      const exactlyOnce = cfg.delivery === "exactly-once";
      const identity = cfg.gapDetection ? await withSourceClient(cfg, readSourceIdentity) : null;

      // A missing slot is created only when no checkpoint says this daemon streamed from one:
      // created first, the next start would find a slot and carry on past the gap.
      let slot = ready.slot;
      const created = slot === null;
      if (slot === null) {
        if (identity !== null) this.refuseGap(await sink.readCheckpoint(identity), facts(cfg.slot, ready, false));
        if (this.stopping) return;
        slot = await createSlot(cfg, sourceLog);
      }
      const tracker = (this.tracker = new AckTracker(slot.confirmedFlushLsn));
      if (identity !== null) this.persisted = slot.confirmedFlushLsn;

      const decoder = new TransactionDecoder();
      const mapper = new AirflowMapper(
        {
          schema: cfg.airflowSchema,
          cacheSize: cfg.stateCacheSize,
          xcomKey: cfg.xcomKey,
          notificationRawMaxBytes: cfg.notificationRawMaxBytes,
          replicaIdentity: cfg.replicaIdentity,
        },
        log.child({ module: "airflow" }),
      );
      const runs = runContexts(await withSourceClient(cfg, (c) => readRunsUnderWay(c, cfg.airflowSchema, runCacheSize(cfg.stateCacheSize))));
      for (const r of runs) mapper.seedRunContext(r.dagId, r.runId, r.ctx);
      log.debug({ runs: runs.length }, "read the context of runs under way");
      const stream = (this.stream = new ReplicationStream(cfg, log.child({ module: "replication" })));
      let tx: TxContext | null = null;
      const maxEvents = cfg.maxInflightEvents;
      const maxBytes = cfg.maxInflightBytes;
      /** Changes whose events are in Kafka already (see ReplayFilter): mapped (the mapper's state must stay exact) but not published. */
      let replay: ReplayFilter | null = null;
      let replayEnd: Position | null = null;
      let skipped = 0;
      let txPublished = false;

      const onData = (payload: Buffer): void => {
        if (this.halted) return;
        const ev = decoder.push(decodePgoutput(payload));
        if (ev === null) return;
        switch (ev.kind) {
          case "begin":
            tx = { xid: ev.xid, commitTime: ev.commitTime };
            txPublished = false;
            return;
          case "change": {
            const event = mapper.map(ev, tx!);
            if (event === null) return;
            const value = JSON.stringify(event);
            const route = router.route(event);
            const key = route.key;
            // Kafka's limit is on the record's bytes. A UTF-16 unit is at most 3 bytes of UTF-8, so
            // most events skip the exact count.
            const oversized = (value.length + (key?.length ?? 0)) * 3 + RECORD_OVERHEAD_BYTES > cfg.maxMessageBytes && recordBytes(value, key) > cfg.maxMessageBytes;
            if (replay !== null) {
              const pos = { commitLsn: ev.commitLsn, index: ev.index };
              const topic = oversized && cfg.deadLetterTopic !== null ? cfg.deadLetterTopic : route.topic;
              if (replay.covers(topic, key, pos)) {
                skipped++;
                return;
              }
              // Positions only grow along the stream: past the highest one Kafka holds, nothing is covered.
              if (replayEnd === null || comparePositions(pos, replayEnd) > 0) {
                log.info(
                  { skipped, inKafkaUpTo: replayEnd && formatPosition(replayEnd), first: event.source.position },
                  exactlyOnce ? "exactly-once: past the checkpoint; publishing" : "replay: past what Kafka holds; publishing everything from here",
                );
                replay = null;
              }
            }
            txPublished = true;
            if (oversized) {
              this.oversized(event, value, key, ev.commitLsn, ev.index);
            } else {
              sink.push({ ...route, value, seq: tracker.next(), commitLsn: ev.commitLsn, index: ev.index });
            }
            // Backpressure: stop reading PostgreSQL until Kafka catches up (see maybeResume).
            if (tracker.inflight >= maxEvents || sink.inflightBytes >= maxBytes) stream.pause();
            return;
          }
          case "commit":
            tx = null;
            if (txPublished) this.eventsUpTo = ev.endLsn;
            tracker.commit(ev.endLsn);
            this.scheduleReport();
            return;
        }
      };
      const onKeepalive = (walEnd: Lsn, replyRequested: boolean): void => {
        if (tx === null) tracker.keepalive(walEnd);
        if (replyRequested) this.report();
        else this.scheduleReport();
      };

      // Status updates also go out on a timer: while reading is paused (for backpressure, or while
      // the checkpoint is read) no keepalive is read, and the server drops a connection that stays
      // silent past wal_sender_timeout.
      let timer: NodeJS.Timeout | undefined;
      try {
        if (identity === null && exactlyOnce) {
          await stream.start({ onData, onKeepalive });
          timer = setInterval(() => this.report(), cfg.statusIntervalMs);
        } else {
          // The checkpoint is read, and at-least-once reads back the event topics, only once the
          // slot is ours (START_REPLICATION succeeded), and the slot's position is final:
          // exactly-once fences other producers of this slot while reading, and fencing first would
          // let a standby daemon, retrying every second, fence the active one again and again. Until
          // the slot has been checked against it nothing is published: the stream is paused, and
          // what had already arrived waits here, in order (copied: the protocol parser may reuse
          // its buffer).
          let held: ({ payload: Buffer } | { walEnd: Lsn })[] | null = [];
          await stream.start({
            onData: (payload) => {
              if (held === null) return onData(payload);
              held.push({ payload: Buffer.from(payload) });
              stream.pause();
            },
            onKeepalive: (walEnd, replyRequested) => {
              if (held === null) return onKeepalive(walEnd, replyRequested);
              held.push({ walEnd });
              // The reply carries the position confirmed so far, which nothing here changes.
              if (replyRequested) this.report();
            },
          });
          stream.pause();
          timer = setInterval(() => this.tick(), cfg.statusIntervalMs);
          const reading = identity === null ? Promise.resolve(null) : sink.readCheckpoint(identity);
          reading.catch(() => undefined);
          await Promise.race([reading, stream.done, failed]);
          if (this.stopping) return;
          const cp = await reading;
          // Read after the checkpoint, and while the slot is this session's, so nothing else can
          // move it; every legitimate checkpoint is behind the WAL by then.
          const now = await withSourceClient(cfg, (c) => readSlotNow(c, cfg));
          if (identity !== null) {
            const verdict = this.refuseGap(cp, facts(cfg.slot, now, created));
            log.info(
              { slot: cfg.slot, checkpointAckedLsn: cp?.ackedLsn ? formatLsn(cp.ackedLsn) : null, slotConfirmedFlushLsn: now.slot ? formatLsn(now.slot.confirmedFlushLsn) : null, basis: verdict.basis },
              "no gap between the checkpoint and the slot",
            );
            if (cp?.ackedLsn !== null && cp?.ackedLsn !== undefined) {
              if (now.walLsn > 0n && cp.ackedLsn > now.walLsn) {
                // The server's WAL went back (a restore to an earlier point): that acked_lsn belongs
                // to a history the server left, so it bounds nothing any more.
                log.warn({ checkpointAckedLsn: formatLsn(cp.ackedLsn), wal: formatLsn(now.walLsn) }, "the checkpoint's acked_lsn is ahead of the server's WAL (restored to an earlier point?); starting the acknowledged position over from the slot");
                sink.setAckedFloor(slot.confirmedFlushLsn);
              } else {
                // Durable in Kafka already, and every later checkpoint stays at or above it (setAckedFloor).
                this.persisted = maxLsn(this.persisted!, cp.ackedLsn);
              }
            }
            // The evidence from the first moment: without a checkpoint, a slot dropped before the
            // safe position ever moved (a quiet first run) would go unnoticed. Also brings a
            // checkpoint of an earlier version (no acked_lsn) up to date. Written before streaming,
            // so the first events do not wait behind it (and get batched with the ones after them);
            // it counts as the first checkpoint asked for.
            if (cp === null || cp.ackedLsn === null) {
              this.lastCheckpointAsked = Date.now();
              await Promise.race([sink.checkpointNow(), stream.done, failed]);
              if (this.stopping) return;
            }
          }
          // Both modes read back the tail of the event topics, to seed the mapper; exactly-once after
          // readCheckpoint() fenced its transactional id, so no transaction of ours is open in them.
          const readingBack = this.readBack(sink, mapper, now.slot?.confirmedFlushLsn ?? slot.confirmedFlushLsn, now.walLsn);
          readingBack.catch(() => undefined);
          await Promise.race([readingBack, stream.done, failed]);
          if (this.stopping) return;
          const heads = await readingBack;
          if (exactlyOnce) {
            // The checkpoint covers every partition at once; the heads say no more (every committed
            // event is at or before it).
            const floor = usableCheckpoint(cp, now.walLsn, log);
            if (floor !== null) replay = new ReplayFilter(floor, new Map());
          } else if (heads.size > 0) {
            replay = new ReplayFilter(null, heads);
          }
          replayEnd = replay?.last() ?? null;
          const queued = held;
          held = null;
          for (const m of queued) {
            if ("payload" in m) onData(m.payload);
            else onKeepalive(m.walEnd, false);
          }
          this.maybeResume();
        }
        this.streamingSince = Date.now();
        log.info({ slot: cfg.slot, resumeFrom: formatLsn(slot.confirmedFlushLsn) }, "streaming");
        await Promise.race([stream.done, failed]);
      } catch (e: unknown) {
        await this.checkpointAfterFailure();
        throw (await explainPublicationDropped(e, cfg)) ?? e;
      } finally {
        clearInterval(timer);
      }
    } finally {
      await this.teardown();
    }
  }

  /**
   * Graceful stop: stop reading, let Kafka acknowledge what is in flight (bounded), persist a
   * checkpoint covering it (gap detection), report the final safe position, close. Events after
   * that position are re-delivered by the next start.
   */
  async stop(timeoutMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const { stream, sink, tracker } = this;
    stream?.pause();
    if (sink) {
      const deadline = Date.now() + timeoutMs;
      const late = await withDeadline(sink.idle(), deadline);
      if (late) this.log.warn({ timeoutMs }, "Kafka did not acknowledge everything before the shutdown timeout; the rest is re-delivered on the next start");
      else if (tracker && this.persisted !== null && tracker.safeLsn > this.persisted && (await withDeadline(sink.checkpointNow(), deadline))) {
        this.log.warn({ timeoutMs }, "the last checkpoint was not written before the shutdown timeout; the unacknowledged tail is re-delivered on the next start");
      }
    }
    this.report();
    await stream?.stop();
  }

  /**
   * At-least-once, when the session fails while PostgreSQL's connection is still up (a Kafka
   * topic refused, a produce that ran out of retries): what Kafka did acknowledge before the
   * failure is checkpointed and reported, so the next start does not publish it again. Bounded:
   * when Kafka itself is the problem, the checkpoint cannot be written either.
   */
  private async checkpointAfterFailure(): Promise<void> {
    const { stream, sink, tracker } = this;
    if (!stream?.isOpen || !sink || !tracker || this.persisted === null || this.stopping || this.cfg.delivery === "exactly-once") return;
    if (tracker.safeLsn > this.persisted) await withDeadline(sink.checkpointNow(), Date.now() + Math.min(5_000, this.cfg.shutdownTimeoutMs));
    this.report();
  }

  /**
   * A start, in both modes: reads back the tail of the event topics (KafkaSink.readBack; exactly-
   * once reads what is committed, see read-back.ts). Events from before `resumeFrom` (the slot's
   * confirmed position: the replay starts there, and PostgreSQL re-sends only transactions whose
   * commit record is at or after it) seed the mapper; exactly-once's checkpoint may be past it,
   * and what lies between is replayed and mapped in order, so the seed is never newer than what
   * is replayed. Returns the highest position per partition (at-least-once's filter). Positions
   * above the server's WAL belong to a history the server left (a restore to an earlier point):
   * the heads then bound nothing (an empty map).
   */
  private async readBack(sink: KafkaSink, mapper: AirflowMapper, resumeFrom: Lsn, walLsn: Lsn): Promise<Map<string, (Position | null)[]>> {
    let seeded = 0;
    // A topic per DAG: the DAGs Airflow has runs of name every topic an event can have gone to
    // (a template may have no fixed part, so topic names alone cannot tell).
    const dagIds = this.cfg.topicTemplate === null ? [] : await withSourceClient(this.cfg, (c) => dagIdsWithRuns(c, this.cfg.airflowSchema));
    const res = await sink.readBack(this.cfg.restartReadEvents, dagIds, (value) => {
      const pos = positionOf(value);
      if (pos === null || pos.commitLsn >= resumeFrom) return;
      mapper.seed(value);
      seeded++;
    });
    let heads = res.heads;
    let highest: Position | null = null;
    for (const parts of heads.values()) for (const h of parts) if (h !== null && (highest === null || comparePositions(h, highest) > 0)) highest = h;
    if (highest !== null && walLsn > 0n && highest.commitLsn > walLsn) {
      this.log.warn(
        { inKafkaUpTo: formatPosition(highest), wal: formatLsn(walLsn) },
        "the event topics hold positions ahead of the server's WAL (restored to an earlier point?); not skipping anything: positions of new events may be lower than ones already published",
      );
      heads = new Map();
    }
    this.log.info(
      {
        topics: res.heads.size,
        partitions: [...res.heads.values()].reduce((n, p) => n + p.length, 0),
        recordsRead: res.records,
        seeded,
        readMs: res.ms,
        resumeFrom: formatLsn(resumeFrom),
        inKafkaUpTo: highest && formatPosition(highest),
      },
      this.cfg.delivery === "exactly-once"
        ? "read back the event topics (read_committed): rows named there start with their last published state"
        : "read back the event topics: replayed changes already in Kafka are not published again",
    );
    return heads;
  }

  /** Throws SlotGapError when the checkpoint and the slot disagree (see src/checkpoint/gap.ts). */
  private refuseGap(cp: Checkpoint | null, slot: SlotFacts): Extract<GapVerdict, { kind: "ok" }> {
    const v = assessGap(cp, slot);
    if (v.kind === "ok") return v;
    const message = gapMessage(v, cp, slot, { slot: this.cfg.slot, checkpointTopic: this.cfg.gapDetection ? this.cfg.checkpointTopic : null, createSlot: this.cfg.createSlot });
    this.log.error({ slot: this.cfg.slot, reason: v.reason, gapFrom: v.from === null ? null : formatLsn(v.from), gapTo: formatLsn(v.to) }, "gap in the event stream: events were lost; stopping");
    throw new SlotGapError(message);
  }

  /**
   * An event larger than Kafka will take is never dropped silently: without a dead-letter topic the
   * session stops (nothing after it is acknowledged) with an error naming the row; with one, a
   * summary goes there in the event's place, in order, and is counted.
   */
  private oversized(event: StreamEvent, value: string, key: string | null, commitLsn: Lsn, index: number): void {
    const bytes = recordBytes(value, key);
    const where = {
      type: event.type,
      dag_id: "dag_id" in event ? event.dag_id : null,
      task_id: "task_id" in event ? event.task_id : null,
      run_id: "run_id" in event ? event.run_id : null,
      position: event.source.position,
    };
    const dlq = this.cfg.deadLetterTopic;
    if (dlq === null) {
      this.halted = true;
      throw new MessageTooLargeError(
        `the ${where.type} event of dag_id=${where.dag_id} task_id=${where.task_id} run_id=${where.run_id} (position ${where.position}) is ${bytes} bytes, over EVENTSTREAM_MAX_MESSAGE_BYTES=${this.cfg.maxMessageBytes}. Raise max.message.bytes on the topic and EVENTSTREAM_MAX_MESSAGE_BYTES, or set EVENTSTREAM_DEAD_LETTER_TOPIC to divert such events; nothing after it has been acknowledged`,
      );
    }
    this.deadLettered++;
    this.log.warn({ ...where, bytes, topic: dlq, dead_lettered_total: this.deadLettered }, "event over the size limit sent to the dead-letter topic");
    const summary = JSON.stringify({ reason: "message_too_large", bytes, limit: this.cfg.maxMessageBytes, ...where, source: event.source, head: value.slice(0, 1024) });
    this.sink!.push({ topic: dlq, key: where.dag_id, value: summary, seq: this.tracker!.next(), commitLsn, index });
  }

  private maybeResume(): void {
    const { stream, tracker, sink } = this;
    if (!stream?.isPaused || !tracker || !sink || this.stopping) return;
    // Resume at half the caps, so reading does not flap on every acknowledgement.
    if (tracker.inflight <= this.cfg.maxInflightEvents / 2 && sink.inflightBytes <= this.cfg.maxInflightBytes / 2) stream.resume();
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

  /** The status timer (gap detection): a checkpoint when one is due, and a status update. */
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
    if (!sink || !tracker || this.persisted === null || this.stopping) return;
    if (tracker.safeLsn <= this.persisted || sink.checkpointPending) return;
    const events = this.eventsUpTo > this.persisted && tracker.safeLsn >= this.eventsUpTo;
    const due = this.lastCheckpointAsked + (events ? EVENT_CHECKPOINT_MS : this.cfg.statusIntervalMs);
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

  private report(onlyIfAdvanced = false): void {
    const { stream, tracker } = this;
    if (!stream || !tracker) return;
    // Never past a durable checkpoint's acked_lsn: that is what makes a moved slot detectable.
    const lsn = this.persisted === null || tracker.safeLsn < this.persisted ? tracker.safeLsn : this.persisted;
    if (onlyIfAdvanced && lsn <= this.lastReported) return;
    this.lastReported = lsn;
    try {
      stream.sendStatus(lsn);
    } catch (e: unknown) {
      this.failure?.(coerceError(e));
    }
  }

  private async teardown(): Promise<void> {
    if (this.checkpointTimer) clearTimeout(this.checkpointTimer);
    this.checkpointTimer = null;
    await this.stream?.stop();
    await this.sink?.close();
  }
}

/** The slot facts for assessGap. */
function facts(slot: string, ready: SourceReady, createdNow: boolean): SlotFacts {
  return { slot, state: ready.slot && { ...ready.slot, createdNow }, walLsn: ready.walLsn, maxSlotWalKeepSize: ready.maxSlotWalKeepSize };
}

/** Awaits `p` until the deadline; true when the deadline passed first. */
async function withDeadline(p: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([p.then(() => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The checkpoint's position, when it may be used to skip. Positions compare only within one WAL
 * history: a checkpoint ahead of the server's WAL means the database's WAL went back (a restore
 * to an earlier point, same cluster identity). Skipping by it would drop new transactions, so it
 * is not used, and the log says why. (Another cluster's checkpoint is refused earlier, by system
 * identifier; a slot created after the checkpoint was written is a gap, refused before this.)
 */
function usableCheckpoint(cp: Checkpoint | null, walLsn: Lsn, log: Logger): Position | null {
  if (cp === null || cp.position === null) return null;
  if (walLsn > 0n && cp.position.commitLsn > walLsn) {
    log.warn(
      { checkpoint: formatPosition(cp.position), wal: formatLsn(walLsn) },
      "exactly-once: the checkpoint is ahead of the server's WAL (restored to an earlier point?); not skipping anything: positions of new events may be lower than ones already published",
    );
    return null;
  }
  return cp.position;
}
