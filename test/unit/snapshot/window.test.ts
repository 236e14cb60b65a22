import { describe, expect, it } from "vitest";
import { RecentChanges, keysToDrop, parseSnapshot, sees, xidBefore } from "../../../src/snapshot/window.js";

describe("snapshot window rule", () => {
  it("parses pg_current_snapshot() and reduces 64-bit xids to pgoutput's 32-bit ones", () => {
    const s = parseSnapshot("4294967396:4294967400:4294967397,4294967399");
    expect(s.xmin).toBe(100);
    expect(s.xmax).toBe(104);
    expect([...s.xip]).toEqual([101, 103]);
    expect(parseSnapshot("10:10:").xip.size).toBe(0);
    expect(() => parseSnapshot("nonsense")).toThrow(/not a pg_snapshot/);
  });

  it("visibility: below xmin seen; in xip or at/after xmax not seen; circular order across wraparound", () => {
    const s = parseSnapshot("100:110:103,105");
    expect(sees(s, 99)).toBe(true);
    expect(sees(s, 102)).toBe(true);
    expect(sees(s, 103)).toBe(false);
    expect(sees(s, 110)).toBe(false);
    expect(sees(s, 200)).toBe(false);
    expect(xidBefore(0xfffffff0, 5)).toBe(true);
    const wrapped = { xmin: 0xfffffff0, xmax: 10, xip: new Set([3]) };
    expect(sees(wrapped, 0xffffffe0)).toBe(true);
    expect(sees(wrapped, 0xfffffff5)).toBe(true);
    expect(sees(wrapped, 3)).toBe(false);
    expect(sees(wrapped, 12)).toBe(false);
  });

  it("drops keys changed in the window, and keys of earlier transactions the chunk's snapshot missed, only those", () => {
    const recent = new RecentChanges(100);
    recent.touch(100, 1000n, "seen-before-low");
    // Committed (in the WAL) before the low watermark, still in the proc array when the chunk's snapshot was taken.
    recent.touch(103, 1100n, "missed-before-low");
    recent.touch(104, 1200n, "after-low");
    const snapshot = parseSnapshot("101:105:103,104");
    const drop = keysToDrop({ low: 1150n, touchedInWindow: new Set(["after-low", "window-only"]), snapshot }, recent);
    expect(drop).toEqual(new Set(["missed-before-low", "after-low", "window-only"]));
  });

  it("reads the chunk again when a transaction the snapshot missed may have been forgotten", () => {
    const recent = new RecentChanges(2);
    recent.touch(103, 1100n, "a");
    recent.touch(106, 1110n, "b");
    recent.touch(107, 1120n, "c"); // evicts xid 103's keys
    const missing103 = parseSnapshot("101:110:103");
    expect(keysToDrop({ low: 1150n, touchedInWindow: new Set(), snapshot: missing103 }, recent)).toBeNull();
    // The same history, with a snapshot that saw 103: nothing forgotten matters.
    const saw103 = parseSnapshot("104:110:");
    expect(keysToDrop({ low: 1150n, touchedInWindow: new Set(), snapshot: saw103 }, recent)).toEqual(new Set());
  });

  it("remembers every forgotten transaction as its ring grows, and finds one the snapshot missed wherever it sits", () => {
    const recent = new RecentChanges(1);
    // 5,000 transactions of one key each: each evicts the one before (the ring grows 1,024 -> 8,192).
    for (let i = 0; i < 5_000; i++) recent.touch(10_000 + i, BigInt(100_000 + i * 10), `k${i}`);
    const low = BigInt(100_000 + 5_000 * 10);
    // Seen by the snapshot: nothing forgotten matters; the last transaction's key is still remembered.
    expect(keysToDrop({ low, touchedInWindow: new Set(), snapshot: parseSnapshot("20000:20000:") }, recent)).toEqual(new Set());
    for (const missed of [10_000, 10_001, 11_023, 11_024, 12_500, 14_998]) {
      const snapshot = parseSnapshot(`${missed}:20000:${missed}`);
      expect(keysToDrop({ low, touchedInWindow: new Set(), snapshot }, recent)).toBeNull();
    }
    // Missed, but committed after the low watermark: the chunk's window set has it.
    const after = parseSnapshot("12500:20000:12500");
    expect(keysToDrop({ low: BigInt(100_000 + 2_500 * 10), touchedInWindow: new Set(), snapshot: after }, recent)).toEqual(new Set());
  });

  it("past 200,000 forgotten transactions keeps only the highest xid dropped, and reads a chunk again whose snapshot is not past it", () => {
    const recent = new RecentChanges(1);
    const n = 200_010;
    for (let i = 0; i < n; i++) recent.touch(1_000 + i, BigInt(1_000_000 + i), `k${i}`);
    // Evicted: the first n - 1; remembered: the last 200,000 of them; dropped: xids 1,000 .. 1,008.
    const low = BigInt(1_000_000 + n);
    const top = 1_000 + n;
    expect(keysToDrop({ low, touchedInWindow: new Set(), snapshot: parseSnapshot(`1008:${top}:`) }, recent)).toBeNull();
    expect(keysToDrop({ low, touchedInWindow: new Set(), snapshot: parseSnapshot(`1009:${top}:`) }, recent)).toEqual(new Set());
    expect(keysToDrop({ low, touchedInWindow: new Set(), snapshot: parseSnapshot(`1009:${top}:1009`) }, recent)).toBeNull();
  });

  it("a forgotten transaction after the low watermark does not force a re-read (the window set has its keys)", () => {
    const recent = new RecentChanges(1);
    recent.touch(200, 2000n, "x");
    recent.touch(201, 2100n, "y"); // evicts 200, which committed after the low watermark
    const s = parseSnapshot("199:200:");
    expect(keysToDrop({ low: 1900n, touchedInWindow: new Set(["x", "y"]), snapshot: s }, recent)).toEqual(new Set(["x", "y"]));
  });

  it("holds exactly the keys of the newest transactions within the bound, and a transaction larger than the bound whole", () => {
    // A model of the rule as plain objects: transactions evicted whole, oldest first, while the
    // keys held exceed the bound and a newer transaction is behind; never the newest.
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (const max of [1, 3, 50, 700]) {
      const recent = new RecentChanges(max);
      const model: { xid: number; lsn: bigint; keys: string[] }[] = [];
      let held = 0;
      let xid = 5_000;
      for (let t = 0; t < 3_000; t++) {
        xid++;
        const lsn = BigInt(10_000 + t * 7);
        // Mostly small transactions, now and then one of up to 2,500 rows (most of them larger than the bound).
        const n = rand(40) === 0 ? 1 + rand(2_500) : 1 + rand(4);
        const tx = { xid, lsn, keys: [] as string[] };
        model.push(tx);
        for (let k = 0; k < n; k++) {
          const key = `task_instance\u0001${xid}-${k}`;
          recent.touch(xid, lsn, key);
          tx.keys.push(key);
          held++;
          while (held > max && model.length > 1) held -= model.shift()!.keys.length;
        }
        if (n > 4 || t % 97 === 0) {
          // Every transaction in the window missed by the snapshot, and all before `low`.
          const s = { xmin: model[0]!.xid, xmax: xid + 1, xip: new Set(model.map((m) => m.xid)) };
          expect(recent.unseenBefore(lsn + 1n, s)).toEqual(new Set(model.flatMap((m) => m.keys)));
          // Only the newer half before `low`.
          const mid = model[Math.floor(model.length / 2)]!;
          expect(recent.unseenBefore(mid.lsn, s)).toEqual(new Set(model.filter((m) => m.lsn < mid.lsn).flatMap((m) => m.keys)));
        }
      }
    }
  });
});
