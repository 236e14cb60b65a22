import type { Config } from "./config.js";
import { AckTracker } from "./checkpoint/tracker.js";
import { formatLsn } from "./checkpoint/lsn.js";
import { formatPosition, isAtOrBefore, type Checkpoint, type Position } from "./checkpoint/position.js";
import { decodePgoutput } from "./decode/pgoutput.js";
import { TransactionDecoder } from "./decode/transactions.js";
import { AirflowMapper, type TxContext } from "./airflow/mapper.js";
import { KafkaSink } from "./sink/kafka.js";
import { TopicRouter } from "./sink/routing.js";
import { prepareSource, readSourceIdentity, readWalLsn, withSourceClient, type SourceReady } from "./source/setup.js";
import { loadRunContexts } from "./airflow/run-context.js";
import { ReplicationStream } from "./source/replication.js";
import { MessageTooLargeError, coerceError } from "./errors.js";
import type { StreamEvent } from "./airflow/events.js";
import type { Logger } from "./log.js";
import type { Lsn } from "./decode/types.js";

/**
 * One streaming session: source → decode → airflow model → sink → checkpoint, wired in that order.
 * It ends when `stop()` is called (resolves) or on the first error anywhere (rejects); the
 * supervisor in main.ts then starts a new session from the slot's confirmed position. Nothing is
 * carried over between sessions: the slot re-delivers every transaction not yet acknowledged, and
 * the mapper's state cache must not be newer than what is replayed, or a re-delivered transition
 * would look like churn and be dropped.
 */
export class Session {
  private stream: ReplicationStream | null = null;
  private sink: KafkaSink | null = null;
  private tracker: AckTracker | null = null;
  private stopping = false;
  private failure: ((e: Error) => void) | null = null;
  private lastReported = -1n;
  private reportScheduled = false;
  private deadLettered = 0;
  /** Set once the stream is up; the supervisor uses it to reset its backoff. */
  streamingSince = 0;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {}

  async run(): Promise<void> {
    const { cfg, log } = this;
    const ready = await prepareSource(cfg, log.child({ module: "source" }));
    if (this.stopping) return;
    const tracker = (this.tracker = new AckTracker(ready.confirmedFlushLsn));
    const router = new TopicRouter(cfg.topic, cfg.topicTemplate);
    const failed = new Promise<never>((_, reject) => {
      this.failure = reject;
    });
    failed.catch(() => undefined);

    const sink = (this.sink = new KafkaSink(cfg, log.child({ module: "sink" }), {
      acked: (seq) => {
        tracker.ackedUpTo(seq);
        this.scheduleReport();
        this.maybeResume();
      },
      failed: (e) => this.failure?.(e),
    }));
    try {
      await sink.connect(cfg.topicTemplate === null ? cfg.topic : null);
      if (this.stopping) return;

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
      const runs = await withSourceClient(cfg, (c) => loadRunContexts(c, cfg.airflowSchema, Math.max(1000, Math.ceil(cfg.stateCacheSize / 10))));
      for (const r of runs) mapper.seedRunContext(r.dagId, r.runId, r.ctx);
      log.debug({ runs: runs.length }, "read the context of runs under way");
      const exactlyOnce = cfg.delivery === "exactly-once";
      const source = exactlyOnce ? await withSourceClient(cfg, readSourceIdentity) : null;
      const stream = (this.stream = new ReplicationStream(cfg, log.child({ module: "replication" })));
      let tx: TxContext | null = null;
      const maxEvents = cfg.maxInflightEvents;
      const maxBytes = cfg.maxInflightBytes;
      /** Exactly-once: changes at or before this position are in Kafka already; mapped (the mapper's state must stay exact) but not published. */
      let skipUpTo: Position | null = null;
      let skipped = 0;

      const onData = (payload: Buffer): void => {
        const ev = decoder.push(decodePgoutput(payload));
        if (ev === null) return;
        switch (ev.kind) {
          case "begin":
            tx = { xid: ev.xid, commitTime: ev.commitTime };
            return;
          case "change": {
            const event = mapper.map(ev, tx!);
            if (event === null) return;
            if (skipUpTo !== null) {
              if (isAtOrBefore(ev.commitLsn, ev.index, skipUpTo)) {
                skipped++;
                return;
              }
              // Positions only grow along the stream: nothing after this change is covered.
              log.info({ skipped, checkpoint: formatPosition(skipUpTo), first: event.source.position }, "exactly-once: past the checkpoint; publishing");
              skipUpTo = null;
            }
            const value = JSON.stringify(event);
            // value.length counts UTF-16 units: at most 3 bytes each, so most events skip the exact count.
            if (value.length * 3 > cfg.maxMessageBytes && Buffer.byteLength(value) > cfg.maxMessageBytes) {
              this.oversized(event, value, ev.commitLsn, ev.index);
            } else {
              sink.push({ topic: router.topicFor(event.dag_id), key: event.dag_id, value, seq: tracker.next(), commitLsn: ev.commitLsn, index: ev.index });
            }
            // Backpressure: stop reading PostgreSQL until Kafka catches up (see maybeResume).
            if (tracker.inflight >= maxEvents || sink.inflightBytes >= maxBytes) stream.pause();
            return;
          }
          case "commit":
            tx = null;
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
      // exactly-once reads its checkpoint) no keepalive is read, and the server drops a connection
      // that stays silent past wal_sender_timeout.
      let timer: NodeJS.Timeout | undefined;
      try {
        if (!exactlyOnce) {
          await stream.start({ onData, onKeepalive });
          timer = setInterval(() => this.report(), cfg.statusIntervalMs);
        } else {
          // Exactly-once starts only once the slot is ours (START_REPLICATION succeeded): fencing
          // first would let a standby daemon, retrying every second, fence the active one again and
          // again. Until the checkpoint is read the stream is paused; what had already arrived waits
          // here, in order (copied: the protocol parser may reuse its buffer).
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
          timer = setInterval(() => this.report(), cfg.statusIntervalMs);
          const begun = sink.beginExactlyOnce(source!);
          begun.catch(() => undefined);
          await Promise.race([begun, stream.done, failed]);
          if (this.stopping) return;
          // Read after the checkpoint: every legitimate checkpoint is behind the WAL by then.
          const walLsn = await withSourceClient(cfg, readWalLsn);
          skipUpTo = usableCheckpoint(await begun, walLsn, ready, log);
          const queued = held;
          held = null;
          for (const m of queued) {
            if ("payload" in m) onData(m.payload);
            else onKeepalive(m.walEnd, false);
          }
          this.maybeResume();
        }
        this.streamingSince = Date.now();
        log.info({ slot: cfg.slot, resumeFrom: formatLsn(ready.confirmedFlushLsn) }, "streaming");
        await Promise.race([stream.done, failed]);
      } finally {
        clearInterval(timer);
      }
    } finally {
      await this.teardown();
    }
  }

  /**
   * Graceful stop: stop reading, let Kafka acknowledge what is in flight (bounded), report the
   * final safe position, close. Events after that position are re-delivered by the next start.
   */
  async stop(timeoutMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const { stream, sink } = this;
    stream?.pause();
    if (sink) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      });
      const late = await Promise.race([sink.idle().then(() => false), timedOut]);
      clearTimeout(timer);
      if (late) this.log.warn({ timeoutMs }, "Kafka did not acknowledge everything before the shutdown timeout; the rest is re-delivered on the next start");
    }
    this.report();
    await stream?.stop();
  }

  /**
   * An event larger than Kafka will take is never dropped silently: without a dead-letter topic the
   * session stops (nothing after it is acknowledged) with an error naming the row; with one, a
   * summary goes there in the event's place, in order, and is counted.
   */
  private oversized(event: StreamEvent, value: string, commitLsn: Lsn, index: number): void {
    const bytes = Buffer.byteLength(value);
    const where = {
      type: event.type,
      dag_id: event.dag_id,
      task_id: "task_id" in event ? event.task_id : null,
      run_id: event.run_id,
      position: event.source.position,
    };
    const dlq = this.cfg.deadLetterTopic;
    if (dlq === null) {
      throw new MessageTooLargeError(
        `the ${where.type} event of dag_id=${where.dag_id} task_id=${where.task_id} run_id=${where.run_id} (position ${where.position}) is ${bytes} bytes, over EVENTSTREAM_MAX_MESSAGE_BYTES=${this.cfg.maxMessageBytes}. Raise max.message.bytes on the topic and EVENTSTREAM_MAX_MESSAGE_BYTES, or set EVENTSTREAM_DEAD_LETTER_TOPIC to divert such events; nothing after it has been acknowledged`,
      );
    }
    this.deadLettered++;
    this.log.warn({ ...where, bytes, topic: dlq, dead_lettered_total: this.deadLettered }, "event over the size limit sent to the dead-letter topic");
    const summary = JSON.stringify({ reason: "message_too_large", bytes, limit: this.cfg.maxMessageBytes, ...where, source: event.source, head: value.slice(0, 1024) });
    this.sink!.push({ topic: dlq, key: event.dag_id, value: summary, seq: this.tracker!.next(), commitLsn, index });
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
      this.report(true);
    });
  }

  private report(onlyIfAdvanced = false): void {
    const { stream, tracker } = this;
    if (!stream || !tracker) return;
    const lsn = tracker.safeLsn;
    if (onlyIfAdvanced && lsn <= this.lastReported) return;
    this.lastReported = lsn;
    try {
      stream.sendStatus(lsn);
    } catch (e: unknown) {
      this.failure?.(coerceError(e));
    }
  }

  private async teardown(): Promise<void> {
    await this.stream?.stop();
    await this.sink?.close();
  }
}

/**
 * The checkpoint's position, when it may be used to skip. Positions compare only within one WAL
 * history: a checkpoint ahead of the server's WAL, or found when the slot was just created (it
 * starts at the current WAL position, after every legitimate checkpoint), means the database's
 * WAL went back (a restore to an earlier point, same cluster identity). Skipping by it would drop
 * new transactions, so it is not used, and the log says why. (Another cluster's checkpoint is
 * refused earlier, by system identifier.)
 */
function usableCheckpoint(cp: Checkpoint | null, walLsn: Lsn, ready: SourceReady, log: Logger): Position | null {
  if (cp === null) return null;
  const where = { checkpoint: formatPosition(cp.position), wal: formatLsn(walLsn), slotCreated: ready.slotCreated };
  if (walLsn > 0n && cp.position.commitLsn > walLsn) {
    log.warn(where, "exactly-once: the checkpoint is ahead of the server's WAL (restored to an earlier point?); not skipping anything: positions of new events may be lower than ones already published");
    return null;
  }
  if (ready.slotCreated) {
    log.info(where, "exactly-once: the slot was just created; it starts after the checkpoint, nothing to skip");
    return null;
  }
  return cp.position;
}
