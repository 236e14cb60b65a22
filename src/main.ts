import type { Config } from "./config.js";
import { Session } from "./pipeline.js";
import { realStages } from "./stages.js";
import { startValueFraming, type ValueFraming } from "./sink/schema-registry.js";
import { Metrics } from "./operate/metrics.js";
import { describeFilters } from "./airflow/filter.js";
import { SlotBusyError, SlotGapError, UserActionError, coerceError, describeError } from "./errors.js";
import { recoverFromGap } from "./recover-gap.js";
import type { Logger } from "./log.js";
import { problemKey, problems } from "./problems.js";

/**
 * The supervisor: runs sessions until stopped. A session that fails for a reason expected to clear
 * (Kafka or PostgreSQL down, slot held by another daemon, a broken connection) is restarted after a
 * backoff, from the slot's confirmed position, so nothing is skipped; a UserActionError (bad
 * configuration, missing privilege, wrong server setting) ends the process with its message.
 */
/**
 * Longest wait between session attempts. A reconnect costs a connection and a small query on each
 * side, so an outage that has ended is better noticed within 10 s than within 30.
 */
const MAX_BACKOFF_MS = 10_000;

/** What the supervisor needs of a session (pipeline.ts Session). */
export interface SupervisedSession {
  run(): Promise<void>;
  stop(timeoutMs: number): Promise<void>;
  readonly streamingSince: number;
}

export class Daemon {
  private session: SupervisedSession | null = null;
  private stopped = false;
  private wake: (() => void) | null = null;
  private waitingForSlot = false;
  /**
   * Ends the wait for the session under way once stop() has flushed and acknowledged: run()
   * returns then, even if the session is still stuck connecting (kafkajs retries a connect for up
   * to a minute). One per session, not one for the daemon's life: every Promise.race leaves a
   * reaction on each promise it races, and a race that rejected keeps its error, whose stack
   * frames hold the failed session, its sink and the events queued in it. Raced against one
   * lifelong promise, every restart kept its session: the fault suite's daemon ran out of heap
   * after a few Kafka outages (each session's queue, 10,000 events, still alive).
   */
  private halt: (() => void) | null = null;
  private readonly newSession: (cfg: Config, log: Logger) => SupervisedSession;
  /** EVENTSTREAM_SCHEMA_REGISTRY_URL's schema ids and framing (src/sink/schema-registry.ts); null: plain JSON. */
  private framing: ValueFraming | null = null;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    /** How a session is made: the real one, or a fake in the supervisor's unit tests. */
    newSession?: (cfg: Config, log: Logger) => SupervisedSession,
    /** EVENTSTREAM_ON_GAP=snapshot's recovery: the real one, or a fake in the unit tests. */
    private readonly recover: (gap: SlotGapError) => Promise<void> = (gap) => recoverFromGap(cfg, log, gap),
    /** What /metrics and /readyz report (src/operate/); a private, unserved set when not given. */
    private readonly metrics = new Metrics({ version: "", airflowSchema: cfg.airflowSchema, delivery: cfg.delivery, stallMs: 0 }, false),
  ) {
    this.newSession = newSession ?? ((c, l) => new Session(c, l, realStages(c, l, this.framing), this.metrics));
  }

  async run(): Promise<void> {
    // Once per process, before any session: a registry that is down or refuses the schema stops the
    // start (SchemaRegistryError); later sessions reuse the ids.
    this.framing ??= await startValueFraming(this.cfg, this.log);
    // Once per process, not per session: the lists do not change while it runs.
    const filters = describeFilters(this.cfg.filters);
    if (filters !== null)
      this.log.info(filters, "filters: only the events these lists admit are published (stream_gap and table_truncated always are)");
    let backoffMs = 500;
    while (!this.stopped) {
      const session = (this.session = this.newSession(this.cfg, this.log));
      try {
        await this.runUntilHalted(session);
        if (this.stopped) return;
        this.metrics.sessionRestarts.inc({ reason: "stream_ended" });
        this.log.warn("replication stream ended; reconnecting");
      } catch (e: unknown) {
        const next = await this.afterFailure(e, session, backoffMs);
        if (next === "stop") return;
        if (next === "standby") continue;
        if (next === "recovered") {
          backoffMs = 500;
          continue;
        }
        if (next === "fresh") backoffMs = 500;
      }
      await this.sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
    }
  }

  /**
   * What a failed session leads to: the error thrown on (a UserActionError ends the process), a
   * gap recovered (EVENTSTREAM_ON_GAP=snapshot), a standby's wait for the slot, or a restart after
   * the backoff ("fresh": after a fresh, short one).
   */
  private async afterFailure(
    e: unknown,
    session: SupervisedSession,
    backoffMs: number,
  ): Promise<"stop" | "standby" | "recovered" | "fresh" | "backoff"> {
    if (e instanceof SlotGapError && this.cfg.onGap === "snapshot" && !this.stopped) {
      // Recorded in the stream, accepted, and a snapshot requested (src/recover-gap.ts); the next
      // session streams on. A recovery that fails for a passing reason is retried after the backoff.
      try {
        await this.recover(e);
        this.metrics.sessionRestarts.inc({ reason: "gap_recovered" });
        return "recovered";
      } catch (err: unknown) {
        if (err instanceof UserActionError) throw err;
        this.log.warn({ err: describeError(err), retryInMs: backoffMs }, "gap recovery failed; retrying");
        return "backoff";
      }
    }
    if (e instanceof UserActionError) throw e;
    if (this.stopped) return "stop";
    const err = coerceError(e);
    if (err instanceof SlotBusyError) {
      // Standby: poll the slot every second, so takeover is quick; say so once, not every second.
      if (!this.waitingForSlot)
        this.log.warn({ err: describeError(err), slot: this.cfg.slot }, "replication slot in use by another connection; waiting for it");
      this.waitingForSlot = true;
      this.metrics.setRole("standby");
      await this.sleep(1_000);
      return "standby";
    }
    this.waitingForSlot = false;
    this.metrics.setRole("starting");
    this.metrics.sessionRestarts.inc({ reason: err.name });
    // A session that streamed for a while earns a fresh backoff: the failure is a new one, and
    // carrying the last outage's long waits into it delayed recovery by up to the cap (the fault
    // suite measured 25-35 s after faults a few seconds apart). A session failing again within
    // seconds of streaming keeps growing it, so a failure that follows every start cannot spin.
    const fresh = session.streamingSince > 0 && Date.now() - session.streamingSince > 5_000;
    const retryInMs = fresh ? 500 : backoffMs;
    this.log.debug({ err: describeError(err), stack: err.stack }, "session failure, in detail");
    if (session.streamingSince > 0) {
      this.log.warn({ err: describeError(err), retryInMs }, "session ended; restarting from the last acknowledged position");
    } else {
      // Nothing streamed, so nothing restarts "from" anywhere: the problem, in the daemon's words,
      // once and then every 30 s while it lasts (src/problems.ts), not once per retry.
      const said = err.message.endsWith("; retrying") ? err.message : `could not start streaming (${err.message}); retrying`;
      problems.report(this.log, problemKey(err.message), { err: err.message, retryInMs }, said);
    }
    return fresh ? "fresh" : "backoff";
  }

  /** The session's run, or until stop() has flushed (see `halt`). */
  private async runUntilHalted(session: SupervisedSession): Promise<void> {
    const halted = new Promise<void>((resolve) => (this.halt = resolve));
    try {
      await Promise.race([session.run(), halted]);
    } finally {
      this.halt = null;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.metrics.setRole("stopping");
    this.wake?.();
    try {
      await this.session?.stop(this.cfg.shutdownTimeoutMs);
    } finally {
      this.halt?.();
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
