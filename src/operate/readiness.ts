/** Where the daemon is in its life, as readiness and the `role` gauge see it. */
export type Role = "starting" | "active" | "standby" | "stopping";

/** What readiness is decided from; every time in ms since the epoch. */
export interface ReadyFacts {
  role: Role;
  now: number;
  /** When the role last changed. */
  roleSince: number;
  /** When PostgreSQL was last told a higher flush position; 0: never. */
  lastAckAt: number;
  /** The slot's lag at the first probe after that acknowledgement; null: no probe since. */
  lagAtAck: number | null;
  /** The slot's lag at the latest probe; null: no probe yet (or it failed). */
  lagNow: number | null;
  stallMs: number;
}

export type Readiness = { ready: true; reason: "ready" } | { ready: false; reason: string };

/**
 * Ready only while this daemon holds the slot and is progressing. "Progressing" is judged from the
 * slot, not from the connection: a daemon whose Kafka is gone keeps its replication connection open
 * and answers keepalives, which is how a stalled pod stays Ready. Stalled = the slot's lag grew
 * since the last acknowledgement and none came for `stallMs`. Lag alone is not enough (a burst
 * raises it while acknowledgements still advance), nor is silence alone (a quiet Airflow writes no
 * WAL, so nothing needs acknowledging).
 */
export function readiness(f: ReadyFacts): Readiness {
  if (f.role === "standby") return { ready: false, reason: "standby" };
  if (f.role !== "active") return { ready: false, reason: `not streaming (${f.role})` };
  const since = Math.max(f.lastAckAt, f.roleSince);
  const quietMs = f.now - since;
  if (quietMs >= f.stallMs && f.lagNow !== null && f.lagAtAck !== null && f.lagNow > f.lagAtAck)
    return {
      ready: false,
      reason: `stalled: the slot's lag grew from ${f.lagAtAck} to ${f.lagNow} bytes and no acknowledgement for ${Math.round(quietMs / 1000)} s`,
    };
  return { ready: true, reason: "ready" };
}
