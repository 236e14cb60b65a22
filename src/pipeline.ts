import type { Config } from "./config.js";
import { problems } from "./problems.js";
import { AckRule, type SinkAck } from "./checkpoint/ack.js";
import { formatLsn } from "./lsn.js";
import type { Lsn } from "./lsn.js";
import { runCacheSize, type AirflowMapper } from "./airflow/mapper.js";
import { runContexts } from "./airflow/run-context.js";
import { cloudEventsFor, type CloudEvents } from "./sink/cloudevents.js";
import { realStages, type Sink, type SourceStream, type Stages } from "./stages.js";
import { Lifecycle } from "./lifecycle.js";
import { MessageLoop, type Loop, type LoopParts } from "./session-loop.js";
import type { HandoffParts } from "./loop/handoff.js";
import { makerModel, type MakerModel } from "./loop/maker.js";
import { HeldStream, ThreadedLoop } from "./loop/thread.js";
import { AckWatch } from "./snapshot/ack-watch.js";
import { deliveryMode } from "./sink/delivery.js";
import { SnapshotCoordinator } from "./snapshot/coordinator.js";
import { Startup, facts, openSlot, refuseGap, type OpenSlot } from "./startup.js";
import type { Logger } from "./log.js";
import type { AckStream } from "./checkpoint/ack.js";
import { Metrics } from "./operate/metrics.js";

/**
 * One streaming session: source → decode → airflow model → sink → checkpoint, wired in that order.
 * It ends when `stop()` is called (resolves) or on the first error anywhere (rejects); the
 * supervisor in main.ts then starts a new session from the slot's confirmed position. Nothing is
 * carried over between sessions: the slot re-delivers every transaction not yet acknowledged, and
 * the mapper's state cache must not be newer than what is replayed, or a re-delivered transition
 * would look like churn and be dropped.
 *
 * The session builds the parts from its stages (src/stages.ts: the real ones, or a test's fakes),
 * runs them and tears them down. What PostgreSQL is told, and when, is the ack rule's
 * (src/checkpoint/ack.ts); the start-up protocol (gap checks, the checkpoint read with held
 * messages, the first checkpoint, the read-back and the replay's skip point) is src/startup.ts; the
 * per-message loop is src/session-loop.ts. A start checks the slot against the checkpoint before
 * anything is created or published (src/checkpoint/gap.ts).
 */
export class Session {
  private readonly life = new Lifecycle();
  private built: Built = { kind: "source" };
  /** Set once the stream is up; the supervisor uses it to reset its backoff. */
  streamingSince = 0;

  /** `stages`: what the session is built from; the real PostgreSQL and Kafka unless a test passes fakes. */
  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly stages: Stages = realStages(cfg, log),
    /** The daemon's metrics (src/operate/); a private set, unserved, when none is given. */
    private readonly metrics: Metrics = new Metrics(
      { version: "", airflowSchema: cfg.airflowSchema, delivery: cfg.delivery, stallMs: 0 },
      false,
    ),
  ) {}

  async run(): Promise<void> {
    const { cfg, log, life, stages } = this;
    const { source } = stages;
    const ready = await source.prepare();
    if (life.stopping) return;
    // An invalidated slot can never stream again (START_REPLICATION fails on it): refused before
    // Kafka is even asked, with or without a checkpoint.
    refuseGap(cfg, log, null, facts(cfg.slot, ready, false));
    const relay = new AckRelay(this.metrics);
    const sink = stages.sink({ failed: (e) => life.fail(e), ack: relay, metrics: this.metrics });
    this.built = { kind: "sink", sink };
    try {
      const opened = await openSlot(cfg, log, { source, sink, life }, ready);
      if (opened === null) return;
      const cloudEvents = await cloudEventsFor(cfg.cloudEvents, opened.identity, () => source.readIdentity());
      const stream = cfg.modelThread
        ? new HeldStream(source.openStream(), (paused) => this.metrics.backpressure(paused))
        : source.openStream();
      const ack = new AckRule(opened.slot.confirmedFlushLsn, opened.identity !== null, cfg, reported(stream, this.metrics), sink, life);
      relay.bind(ack);
      const snapshots = new SnapshotCoordinator(cfg, log.child({ module: "snapshot" }), {
        saveProgress: (p) => {
          if (deliveryMode(cfg).ckpt === null) return false;
          sink.snapshotProgress = p;
          // Not left to the ack rule: it asks only when the safe position moved, which the chunk's
          // own checkpoint may have covered already.
          sink.requestCheckpoint();
          return true;
        },
        acks: relay.watch,
      });
      const handoffParts = { sink, ack, life, snapshots: snapshots.tap, metrics: this.metrics };
      const { loop, model } =
        stream instanceof HeldStream
          ? threadedLoop(cfg, log, { ...handoffParts, stream }, cloudEvents)
          : oneThreadLoop(cfg, log, { ...handoffParts, cloudEvents });
      const parts: Streaming = { kind: "streaming", sink, stream, ack, snapshots, loop };
      this.built = parts;
      const runs = runContexts(await source.runsUnderWay(runCacheSize(cfg.stateCacheSize)));
      for (const r of runs) model.seedRunContext(r.dagId, r.runId, r.ctx);
      log.debug({ runs: runs.length }, "read the context of runs under way");
      if (cfg.assetTopic !== null) {
        const assets = await source.assets();
        for (const a of assets) model.seedAsset(a);
        log.debug({ assets: assets.length }, "read the assets Airflow knows");
      }
      this.metrics.bindSession({
        inflightEvents: () => ack.inflight,
        inflightBytes: () => sink.inflightBytes,
        paused: () => stream.isPaused,
        cache: () => model.cacheStats(),
      });
      await this.stream(parts, opened, new Startup(cfg, log, { ...opened, source, sink, stream, ack, loop, mapper: model, life }));
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
    if (this.life.stopping) return;
    this.life.stopping = true;
    const built = this.built;
    if (built.kind === "streaming") built.stream.pause();
    if (built.kind !== "source") {
      const deadline = Date.now() + timeoutMs;
      const late = await withDeadline(built.sink.idle(), deadline);
      if (late)
        this.log.warn(
          { timeoutMs },
          "Kafka did not acknowledge everything before the shutdown timeout; the rest is re-delivered on the next start",
        );
      else if (built.kind === "streaming" && built.ack.checkpointBehind && (await withDeadline(built.sink.checkpointNow(), deadline))) {
        this.log.warn(
          { timeoutMs },
          "the last checkpoint was not written before the shutdown timeout; the unacknowledged tail is re-delivered on the next start",
        );
      }
    }
    const now = this.built;
    if (now.kind === "streaming") now.ack.report();
    if (built.kind === "streaming") await built.stream.stop();
  }

  /** Runs the start-up protocol, then streams until stop(), the end of the stream or a failure. */
  private async stream(parts: Streaming, opened: OpenSlot, startup: Startup): Promise<void> {
    const { cfg, log, life } = this;
    try {
      if (!(await startup.run())) return;
      parts.snapshots.start(parts.sink.snapshotProgress ?? null);
      this.streamingSince = Date.now();
      this.metrics.setRole("active");
      // Whatever kept it from streaming is over: the next problem is said at once.
      problems.clear();
      log.info({ slot: cfg.slot, resumeFrom: formatLsn(opened.slot.confirmedFlushLsn) }, "streaming");
      await Promise.race([parts.stream.done, life.failed]);
    } catch (e: unknown) {
      await this.checkpointAfterFailure(parts);
      throw (await this.stages.source.explainFailure(e)) ?? e;
    } finally {
      parts.ack.close();
    }
  }

  /**
   * At-least-once, when the session fails while PostgreSQL's connection is still up (a Kafka
   * topic refused, a produce that ran out of retries): what Kafka did acknowledge before the
   * failure is checkpointed and reported, so the next start does not publish it again. Bounded:
   * when Kafka itself is the problem, the checkpoint cannot be written either.
   */
  private async checkpointAfterFailure({ stream, sink, ack }: Streaming): Promise<void> {
    if (!stream.isOpen || !ack.gated || this.life.stopping || this.cfg.delivery === "exactly-once") return;
    if (ack.checkpointBehind) await withDeadline(sink.checkpointNow(), Date.now() + Math.min(5_000, this.cfg.shutdownTimeoutMs));
    ack.report();
  }

  private async teardown(): Promise<void> {
    this.metrics.bindSession(null);
    if (this.metrics.role === "active") this.metrics.setRole(this.life.stopping ? "stopping" : "starting");
    const built = this.built;
    if (built.kind === "streaming") {
      await built.snapshots.stop();
      built.ack.close();
      await built.stream.stop();
      await built.loop.close?.();
    }
    if (built.kind !== "source") await built.sink.close();
  }
}

type Streaming = {
  kind: "streaming";
  sink: Sink;
  stream: SourceStream;
  ack: AckRule;
  snapshots: SnapshotCoordinator;
  /** close: the model thread's end (EVENTSTREAM_MODEL_THREAD). */
  loop: Loop & { close?(): Promise<void> };
};

/** The mapper as the session seeds and reads it: the mapper itself, or the model thread's proxy. */
type Model = Pick<AirflowMapper, "seed" | "seedRunContext" | "seedAsset" | "cacheStats">;

/** The per-message loop on this thread (src/session-loop.ts). */
function oneThreadLoop(cfg: Config, log: Logger, parts: Omit<LoopParts, keyof MakerModel>): { loop: MessageLoop; model: Model } {
  const made = makerModel(cfg, log);
  return { loop: new MessageLoop(cfg, log, { ...parts, ...made }), model: made.mapper };
}

/** The per-message loop with decode and model on the model thread (src/loop/thread.ts). */
function threadedLoop(
  cfg: Config,
  log: Logger,
  parts: HandoffParts & { stream: HeldStream },
  cloudEvents: CloudEvents | undefined,
): { loop: ThreadedLoop; model: Model } {
  const loop = new ThreadedLoop(cfg, log, parts, { cloudEventsSource: cloudEvents?.source ?? null });
  return { loop, model: loop.model };
}

/** What run() has built so far, which stop() and teardown act on. */
type Built = { kind: "source" } | { kind: "sink"; sink: Sink } | Streaming;

/**
 * The sink's way to the ack rule. The sink is built first (a missing slot is checked against the
 * checkpoint through it) and the rule only once the slot's position is known; nothing is pushed to
 * the sink or asked of it before then, so no call arrives before bind().
 */
class AckRelay implements SinkAck {
  private rule: SinkAck = BEFORE_RULE;
  /** Snapshot chunks wait here for Kafka's acknowledgement of their events. */
  readonly watch = new AckWatch();

  constructor(private readonly metrics: Metrics) {}

  bind(rule: SinkAck): void {
    this.rule = rule;
  }

  acked(seq: number): void {
    this.rule.acked(seq);
    this.watch.ackedUpTo(seq);
    this.metrics.acked(seq);
  }

  checkpointed(ackedLsn: Lsn): void {
    this.rule.checkpointed(ackedLsn);
    this.metrics.checkpointed(ackedLsn);
  }

  ackedLsnFor(lastSeq: number | null): Lsn {
    return this.rule.ackedLsnFor(lastSeq);
  }
}

const beforeRule = (): never => {
  throw new Error("the sink reported to the ack rule before the session built it");
};
const BEFORE_RULE: SinkAck = { acked: beforeRule, checkpointed: beforeRule, ackedLsnFor: beforeRule };

/**
 * The stream as the ack rule drives it, with every flush position it sends recorded in the metrics.
 * What the metrics count as paused is the stream's own state after the call, not the ack rule's
 * wish: with the model thread, a full queue between the threads keeps the socket paused after the
 * ack rule resumes it (HeldStream reports those pauses itself).
 */
function reported(stream: SourceStream, metrics: Metrics): AckStream {
  return {
    sendStatus(lsn: Lsn) {
      stream.sendStatus(lsn);
      metrics.flushed(lsn);
    },
    pause: () => {
      stream.pause();
      metrics.backpressure(stream.isPaused);
    },
    resume: () => {
      stream.resume();
      metrics.backpressure(stream.isPaused);
    },
    get isPaused() {
      return stream.isPaused;
    },
  };
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
