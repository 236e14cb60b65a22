import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { Daemon, type SupervisedSession } from "../../src/main.js";
import { loadConfig } from "../../src/config.js";

/**
 * The supervisor (src/main.ts) must not keep a failed session alive. A session's failure carries
 * an error whose stack frames hold the session (and through it the sink's queue of events); if the
 * supervisor raced every session against one promise that lives as long as the daemon, each race
 * would stay attached to it, rejected with that error, and every restart would keep its session:
 * the fault suite's daemon ran out of heap that way after a few Kafka outages.
 */

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** A session that fails at once, from one of its own methods, holding a payload of some size. */
class FailingSession implements SupervisedSession {
  readonly streamingSince = 0;
  readonly payload = new Array(10_000).fill("x".repeat(64));
  constructor(private readonly onStart: (s: FailingSession) => void) {}
  async run(): Promise<void> {
    this.onStart(this);
    await Promise.resolve();
    this.fail();
  }
  private fail(): never {
    // Thrown in a method of the session: V8 keeps the frames (and `this`) with the error.
    throw new Error(`session failed (${this.payload.length} queued)`);
  }
  async stop(): Promise<void> {}
}

describe("supervisor", () => {
  it("keeps no failed session alive once it has restarted past it", async () => {
    const cfg = loadConfig({ PGDATABASE: "airflow", KAFKA_BROKERS: "127.0.0.1:9092" }, new Map());
    const refs: WeakRef<FailingSession>[] = [];
    let started = 0;
    let third: () => void = () => undefined;
    const thirdStarted = new Promise<void>((r) => (third = r));
    const daemon = new Daemon(
      cfg,
      pino({ level: "silent" }),
      () =>
        new FailingSession((s) => {
          refs.push(new WeakRef(s));
          if (++started === 3) third();
        }),
    );
    const running = daemon.run();
    // Two failures and their backoffs (0.5 s, 1 s), then the third session is under way. Checked
    // while the daemon runs: what a lifelong promise holds is let go only when it settles (stop).
    await thirdStarted;
    // Not deref() before collecting: a deref keeps its target alive until the current job ends.
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 10));
      gc();
    }
    const collected = refs.slice(0, 2).map((r) => r.deref() === undefined);
    await daemon.stop();
    await running;
    expect(collected).toEqual([true, true]);
  }, 20_000);
});
