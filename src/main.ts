import type { Config } from "./config.js";
import { Session } from "./pipeline.js";
import { UserActionError, coerceError, describeError } from "./errors.js";
import type { Logger } from "./log.js";

/**
 * The supervisor: runs sessions until stopped. A session that fails for a reason expected to clear
 * (Kafka or PostgreSQL down, slot held by another daemon, a broken connection) is restarted after a
 * backoff, from the slot's confirmed position, so nothing is skipped; a UserActionError (bad
 * configuration, missing privilege, wrong server setting) ends the process with its message.
 */
export class Daemon {
  private session: Session | null = null;
  private stopped = false;
  private wake: (() => void) | null = null;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {}

  async run(): Promise<void> {
    let backoffMs = 500;
    while (!this.stopped) {
      const session = (this.session = new Session(this.cfg, this.log));
      try {
        await session.run();
        if (this.stopped) return;
        this.log.warn("replication stream ended; reconnecting");
      } catch (e: unknown) {
        if (e instanceof UserActionError) throw e;
        if (this.stopped) return;
        const err = coerceError(e);
        // A session that streamed for a while earns a fresh backoff.
        if (session.streamingSince > 0 && Date.now() - session.streamingSince > 30_000) backoffMs = 500;
        this.log.warn({ err: describeError(err), retryInMs: backoffMs }, "session ended; restarting from the last acknowledged position");
      }
      await this.sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, 30_000);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.session?.stop(this.cfg.shutdownTimeoutMs);
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
