import { describe, expect, it } from "vitest";
import { DagSequencer, type PositionStore } from "../../../src/consumer/sequencer.js";

/** An in-memory store that records its calls. */
function memoryStore(
  initial: Record<string, string> = {},
): PositionStore & { saved: [string, string][]; loads: number; map: Map<string, string> } {
  const m = new Map(Object.entries(initial));
  const store = {
    saved: [] as [string, string][],
    loads: 0,
    map: m,
    load: (dag: string) => {
      store.loads++;
      return Promise.resolve(m.get(dag) ?? null);
    },
    save: (dag: string, p: string) => {
      m.set(dag, p);
      store.saved.push([dag, p]);
      return Promise.resolve();
    },
  };
  return store;
}

const pos = (lsn: number, index = 0) => `${lsn.toString(16).toUpperCase().padStart(16, "0")}-${index.toString(16).padStart(8, "0")}`;

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe("DagSequencer", () => {
  it("delivers increasing positions and saves each after its handler", async () => {
    const store = memoryStore();
    const seq = new DagSequencer(store);
    const seen: string[] = [];
    for (const p of [pos(1), pos(1, 1), pos(2)]) {
      expect(
        await seq.offer("a", p, async () => {
          // The save of the previous one happened before this handler ran, not this one's.
          seen.push(`${p} saved:${store.saved.length}`);
        }),
      ).toBe("delivered");
    }
    expect(seen).toEqual([`${pos(1)} saved:0`, `${pos(1, 1)} saved:1`, `${pos(2)} saved:2`]);
    expect(store.saved).toEqual([
      ["a", pos(1)],
      ["a", pos(1, 1)],
      ["a", pos(2)],
    ]);
  });

  it("drops the same and lower positions, per DAG", async () => {
    const seq = new DagSequencer(memoryStore());
    const calls: string[] = [];
    const offer = (dag: string, p: string) => seq.offer(dag, p, async () => void calls.push(`${dag} ${p}`));
    expect(await offer("a", pos(5))).toBe("delivered");
    expect(await offer("a", pos(5))).toBe("duplicate");
    expect(await offer("a", pos(4, 9))).toBe("duplicate");
    // Another DAG has its own last position.
    expect(await offer("b", pos(3))).toBe("delivered");
    expect(await offer("a", pos(5, 1))).toBe("delivered");
    expect(calls).toEqual([`a ${pos(5)}`, `b ${pos(3)}`, `a ${pos(5, 1)}`]);
  });

  it("compares LSNs as numbers: 0x10 is above 0x9 though '10' < '9' as text would be misread in short forms", async () => {
    const seq = new DagSequencer(memoryStore({ a: pos(0x9) }));
    expect(await seq.offer("a", pos(0x10), async () => undefined)).toBe("delivered");
    expect(await seq.offer("a", pos(0xf), async () => undefined)).toBe("duplicate");
  });

  it("starts from the store's position (a restart) and reads it once until forget()", async () => {
    const store = memoryStore({ a: pos(7) });
    const seq = new DagSequencer(store);
    expect(await seq.offer("a", pos(6), async () => undefined)).toBe("duplicate");
    expect(await seq.offer("a", pos(8), async () => undefined)).toBe("delivered");
    expect(store.loads).toBe(1);
    // Another member (a rebalance) moved the DAG on in the shared store.
    store.map.set("a", pos(20));
    // The cache does not know yet ...
    expect(await seq.offer("a", pos(9), async () => undefined)).toBe("delivered");
    store.map.set("a", pos(20));
    // ... forget() makes it read the store again.
    seq.forget();
    expect(await seq.offer("a", pos(15), async () => undefined)).toBe("duplicate");
    expect(store.loads).toBe(2);
  });

  it("never runs one DAG's handlers concurrently, and runs different DAGs side by side", async () => {
    const seq = new DagSequencer(memoryStore());
    const gate = deferred();
    const log: string[] = [];
    const a1 = seq.offer("a", pos(1), async () => {
      log.push("a1 start");
      await gate.promise;
      log.push("a1 end");
    });
    const a2 = seq.offer("a", pos(2), async () => void log.push("a2"));
    // b does not wait for a's handler.
    await seq.offer("b", pos(1), async () => void log.push("b1"));
    expect(log).toEqual(["a1 start", "b1"]);
    gate.resolve();
    await Promise.all([a1, a2]);
    expect(log).toEqual(["a1 start", "b1", "a1 end", "a2"]);
  });

  it("orders offers made out of position order by arrival, dropping the late lower one", async () => {
    const seq = new DagSequencer(memoryStore());
    const gate = deferred();
    const log: string[] = [];
    const first = seq.offer("a", pos(10), async () => {
      await gate.promise;
      log.push("10");
    });
    const late = seq.offer("a", pos(9), async () => void log.push("9"));
    gate.resolve();
    expect(await first).toBe("delivered");
    expect(await late).toBe("duplicate");
    expect(log).toEqual(["10"]);
  });

  it("does not advance when the handler fails, and goes on with the next offer", async () => {
    const store = memoryStore();
    const seq = new DagSequencer(store);
    await expect(
      seq.offer("a", pos(1), async () => {
        throw new Error("handler failed");
      }),
    ).rejects.toThrow("handler failed");
    expect(store.saved).toEqual([]);
    expect(await seq.offer("a", pos(1), async () => undefined)).toBe("delivered");
  });

  it("rejects a position that is not in the source.position form", async () => {
    const seq = new DagSequencer(memoryStore());
    await expect(seq.offer("a", "0/16B3748", async () => undefined)).rejects.toThrow(/not a position/);
  });
});
