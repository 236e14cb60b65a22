import type { Logger } from "./log.js";

/**
 * How often a problem that lasts is said again. Reported once per retry, a Kafka outage filled the
 * log with a line every second or two (kafkajs's retries, then the supervisor's); once at first and
 * then every 30 s still shows in any log view that it goes on, and since when.
 */
export const REPEAT_MS = 30_000;

/** A problem of the process's environment (Kafka or PostgreSQL unreachable), as a key for the repeats. */
export type ProblemKey = string;

/** How often a lasting problem's timer looks whether its repeat is due. */
const TICK_MS = 5_000;

interface Problem {
  since: number;
  said: number;
  /** The latest report not yet said at warn; null when the last one was. */
  pending: { log: Logger; fields: Record<string, unknown>; msg: string } | null;
  timer: NodeJS.Timeout;
}

/**
 * One warn line per problem when it starts, then one every REPEAT_MS while it lasts (with how long
 * it has lasted); the other reports of it at debug. Shared by the supervisor (src/main.ts) and the
 * kafkajs log bridge (src/sink/client.ts), which see the same outage at different moments: kafkajs
 * at its first failed connection, the supervisor when the session gives up ~1 min later.
 *
 * The repeat is due by the clock, not at the next report: reports come as the retries' backoff
 * allows (kafkajs's grow to 10 s, the supervisor's further), so a repeat said at the first report
 * past 30 s came up to 40 s apart, later still on a busy machine. A timer per problem says the
 * latest report at warn once REPEAT_MS have passed, if there was a report since the last line (a
 * problem nothing reports any more is not said to last); it never keeps the process alive.
 */
class ProblemLog {
  private readonly seen = new Map<ProblemKey, Problem>();

  report(log: Logger, key: ProblemKey, fields: Record<string, unknown>, msg: string, now = Date.now()): void {
    const p = this.seen.get(key);
    if (p === undefined) {
      const timer = setInterval(() => this.due(key, Date.now()), TICK_MS).unref();
      this.seen.set(key, { since: now, said: now, pending: null, timer });
      log.warn({ problem: key, ...fields }, msg);
      return;
    }
    p.pending = { log, fields, msg };
    if (!this.due(key, now)) log.debug({ problem: key, ...fields }, msg);
  }

  /** Says the problem's latest report again when REPEAT_MS have passed since its last line; true if it did. */
  private due(key: ProblemKey, now: number): boolean {
    const p = this.seen.get(key);
    if (p === undefined || p.pending === null || now - p.said < REPEAT_MS) return false;
    const { log, fields, msg } = p.pending;
    p.said = now;
    p.pending = null;
    log.warn({ problem: key, forSeconds: Math.round((now - p.since) / 1000), ...fields }, `still: ${msg}`);
    return true;
  }

  /** The process streams again: every problem is over, and the next one is said at once. */
  clear(): void {
    for (const p of this.seen.values()) clearInterval(p.timer);
    this.seen.clear();
  }
}

export const problems = new ProblemLog();

/**
 * The problem an error is, for the repeats: Kafka or PostgreSQL unreachable by their kind (their
 * messages carry the library's changing detail), anything else by its message.
 */
export function problemKey(message: string): ProblemKey {
  if (/^Kafka at \S+ is unreachable/.test(message)) return "kafka unreachable";
  if (/^PostgreSQL at \S+ is unreachable/.test(message)) return "postgresql unreachable";
  return message;
}
