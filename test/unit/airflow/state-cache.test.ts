import { describe, expect, it } from "vitest";
import { LruCache } from "../../../src/airflow/state-cache.js";

function keys(c: LruCache<number>, all: string[]): string[] {
  return all.filter((k) => c.get(k) !== undefined);
}

describe("LruCache", () => {
  it("evicts the least recently touched entry, a read counting as a touch", () => {
    const c = new LruCache<number>(3);
    c.set("a", 1);
    c.set("b", 2);
    c.set("c", 3);
    expect(c.get("a")).toBe(1); // order now b, c, a
    c.set("d", 4); // evicts b
    expect(c.size).toBe(3);
    const left = new LruCache<number>(3);
    for (const [k, v] of [
      ["c", 3],
      ["a", 1],
      ["d", 4],
    ] as const)
      left.set(k, v);
    expect(keys(c, ["a", "b", "c", "d"])).toEqual(keys(left, ["a", "b", "c", "d"]));
  });

  it("keeps a read-then-written entry newest, with the written value", () => {
    const c = new LruCache<number>(2);
    c.set("a", 1);
    c.set("b", 2);
    expect(c.get("a")).toBe(1);
    c.set("a", 10); // the mapper's pattern: read the row's entry, then write it
    c.set("c", 3); // evicts b, not a
    expect(c.get("b")).toBeUndefined();
    expect(c.get("a")).toBe(10);
    expect(c.get("c")).toBe(3);
  });

  it("forgets a deleted newest key, and a capacity of one holds the last write", () => {
    const c = new LruCache<number>(1);
    c.set("a", 1);
    c.delete("a");
    c.set("a", 2);
    expect(c.get("a")).toBe(2);
    c.set("b", 3);
    expect(c.get("a")).toBeUndefined();
    expect(c.get("b")).toBe(3);
    expect(c.size).toBe(1);
    c.clear();
    c.set("b", 4);
    expect(c.size).toBe(1);
  });
});
