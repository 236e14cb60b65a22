import { describe, expect, it } from "vitest";
import { searchPartition, searchTopic } from "../../../src/backfill/offsets.js";
import type { ProbeHit, RecordSource } from "../../../src/backfill/probe.js";
import { formatMicros, parseTarget, parseTimeMicros, recordKey, type RecordKey } from "../../../src/backfill/target.js";
import { RetentionError, TargetError } from "../../../src/errors.js";
import { formatPosition } from "../../../src/lsn.js";

/** One offset of a fake partition: an event, a record without a position, or nothing readable (a marker, an aborted record). */
type Slot = { lsn: bigint; index: number; micros: bigint } | "junk" | "marker";

function event(lsn: bigint, index: number, micros: bigint): Buffer {
  const position = formatPosition({ commitLsn: lsn, index });
  return Buffer.from(JSON.stringify({ type: "dag_run", source: { position, commit_time: formatMicros(micros) } }));
}

/** A RecordSource over arrays: what a read_committed consumer would return, offset by offset. */
function fakeSource(partitions: Slot[][], bases: bigint[] = []): RecordSource & { reads: number } {
  const src = {
    reads: 0,
    first(_topic: string, partition: number, from: bigint, before: bigint, accept: (k: RecordKey) => boolean): Promise<ProbeHit | null> {
      const slots = partitions[partition]!;
      const base = bases[partition] ?? 0n;
      for (let o = from; o < before; o++) {
        src.reads++;
        const s = slots[Number(o - base)];
        if (s === undefined || s === "marker") continue;
        const key = recordKey(s === "junk" ? Buffer.from("not json") : event(s.lsn, s.index, s.micros));
        if (key !== null && accept(key)) return Promise.resolve({ offset: o, key });
      }
      return Promise.resolve(null);
    },
    close: () => Promise.resolve(),
  };
  return src;
}

const T0 = parseTimeMicros("2026-11-25T08:00:00Z")!;

/** A partition of n events (LSNs 100, 110, ...; 3 per transaction), with junk and markers sprinkled in. */
function partition(n: number, every = 7): Slot[] {
  const out: Slot[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ lsn: 100n + 10n * BigInt(Math.floor(i / 3)), index: i % 3, micros: T0 + BigInt(i) * 1000n });
    if (i % every === 0) out.push("marker");
    if (i % (every * 3) === 1) out.push("junk");
  }
  return out;
}

/** The expected answer by a linear scan: just past the last positioned record before the target. */
function linear(slots: Slot[], before: (s: Exclude<Slot, string>) => boolean): bigint {
  let last = -1;
  slots.forEach((s, i) => {
    if (typeof s !== "string" && before(s)) last = i;
  });
  return BigInt(last + 1);
}

describe("parseTarget", () => {
  it("reads a position, an LSN (index 0) and times with a zone", () => {
    expect(parseTarget("00000016B374D848-00000003")).toMatchObject({ kind: "position", position: { commitLsn: 0x16b374d848n, index: 3 } });
    expect(parseTarget("16/B374D848")).toMatchObject({ kind: "position", position: { commitLsn: 0x16b374d848n, index: 0 } });
    expect(parseTarget("2026-11-25T08:17:27.123456Z")).toMatchObject({ kind: "time", micros: 1795594647123456n });
    expect(parseTarget("2026-11-25T10:17:27.123456+02:00")).toMatchObject({ kind: "time", micros: 1795594647123456n });
    expect(parseTarget("2026-11-25")).toMatchObject({ kind: "time", micros: 1795564800000000n });
  });

  it("refuses what is none of them, a time without a zone, and dates that do not exist", () => {
    for (const bad of ["", "yesterday", "16/", "2026-11-25T08:17:27", "2026-02-30", "0000-0000", "00000016B374D848-3"])
      expect(() => parseTarget(bad), bad).toThrow(TargetError);
  });

  it("formats microseconds back exactly", () => {
    expect(formatMicros(parseTimeMicros("2026-11-25T08:17:27.000001Z")!)).toBe("2026-11-25T08:17:27.000001Z");
  });
});

describe("the offset search", () => {
  const slots = partition(1000);

  it("finds the first offset at or after every position, LSN and time, as a linear scan does", async () => {
    const src = fakeSource([slots]);
    for (let i = 0; i < slots.length; i += 13) {
      const s = slots[i]!;
      if (typeof s === "string") continue;
      for (const [text, before] of [
        [
          formatPosition({ commitLsn: s.lsn, index: s.index }),
          (x: Exclude<Slot, string>) => x.lsn < s.lsn || (x.lsn === s.lsn && x.index < s.index),
        ],
        [`0/${s.lsn.toString(16)}`, (x: Exclude<Slot, string>) => x.lsn < s.lsn],
        [formatMicros(s.micros), (x: Exclude<Slot, string>) => x.micros < s.micros],
      ] as const) {
        const got = await searchPartition(src, "t", 0, 0n, BigInt(slots.length), parseTarget(text));
        expect(got.offset, text).toBe(linear(slots, before));
        expect(got.probes, text).toBeLessThanOrEqual(12);
      }
    }
  });

  it("gives the start for a target before everything and the end for one after everything", async () => {
    const src = fakeSource([slots]);
    expect((await searchPartition(src, "t", 0, 0n, BigInt(slots.length), parseTarget("0/1"))).offset).toBe(0n);
    expect((await searchPartition(src, "t", 0, 0n, BigInt(slots.length), parseTarget("FF/0"))).offset).toBe(BigInt(slots.length));
    expect((await searchPartition(src, "t", 0, 0n, 0n, parseTarget("0/1"))).offset).toBe(0n);
  });

  it("passes over stretches with nothing readable (a long aborted transaction) and junk at the ends", async () => {
    const s: Slot[] = ["junk", ...Array<Slot>(500).fill("marker"), ...partition(50), ...Array<Slot>(300).fill("junk")];
    const src = fakeSource([s]);
    const target = parseTarget(formatPosition({ commitLsn: 100n + 10n * 5n, index: 0 }));
    const got = await searchPartition(src, "t", 0, 0n, BigInt(s.length), target);
    expect(got.offset).toBe(linear(s, (x) => x.lsn < 150n));
    expect((await searchPartition(src, "t", 0, 0n, BigInt(s.length), parseTarget("FF/0"))).offset).toBe(linear(s, () => true));
  });

  it("is a RetentionError naming the oldest event per partition when records at or after the target were deleted", async () => {
    // Partition 0 lost its first 100 offsets; partition 1 never did (earliest 0): only 0 is named.
    const shifted = fakeSource([slots.slice(100), slots], [100n, 0n]);
    const ranges = [
      { partition: 0, earliest: 100n, end: BigInt(slots.length) },
      { partition: 1, earliest: 0n, end: BigInt(slots.length) },
    ];
    const oldest = slots.slice(100).find((s) => typeof s !== "string") as Exclude<Slot, string>;
    const err = await searchTopic(shifted, "events", ranges, parseTarget("0/64")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetentionError);
    const msg = (err as Error).message;
    expect(msg).toContain(
      `partition 0: ${formatPosition({ commitLsn: oldest.lsn, index: oldest.index })} (committed ${formatMicros(oldest.micros)})`,
    );
    expect(msg).not.toContain("partition 1:");
    // The oldest retained event itself is still there: not an error.
    const ok = await searchTopic(shifted, "events", ranges, parseTarget(formatPosition({ commitLsn: oldest.lsn, index: oldest.index })));
    expect(ok[0]!.offset).toBe(
      100n + linear(slots.slice(100), (x) => x.lsn < oldest.lsn || (x.lsn === oldest.lsn && x.index < oldest.index)),
    );
    // Before the first event ever published (earliest 0): the start, no error.
    expect((await searchTopic(shifted, "events", ranges.slice(1), parseTarget("0/1")))[0]!.offset).toBe(0n);
  });

  it("after restarts that published a tail again, reading from the offset found for any position misses no event at or after it", async () => {
    // What an at-least-once daemon writes to a partition: each record is the stream's next event,
    // or a step back to where a restarted daemon's replay began (the slot's position, never past
    // what Kafka holds), killed again mid-replay sometimes; the last replay runs past every earlier
    // high. Positions are then not monotonic, but never skip forward, so whichever rising edge the
    // binary search lands on is followed by every later event (the consumer drops the copies).
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return Math.floor((seed / 2 ** 31) * n);
    };
    for (let round = 0; round < 20; round++) {
      const indices: number[] = [];
      let cur = -1;
      let high = -1;
      while (indices.length < 400) {
        if (cur > 5 && rand(40) === 0) cur -= 1 + rand(Math.min(cur, 30));
        else cur++;
        indices.push(cur);
        high = Math.max(high, cur);
      }
      while (cur < high + 5) indices.push(++cur);
      const slots: Slot[] = indices.map((i) => ({ lsn: 100n + 10n * BigInt(i), index: 0, micros: T0 }));
      const src = fakeSource([slots]);
      for (let target = 0; target <= cur; target += 3) {
        const text = formatPosition({ commitLsn: 100n + 10n * BigInt(target), index: 0 });
        const got = await searchPartition(src, "t", 0, 0n, BigInt(slots.length), parseTarget(text));
        const read = new Set(indices.slice(Number(got.offset)));
        const missed = Array.from({ length: cur - target + 1 }, (_, k) => target + k).filter((i) => !read.has(i));
        expect(missed, `round ${round}, target ${target}, start ${got.offset}`).toEqual([]);
      }
    }
  });

  it("reports a partition emptied by retention instead of failing on it", async () => {
    const got = await searchTopic(fakeSource([[]]), "events", [{ partition: 0, earliest: 40n, end: 40n }], parseTarget("0/1"));
    expect(got[0]).toMatchObject({ offset: 40n, emptied: true, oldest: null });
  });
});
