import { describe, expect, it } from "vitest";
import {
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  startDaemon,
  uniqueName,
  waitForStreaming,
  type AirflowMajor,
  type Consumed,
} from "../support/harness.js";
import { LoadGenerator, loadSeed, untilSentinels } from "../support/load.js";

/**
 * EVENTSTREAM_MODEL_THREAD moves decode, map and JSON to a worker thread; nothing a consumer sees
 * may change with it. Two daemons read the same WAL through slots of their own, one on one thread
 * and one with the model thread, into topics of their own: each partition must hold the same
 * records, byte for byte, in the same order (positions come from the WAL, so they are equal too).
 */
describe("the model thread (EVENTSTREAM_MODEL_THREAD)", () => {
  it("publishes the same records in the same order as one thread, from the same WAL", async () => {
    const major: AirflowMajor = "3";
    const db = uniqueName("mthread");
    const dags = Array.from({ length: 12 }, (_, i) => `dag_${String(i).padStart(2, "0")}`);
    await createDatabase(db, major);
    // One after the other: two daemons starting at once on one database race to create its
    // publication and their slots. Both slots exist before anything is written.
    const one = startDaemon(daemonConfig(db, { EVENTSTREAM_MODEL_THREAD: "false" }));
    const lines: string[] = [];
    let threaded: ReturnType<typeof startDaemon> | null = null;
    try {
      await waitForStreaming(db);
      threaded = startDaemon(
        daemonConfig(db, {
          EVENTSTREAM_MODEL_THREAD: "true",
          EVENTSTREAM_SLOT: `${db}_mt`,
          EVENTSTREAM_TOPIC: `${db}_mt.events`,
          EVENTSTREAM_CHECKPOINT_TOPIC: `checkpoints.${db}_mt`,
          EVENTSTREAM_STATE_TOPIC: `state.${db}_mt`,
        }),
        lines,
      );
      await waitForStreaming(`${db}_mt`);
      expect(lines.some((l) => l.includes("decoding and mapping on the model thread"))).toBe(true);
      const gen = new LoadGenerator({
        db,
        major,
        dags,
        workers: 3,
        tasksPerRun: 6,
        activePerWorker: 12,
        maxRowsPerTx: 4,
        runsPerWorker: 8,
        multiRowShare: 0.3,
        seed: loadSeed(),
      });
      gen.start();
      await gen.finished();
      await gen.commitSentinels();
      const [a, b] = await Promise.all([
        consume([`${db}.events`], untilSentinels(dags), 90_000),
        consume([`${db}_mt.events`], untilSentinels(dags), 90_000),
      ]);
      const byPartition = (all: Consumed[]) => {
        const parts = new Map<number, string[]>();
        for (const c of all) {
          const p = parts.get(c.partition) ?? [];
          p.push(`${c.key}\u0000${JSON.stringify(c.event)}`);
          parts.set(c.partition, p);
        }
        return [...parts.entries()].sort(([x], [y]) => x - y);
      };
      expect(a.length).toBeGreaterThan(gen.ledger.count / 2);
      expect(b.length).toBe(a.length);
      expect(byPartition(b)).toEqual(byPartition(a));
    } finally {
      await Promise.all([one.stop(), threaded?.stop()]);
      await dropDatabase(db);
    }
  });
});
