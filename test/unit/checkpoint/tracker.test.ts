import { describe, expect, it } from "vitest";
import { AckTracker } from "../../../src/checkpoint/tracker.js";

describe("AckTracker", () => {
  it("starts at the slot's confirmed position", () => {
    expect(new AckTracker(100n).safeLsn).toBe(100n);
  });

  it("passes a commit only after Kafka acknowledged all of its events", () => {
    const t = new AckTracker(0n);
    const a1 = t.next();
    const a2 = t.next();
    t.commit(200n);
    expect(t.safeLsn).toBe(0n);
    t.ackedUpTo(a1);
    expect(t.safeLsn).toBe(0n);
    t.ackedUpTo(a2);
    expect(t.safeLsn).toBe(200n);
    expect(t.inflight).toBe(0);
  });

  it("never passes a later transaction's commit before an earlier one's events", () => {
    const t = new AckTracker(0n);
    t.next();
    t.commit(200n); // A: seq 1
    const b = t.next();
    t.commit(300n); // B: seq 2
    t.ackedUpTo(1);
    expect(t.safeLsn).toBe(200n);
    t.ackedUpTo(b);
    expect(t.safeLsn).toBe(300n);
  });

  it("acknowledges the exact end LSN of adjacent commits, never one past it", () => {
    // A ends exactly where B's commit record starts: reporting A's end + 1
    // would make PostgreSQL skip B on restart.
    const t = new AckTracker(0n);
    const a = t.next();
    t.commit(0x1000n);
    t.next();
    t.commit(0x1040n);
    t.ackedUpTo(a);
    expect(t.safeLsn).toBe(0x1000n);
  });

  it("passes a transaction without events at once when nothing is in flight", () => {
    const t = new AckTracker(0n);
    t.commit(50n);
    expect(t.safeLsn).toBe(50n);
  });

  it("holds an event-less transaction behind an earlier one still in flight", () => {
    const t = new AckTracker(0n);
    t.next();
    t.commit(50n);
    t.commit(60n);
    expect(t.safeLsn).toBe(0n);
    t.ackedUpTo(1);
    expect(t.safeLsn).toBe(60n);
  });

  it("follows keepalives while idle, but queues them behind data in flight", () => {
    const t = new AckTracker(10n);
    t.keepalive(500n);
    expect(t.safeLsn).toBe(500n);
    const s = t.next();
    t.commit(600n);
    t.keepalive(900n);
    expect(t.safeLsn).toBe(500n);
    t.ackedUpTo(s);
    expect(t.safeLsn).toBe(900n);
  });

  it("never moves backwards", () => {
    const t = new AckTracker(1000n);
    t.keepalive(10n);
    t.commit(20n);
    expect(t.safeLsn).toBe(1000n);
  });

  it("tells the safe position once Kafka has everything up to a sequence, without moving it", () => {
    // What an exactly-once transaction ending at that sequence records as acked_lsn.
    const t = new AckTracker(100n);
    const a = t.next();
    t.commit(200n); // A: seq 1
    const b1 = t.next();
    const b2 = t.next();
    t.commit(300n); // B: seq 2, 3
    t.next(); // C: seq 4, its commit not read yet
    expect(t.safeLsnAfter(null)).toBe(100n);
    expect(t.safeLsnAfter(a)).toBe(200n);
    expect(t.safeLsnAfter(b1)).toBe(200n); // B half-way: not past A
    expect(t.safeLsnAfter(b2)).toBe(300n);
    expect(t.safeLsnAfter(4)).toBe(300n); // C's commit unknown: nothing past B
    expect(t.safeLsn).toBe(100n);
    t.ackedUpTo(a);
    expect(t.safeLsnAfter(null)).toBe(200n);
    expect(t.safeLsnAfter(b2)).toBe(300n);
  });

  it("counts a keepalive received after the last event as covered by that event", () => {
    const t = new AckTracker(0n);
    const s = t.next();
    t.commit(200n);
    t.keepalive(900n);
    expect(t.safeLsnAfter(s)).toBe(900n);
    const later = t.next();
    t.keepalive(1000n); // behind `later`, which is not acknowledged
    expect(t.safeLsnAfter(s)).toBe(900n);
    expect(t.safeLsnAfter(later)).toBe(1000n);
  });

  it("stays O(1) in memory over many transactions", () => {
    const t = new AckTracker(0n);
    for (let i = 1; i <= 100_000; i++) {
      const s = t.next();
      t.commit(BigInt(i * 100));
      t.ackedUpTo(s);
    }
    expect(t.safeLsn).toBe(10_000_000n);
    expect(t.pendingMarkers).toBe(0);
  });
});
