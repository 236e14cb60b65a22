import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Daemon, type SupervisedSession } from "../../src/main.js";
import { loadConfig } from "../../src/config.js";
import { TransientError } from "../../src/errors.js";
import { REPEAT_MS, problemKey, problems } from "../../src/problems.js";

interface Line {
  level: number;
  msg: string;
  problem?: string;
  forSeconds?: number;
}

function capture(): { log: pino.Logger; lines: Line[] } {
  const lines: Line[] = [];
  const log = pino({ level: "debug" }, { write: (l: string) => lines.push(JSON.parse(l) as Line) });
  return { log, lines };
}

beforeEach(() => problems.clear());
afterEach(() => {
  problems.clear();
  vi.useRealTimers();
});

describe("problems: once, then every 30 s", () => {
  it("says a problem at once, repeats it only after REPEAT_MS (with how long it lasted), and the rest at debug", () => {
    const { log, lines } = capture();
    const t0 = 1_000_000;
    problems.report(log, "kafka unreachable", {}, "Kafka at k:1 is unreachable", t0);
    problems.report(log, "kafka unreachable", {}, "Kafka at k:1 is unreachable", t0 + 5_000);
    problems.report(log, "kafka unreachable", {}, "Kafka at k:1 is unreachable", t0 + REPEAT_MS);
    problems.report(log, "kafka unreachable", {}, "Kafka at k:1 is unreachable", t0 + REPEAT_MS + 1_000);
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, "Kafka at k:1 is unreachable"],
      [20, "Kafka at k:1 is unreachable"],
      [40, "still: Kafka at k:1 is unreachable"],
      [20, "Kafka at k:1 is unreachable"],
    ]);
    expect(lines[2]!.forSeconds).toBe(REPEAT_MS / 1000);
    // Another problem is said at once; after clear() (streaming again) the same one too.
    problems.report(log, "other", {}, "other", t0 + REPEAT_MS + 2_000);
    problems.clear();
    problems.report(log, "kafka unreachable", {}, "Kafka at k:1 is unreachable", t0 + REPEAT_MS + 3_000);
    expect(lines.slice(4).map((l) => l.level)).toEqual([40, 40]);
  });

  it("repeats by the clock: a report 1 s after the first is said at warn 30 s later, without another report", () => {
    vi.useFakeTimers();
    const { log, lines } = capture();
    problems.report(log, "kafka unreachable", {}, "first");
    vi.advanceTimersByTime(1_000);
    problems.report(log, "kafka unreachable", { n: 2 }, "second");
    vi.advanceTimersByTime(REPEAT_MS - 1_000 - 1);
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual(["first"]);
    vi.advanceTimersByTime(5_001);
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual(["first", "still: second"]);
    // Nothing reported since that line: nothing said to last.
    vi.advanceTimersByTime(3 * REPEAT_MS);
    expect(lines.filter((l) => l.level === 40).length).toBe(2);
    // Reported again, more than REPEAT_MS after the last line: said at once.
    problems.report(log, "kafka unreachable", {}, "third");
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual(["first", "still: second", "still: third"]);
  });

  it("keys Kafka and PostgreSQL outages by kind, whatever the library's detail", () => {
    expect(problemKey("Kafka at 127.0.0.1:1 is unreachable (Connection error: ECONNREFUSED); retrying")).toBe("kafka unreachable");
    expect(problemKey("PostgreSQL at db:5432 is unreachable (timeout); retrying")).toBe("postgresql unreachable");
    expect(problemKey("something else")).toBe("something else");
  });
});

class Failing implements SupervisedSession {
  constructor(
    readonly streamingSince: number,
    private readonly message: string,
  ) {}
  async run(): Promise<void> {
    await Promise.resolve();
    throw new TransientError(this.message);
  }
  async stop(): Promise<void> {}
}

describe("supervisor's lines", () => {
  const cfg = loadConfig({ PGDATABASE: "airflow", KAFKA_BROKERS: "127.0.0.1:9092" }, new Map());

  async function run(sessions: number, make: () => SupervisedSession): Promise<Line[]> {
    const { log, lines } = capture();
    let started = 0;
    let done: () => void = () => undefined;
    const enough = new Promise<void>((r) => (done = r));
    const daemon = new Daemon(cfg, log, () => {
      if (++started === sessions) done();
      return make();
    });
    const running = daemon.run();
    await enough;
    await daemon.stop();
    await running;
    return lines;
  }

  it("a session that never started: the problem in its own words, once; no 'session ended; restarting'", async () => {
    const lines = await run(3, () => new Failing(0, "PostgreSQL at db:1 is unreachable (connect ECONNREFUSED); retrying"));
    const warned = lines.filter((l) => l.level >= 40);
    expect(warned.map((l) => l.msg)).toEqual(["PostgreSQL at db:1 is unreachable (connect ECONNREFUSED); retrying"]);
    expect(lines.filter((l) => l.msg.startsWith("session ended"))).toEqual([]);
    expect(lines.filter((l) => l.level === 20 && l.problem === "postgresql unreachable").length).toBeGreaterThanOrEqual(1);
  }, 10_000);

  it("a session that streamed: 'session ended; restarting from the last acknowledged position'", async () => {
    const lines = await run(2, () => new Failing(Date.now() - 60_000, "Kafka at k:1 is unreachable (x); retrying"));
    const warned = lines.filter((l) => l.level === 40).map((l) => l.msg);
    expect(warned.length).toBeGreaterThanOrEqual(1);
    expect(new Set(warned)).toEqual(new Set(["session ended; restarting from the last acknowledged position"]));
  }, 10_000);
});
