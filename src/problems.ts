import type { Logger } from "./log.js";

/**
 * How often a problem that lasts is said again. Reported once per retry, a Kafka outage filled the
 * log with a line every second or two (kafkajs's retries, then the supervisor's); once at first and
 * then every 30 s still shows in any log view that it goes on, and since when.
 */
export const REPEAT_MS = 30_000;

/** A problem of the process's environment (Kafka or PostgreSQL unreachable), as a key for the repeats. */
export type ProblemKey = string;

/**
 * One warn line per problem when it starts, then one every REPEAT_MS while it lasts (with how long
 * it has lasted); the other reports of it at debug. Shared by the supervisor (src/main.ts) and the
 * kafkajs log bridge (src/sink/client.ts), which see the same outage at different moments: kafkajs
 * at its first failed connection, the supervisor when the session gives up ~1 min later.
 */
class ProblemLog {
  private readonly seen = new Map<ProblemKey, { since: number; said: number }>();

  report(log: Logger, key: ProblemKey, fields: Record<string, unknown>, msg: string, now = Date.now()): void {
    const p = this.seen.get(key);
    if (p === undefined) {
      this.seen.set(key, { since: now, said: now });
      log.warn({ problem: key, ...fields }, msg);
    } else if (now - p.said >= REPEAT_MS) {
      p.said = now;
      log.warn({ problem: key, forSeconds: Math.round((now - p.since) / 1000), ...fields }, `still: ${msg}`);
    } else {
      log.debug({ problem: key, ...fields }, msg);
    }
  }

  /** The process streams again: every problem is over, and the next one is said at once. */
  clear(): void {
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
