import type { Config } from "./config.js";
import type { AckRule } from "./checkpoint/ack.js";
import { assessGap, gapMessage, type GapVerdict, type SlotFacts } from "./checkpoint/gap.js";
import { formatLsn } from "./lsn.js";
import { type Checkpoint, type SourceIdentity } from "./checkpoint/position.js";
import { comparePositions, formatPosition, type Position } from "./lsn.js";
import { ReplayFilter } from "./checkpoint/replay.js";
import type { Lsn } from "./lsn.js";
import type { AirflowMapper } from "./airflow/mapper.js";
import { positionOf } from "./sink/read-back.js";
import type { SlotState, SourceReady } from "./source/slot.js";
import type { ReplicationSource, Sink, SourceStream } from "./stages.js";
import { SlotGapError } from "./errors.js";
import { MessageHold } from "./hold.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Logger } from "./log.js";
import type { Loop } from "./session-loop.js";

/** The slot a session streams from, once Kafka is connected. */
export interface OpenSlot {
  /** The source's identity for the gap check; null: gap detection off. */
  identity: SourceIdentity | null;
  slot: SlotState;
  /** The slot was created by this start. */
  created: boolean;
}

/**
 * Connects the sink, reads the source's identity (gap detection), and creates a missing slot. A
 * missing slot is created only when no checkpoint says this daemon streamed from one: created
 * first, the next start would find a slot and carry on past the gap. null: stop() came first.
 */
export async function openSlot(
  cfg: Config,
  log: Logger,
  { source, sink, life }: { source: ReplicationSource; sink: Sink; life: Lifecycle },
  ready: SourceReady,
): Promise<OpenSlot | null> {
  await sink.connect(cfg.topicTemplate === null ? cfg.topic : null);
  if (life.stopping) return null;
  const identity = cfg.gapDetection ? await source.readIdentity() : null;
  let slot = ready.slot;
  const created = slot === null;
  if (slot === null) {
    if (identity !== null) refuseGap(cfg, log, await sink.readCheckpoint(identity), facts(cfg.slot, ready, false));
    if (life.stopping) return null;
    slot = await source.createSlot();
  }
  return { identity, slot, created };
}

/** What the start-up protocol works with: everything built, nothing streaming yet. */
export interface StartParts extends OpenSlot {
  source: ReplicationSource;
  sink: Sink;
  stream: SourceStream;
  ack: AckRule;
  loop: Loop;
  /** The mapper, or the model thread's seeds (src/loop/thread.ts). */
  mapper: Pick<AirflowMapper, "seed">;
  life: Lifecycle;
}

/**
 * The start-up protocol: starts the stream and, unless exactly-once runs without gap detection,
 * holds what arrives while the checkpoint is read, the slot checked against it, the first
 * checkpoint written and the event topics read back; then sets the point up to which replayed
 * changes are not published again, and releases what was held.
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
export class Startup {
  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly p: StartParts,
  ) {}

  /** Resolves true once the stream is up and every held message handed on; false when stop() came first. */
  async run(): Promise<boolean> {
    const { stream, ack, loop, identity } = this.p;
    if (identity === null && this.cfg.delivery === "exactly-once") {
      await stream.start(loop);
      ack.startStatusTimer();
      return true;
    }
    // The checkpoint is read, and at-least-once reads back the event topics, only once the slot is
    // ours (START_REPLICATION succeeded), and the slot's position is final: exactly-once fences
    // other producers of this slot while reading, and fencing first would let a standby daemon,
    // retrying every second, fence the active one again and again. Until the slot has been checked
    // against it nothing is published (MessageHold).
    const hold = new MessageHold(loop, stream, () => ack.report());
    await stream.start(hold);
    stream.pause();
    ack.startStatusTimer();
    const reading = identity === null ? Promise.resolve(null) : this.p.sink.readCheckpoint(identity);
    reading.catch(() => undefined);
    if (!(await this.until(reading))) return false;
    const cp = await reading;
    if (cp === null && this.p.created && this.cfg.initialSnapshot !== null) await this.requestInitialSnapshot(this.cfg.initialSnapshot);
    // Read after the checkpoint, and while the slot is this session's, so nothing else can
    // move it; every legitimate checkpoint is behind the WAL by then.
    const now = await this.p.source.readSlotNow();
    if (identity !== null && !(await this.checkSlot(cp, now))) return false;
    const replay = await this.skipPoint(cp, now);
    if (replay === false) return false;
    loop.skipCovered(replay);
    hold.release();
    ack.maybeResume();
    return true;
  }

  /**
   * EVENTSTREAM_INITIAL_SNAPSHOT on the first start of a slot (created by this start, no checkpoint):
   * requested through the WAL like `airflow-eventstream snapshot`, after the slot exists, so this
   * session reads the request and runs it. Before the first checkpoint is written: a crash in
   * between finds no checkpoint again, but not a created slot, so a daemon killed there needs the
   * snapshot requested by hand (the log line below is then missing).
   */
  private async requestInitialSnapshot(what: { days: number | null }): Promise<void> {
    const req = what.days === null ? { activeOnly: true } : { runsSince: new Date(Date.now() - what.days * 86_400_000).toISOString() };
    const id = await this.p.source.requestSnapshot(req);
    this.log.info({ snapshot: id, ...req }, "first start of the slot: requested the initial snapshot (EVENTSTREAM_INITIAL_SNAPSHOT)");
  }

  /** Waits for `p`, the end of the stream or a failure; false when stop() came meanwhile. */
  private async until(p: Promise<unknown>): Promise<boolean> {
    await Promise.race([p, this.p.stream.done, this.p.life.failed]);
    return !this.p.life.stopping;
  }

  /** Gap detection: the slot against the checkpoint, the durable acked_lsn, the first checkpoint. false: stop() came first. */
  private async checkSlot(cp: Checkpoint | null, now: SourceReady): Promise<boolean> {
    const { cfg, log } = this;
    const { sink, ack, created } = this.p;
    const verdict = refuseGap(cfg, log, cp, facts(cfg.slot, now, created));
    log.info(
      {
        slot: cfg.slot,
        checkpointAckedLsn: cp?.ackedLsn ? formatLsn(cp.ackedLsn) : null,
        slotConfirmedFlushLsn: now.slot ? formatLsn(now.slot.confirmedFlushLsn) : null,
        basis: verdict.basis,
      },
      "no gap between the checkpoint and the slot",
    );
    if (cp?.ackedLsn !== null && cp?.ackedLsn !== undefined) {
      if (now.walLsn > 0n && cp.ackedLsn > now.walLsn) {
        // The server's WAL went back (a restore to an earlier point): that acked_lsn belongs
        // to a history the server left, so it bounds nothing any more.
        // The ack rule then starts over from the slot (it is not told of this acked_lsn).
        log.warn(
          { checkpointAckedLsn: formatLsn(cp.ackedLsn), wal: formatLsn(now.walLsn) },
          "the checkpoint's acked_lsn is ahead of the server's WAL (restored to an earlier point?); starting the acknowledged position over from the slot",
        );
      } else {
        // Durable in Kafka already: every later checkpoint records at least it (AckRule.ackedLsnFor).
        ack.checkpointFound(cp.ackedLsn);
      }
    }
    // The evidence from the first moment: without a checkpoint, a slot dropped before the
    // safe position ever moved (a quiet first run) would go unnoticed. Also brings a
    // checkpoint of an earlier version (no acked_lsn) up to date. Written before streaming,
    // so the first events do not wait behind it (and get batched with the ones after them);
    // it counts as the first checkpoint asked for.
    if (cp === null || cp.ackedLsn === null) {
      ack.firstCheckpointAsked();
      if (!(await this.until(sink.checkpointNow()))) return false;
    }
    return true;
  }

  /** The replayed changes not to publish again (null: none); false when stop() came first. */
  private async skipPoint(cp: Checkpoint | null, now: SourceReady): Promise<ReplayFilter | null | false> {
    const { cfg, log } = this;
    // Both modes read back the tail of the event topics, to seed the mapper; exactly-once after
    // readCheckpoint() fenced its transactional id, so no transaction of ours is open in them.
    const readingBack = readBack(cfg, log, this.p, now.slot?.confirmedFlushLsn ?? this.p.slot.confirmedFlushLsn, now.walLsn);
    readingBack.catch(() => undefined);
    if (!(await this.until(readingBack))) return false;
    const heads = await readingBack;
    if (cfg.delivery === "exactly-once") {
      // The checkpoint covers every partition at once; the heads say no more (every committed
      // event is at or before it).
      const floor = usableCheckpoint(cp, now.walLsn, log);
      return floor !== null ? new ReplayFilter(floor, new Map()) : null;
    }
    return heads.size > 0 ? new ReplayFilter(null, heads) : null;
  }
}

/** Throws SlotGapError when the checkpoint and the slot disagree (see src/checkpoint/gap.ts). */
export function refuseGap(cfg: Config, log: Logger, cp: Checkpoint | null, slot: SlotFacts): Extract<GapVerdict, { kind: "ok" }> {
  const v = assessGap(cp, slot);
  if (v.kind === "ok") return v;
  const message = gapMessage(v, cp, slot, {
    slot: cfg.slot,
    checkpointTopic: cfg.gapDetection ? cfg.checkpointTopic : null,
    createSlot: cfg.createSlot,
  });
  log.error(
    { slot: cfg.slot, reason: v.reason, gapFrom: v.from === null ? null : formatLsn(v.from), gapTo: formatLsn(v.to) },
    "gap in the event stream: events were lost; stopping",
  );
  throw new SlotGapError(message, { reason: v.reason, from: v.from, to: v.to, checkpointWrittenAt: cp?.writtenAt ?? null });
}

/** The slot facts for assessGap. */
export function facts(slot: string, ready: SourceReady, createdNow: boolean): SlotFacts {
  const { walLsn, maxSlotWalKeepSize, idleReplicationSlotTimeout } = ready;
  return { slot, state: ready.slot && { ...ready.slot, createdNow }, walLsn, maxSlotWalKeepSize, idleReplicationSlotTimeout };
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
async function readBack(
  cfg: Config,
  log: Logger,
  { source, sink, mapper }: Pick<StartParts, "source" | "sink" | "mapper">,
  resumeFrom: Lsn,
  walLsn: Lsn,
): Promise<Map<string, (Position | null)[]>> {
  let seeded = 0;
  // A topic per DAG: the DAGs Airflow has runs of name every topic an event can have gone to
  // (a template may have no fixed part, so topic names alone cannot tell).
  const dagIds = cfg.topicTemplate === null ? [] : await source.dagIdsWithRuns();
  const res = await sink.readBack(cfg.restartReadEvents, dagIds, (value) => {
    const pos = positionOf(value);
    if (pos === null || pos.commitLsn >= resumeFrom) return;
    mapper.seed(value);
    seeded++;
  });
  let heads = res.heads;
  let highest: Position | null = null;
  for (const parts of heads.values())
    for (const h of parts) if (h !== null && (highest === null || comparePositions(h, highest) > 0)) highest = h;
  if (highest !== null && walLsn > 0n && highest.commitLsn > walLsn) {
    log.warn(
      { inKafkaUpTo: formatPosition(highest), wal: formatLsn(walLsn) },
      "the event topics hold positions ahead of the server's WAL (restored to an earlier point?); not skipping anything: positions of new events may be lower than ones already published",
    );
    heads = new Map();
  }
  log.info(
    {
      topics: res.heads.size,
      partitions: [...res.heads.values()].reduce((n, p) => n + p.length, 0),
      recordsRead: res.records,
      seeded,
      readMs: res.ms,
      resumeFrom: formatLsn(resumeFrom),
      inKafkaUpTo: highest && formatPosition(highest),
    },
    cfg.delivery === "exactly-once"
      ? "read back the event topics (read_committed): rows named there start with their last published state"
      : "read back the event topics: replayed changes already in Kafka are not published again",
  );
  return heads;
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
