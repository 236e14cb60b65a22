import { describe, expect, it } from "vitest";
import { LruCache } from "../../../src/airflow/state-cache.js";
import { OffHeapLru } from "../../../src/airflow/state-table.js";
import { NO_ENTRY, TiStateTable } from "../../../src/airflow/ti-states.js";

/** A small deterministic generator (xorshift32), so a failure replays. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** Keys of every kind the arena stores: empty, short, slot-sized, long, non-Latin-1, lone surrogates. */
function keyPool(n: number, r: () => number): string[] {
  const odd = ["", "é", "日本語のタスク", "\ud83d\ude00 emoji", "\ud800 lone", "ÿ\u00ff\u0100", "x".repeat(24), "y".repeat(23) + "\u0101"];
  const keys = new Set<string>(odd);
  while (keys.size < n) {
    const len = Math.floor(r() * 120);
    let k = "";
    for (let i = 0; i < len; i++)
      k += r() < 0.95 ? String.fromCharCode(32 + Math.floor(r() * 90)) : String.fromCharCode(Math.floor(r() * 0x10000));
    keys.add(k);
  }
  return [...keys];
}

describe("OffHeapLru", () => {
  it("holds what a Map-based LRU of the same capacity holds, in the same order, over random operations", () => {
    for (const [seed, capacity, poolSize] of [
      [1, 7, 30],
      [2, 100, 400],
      [3, 1500, 4000], // past the first allocation (1,024 entries): the arrays, the index and the arena grow
    ] as const) {
      const r = rng(seed);
      const pool = keyPool(poolSize, r);
      const model = new LruCache<[number, string | null]>(capacity);
      const table = new OffHeapLru(capacity, { numbers: 1, strings: 1 });
      for (let step = 0; step < 30_000; step++) {
        const key = pool[Math.floor(r() * pool.length)]!;
        const op = r();
        if (op < 0.45) {
          const want = model.get(key);
          const e = table.find(key, true);
          expect(e === NO_ENTRY ? undefined : [table.number(e, 0), table.string(e, 1)]).toEqual(want);
          if (e !== NO_ENTRY) expect(table.string(e, 0)).toBe(key);
        } else if (op < 0.9) {
          const v: [number, string | null] = [step, r() < 0.2 ? null : pool[Math.floor(r() * pool.length)]!];
          model.set(key, v);
          const e = table.upsert(key);
          table.setNumber(e, 0, v[0]);
          table.setString(e, 1, v[1]);
        } else if (op < 0.99) {
          model.delete(key);
          table.delete(key);
        } else {
          model.clear();
          table.clear();
        }
        expect(table.size).toBe(model.size);
      }
      // Same keys, oldest first: the model's order is its Map's.
      const modelKeys = [...(model as unknown as { map: Map<string, unknown> }).map.keys()];
      expect([...table.keysOldestFirst()]).toEqual(modelKeys);
    }
  });

  it("keeps a second index on string column 1: the entry last given a string, until that entry goes", () => {
    const r = rng(7);
    const pool = keyPool(300, r);
    const names = keyPool(40, rng(8));
    const capacity = 60;
    const model = new LruCache<string | null>(capacity);
    /** name -> the key of the entry last given it */
    const byName = new Map<string, string>();
    const order = (model as unknown as { map: Map<string, string | null> }).map;
    const gone = (key: string): void => {
      const n = order.get(key); // not model.get: that would touch it
      if (n !== undefined && n !== null && byName.get(n) === key) byName.delete(n);
    };
    const table = new OffHeapLru(capacity, { numbers: 0, strings: 1, secondIndex: true });
    for (let step = 0; step < 40_000; step++) {
      const key = pool[Math.floor(r() * pool.length)]!;
      const op = r();
      if (op < 0.6) {
        const name = r() < 0.1 ? null : names[Math.floor(r() * names.length)]!;
        if (!order.has(key) && order.size === capacity) gone(order.keys().next().value!);
        if (order.has(key)) gone(key);
        model.set(key, name);
        if (name !== null) byName.set(name, key);
        table.setString(table.upsert(key), 1, name);
      } else if (op < 0.7) {
        if (order.has(key)) gone(key);
        model.delete(key);
        table.delete(key);
      } else if (op < 0.995) {
        const name = names[Math.floor(r() * names.length)]!;
        const e = table.findBy(name);
        expect(e === NO_ENTRY ? undefined : table.string(e, 0)).toBe(byName.get(name));
      } else {
        model.clear();
        byName.clear();
        table.clear();
      }
    }
  });

  it("compares strings in the arena exactly: length, a unit at a slot's edge, units past Latin-1", () => {
    const t = new OffHeapLru(10, { numbers: 0, strings: 1 });
    const e = t.add("k");
    for (const v of ["a".repeat(24), "a".repeat(23) + "\u0100", "\u0100".repeat(9), "\uffff", "ÿ"]) {
      t.setString(e, 1, v);
      expect(t.stringIs(e, 1, v)).toBe(true);
      expect(t.string(e, 1)).toBe(v);
      expect(t.stringIs(e, 1, v + "a")).toBe(false);
      expect(t.stringIs(e, 1, v.slice(0, -1) + "b")).toBe(false);
      expect(t.stringIs(e, 1, null)).toBe(false);
    }
    t.setString(e, 1, null);
    expect(t.string(e, 1)).toBeNull();
    expect(t.stringIs(e, 1, null)).toBe(true);
    expect(t.stringIs(e, 1, "")).toBe(false);
    t.setString(e, 1, "");
    expect(t.string(e, 1)).toBe("");
    expect(() => t.setString(e, 0, "other")).toThrow(/key/);
  });

  it("reuses freed slots: a table churned far past its capacity does not grow its arena without bound", () => {
    const t = new OffHeapLru(50, { numbers: 0, strings: 1 });
    for (let i = 0; i < 200_000; i++) t.setString(t.upsert(`row-${i}`.padEnd(60, "x")), 1, `name-${i}`.repeat(3));
    expect(t.size).toBe(50);
    // 50 entries of ~60 + ~30 bytes in 24-byte slots: a few hundred slots, never 200,000 rows' worth.
    expect(t.bytes).toBeLessThan(64 * 1024);
  });
});

describe("TiStateTable", () => {
  it("reads back Airflow's states as written, an odd state and null included, and the name", () => {
    const t = new TiStateTable(3);
    t.set("id1", { key: "d\u0000t\u0000r\u0000-1", mapIndex: -1, state: "running", tryNumber: 1 });
    t.set("id2", { key: "d\u0000u\u0000r\u00003", mapIndex: 3, state: "a state of a plugin", tryNumber: null });
    t.set("id3", { key: "d\u0000v\u0000r\u0000-1", mapIndex: -1, state: null, tryNumber: 0 });
    expect(t.get("id1")).toEqual({ key: "d\u0000t\u0000r\u0000-1", mapIndex: -1, state: "running", tryNumber: 1 });
    expect(t.get("id2")).toEqual({ key: "d\u0000u\u0000r\u00003", mapIndex: 3, state: "a state of a plugin", tryNumber: null });
    expect(t.get("id3")).toEqual({ key: "d\u0000v\u0000r\u0000-1", mapIndex: -1, state: null, tryNumber: 0 });
    const e = t.find("id2");
    // The name's own index: found by the whole name, not by a near one.
    expect(t.tryByName("d\u0000u\u0000r\u00003")).toBeNull();
    expect(t.tryByName("d\u0000u\u0000r\u00004")).toBeUndefined();
    t.write(e, { mapIndex: 3, state: "success", tryNumber: 2 });
    expect(t.values(e)).toEqual({ mapIndex: 3, state: "success", tryNumber: 2 });
    t.write(e, { mapIndex: 3, state: "another odd one", tryNumber: 2 });
    expect(t.values(e).state).toBe("another odd one");
    t.set("id4", { key: "n4", mapIndex: -1, state: "queued", tryNumber: 1 }); // evicts id1, the oldest touched
    expect(t.get("id1")).toBeUndefined();
    expect(t.size).toBe(3);
  });

  it("finds a row by its name: the entry last given the name, a try of null apart from 0 and from none", () => {
    const t = new TiStateTable(4);
    t.set("id-a", { key: "n1", mapIndex: -1, state: "running", tryNumber: null });
    t.set("id-b", { key: "n2", mapIndex: -1, state: "running", tryNumber: 0 });
    expect(t.tryByName("n1")).toBeNull();
    expect(t.tryByName("n2")).toBe(0);
    expect(t.tryByName("n3")).toBeUndefined();
    // A retry: the same name under a new id; the old entry goes later (or never), the name follows the new one.
    t.set("id-c", { key: "n1", mapIndex: -1, state: "queued", tryNumber: 2 });
    expect(t.tryByName("n1")).toBe(2);
    t.delete("id-a");
    expect(t.tryByName("n1")).toBe(2);
    t.delete("id-c");
    expect(t.tryByName("n1")).toBeUndefined();
  });
});
