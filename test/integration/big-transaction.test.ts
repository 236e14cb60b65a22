import { describe, expect, it } from "vitest";
import { consume, createDatabase, daemonEnv, dropDatabase, spawnDaemon, uniqueName, withPg } from "../support/harness.js";
import { memoryOf } from "../support/load.js";

/**
 * One PostgreSQL transaction updating 200,000 task instances: the daemon (its own process, in-flight
 * caps 5,000 events / 8 MB) delivers every event, once per TI, with bounded memory.
 *
 * RSS bound: the daemon runs as shipped (bin/airflow-eventstream: V8 old space capped at 60 MB, young
 * generation 3 x 2 MB, glibc malloc tuned) and idles at ~80 MB RSS. The in-flight caps bound what it
 * holds of the transaction (8 MB of serialized events plus their objects); the state cache (50k rows by
 * default, ~305 B each) is full after the first 50k rows. Measured peak 174 MB; before the launcher's
 * limits and the compact cache it was 494 MB. The bound is the product's memory bar, 200 MB.
 * BIGTX_CACHE=<n> overrides EVENTSTREAM_STATE_CACHE_SIZE to separate the cache's share.
 */

const ROWS = 200_000;
const DAGS = 50;
const RSS_BOUND_MB = 200;
/**
 * No bound on time here: how long 200,000 events take depends on the machine and its load (120 s
 * was exceeded on a shared 2-core machine), and speed is the benchmark's to measure. These limits
 * only stop a run that hangs, far above any plausible duration.
 */
const HANG_GUARD_MS = 25 * 60_000;

describe("a very large transaction", () => {
  it(`one UPDATE of ${ROWS} task instances: every event delivered, RSS bounded`, { timeout: HANG_GUARD_MS + 5 * 60_000 }, async () => {
    const db = uniqueName("bigtx");
    await createDatabase(db, "3");
    const t0 = Date.now();
    await withPg(db, async (c) => {
      for (let d = 0; d < DAGS; d++) {
        await c.query(
          `INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number, span_status) VALUES ($1, 'r1', now(), now(), 'running', 'manual', 0, 'not_started')`,
          [`big_${d}`],
        );
      }
      const batch = 20_000;
      for (let start = 0; start < ROWS; start += batch) {
        await c.query(
          `INSERT INTO task_instance (id, dag_id, task_id, run_id, map_index, state, try_number, max_tries, pool, pool_slots, queue, operator, priority_weight)
           SELECT gen_random_uuid(), 'big_' || (i % ${DAGS}), 'task_' || i, 'r1', -1, NULL, 0, 0, 'default_pool', 1, 'default', 'PythonOperator', 1
             FROM generate_series($1::int, $2::int) AS i`,
          [start, Math.min(ROWS, start + batch) - 1],
        );
      }
    });
    const insertMs = Date.now() - t0;
    const d = spawnDaemon(
      daemonEnv(db, {
        EVENTSTREAM_MAX_INFLIGHT_EVENTS: "5000",
        EVENTSTREAM_MAX_INFLIGHT_BYTES: "8000000",
        EVENTSTREAM_TOPIC_PARTITIONS: "6",
        ...(process.env.BIGTX_CACHE ? { EVENTSTREAM_STATE_CACHE_SIZE: process.env.BIGTX_CACHE } : {}),
      }),
    );
    const pid = d.proc.pid!;
    let peak = 0;
    let idle = 0;
    const sampler = setInterval(() => {
      const m = memoryOf(pid);
      if (m) peak = Math.max(peak, m.rssMb);
    }, 200);
    try {
      await d.waitForLog(/"msg":"streaming"/, HANG_GUARD_MS);
      idle = memoryOf(pid)?.rssMb ?? 0;
      const t1 = Date.now();
      await withPg(db, (c) => c.query("UPDATE task_instance SET state = 'scheduled', try_number = 1"));
      const updateMs = Date.now() - t1;
      const seen = new Map<string, number>();
      let updates = 0;
      const got = await consume(
        [`${db}.events`],
        (all) => {
          for (; updates < all.length; updates++) {
            const e = all[updates]!.event;
            if (e.type === "task_instance" && e.op === "update") seen.set(e.task_id, (seen.get(e.task_id) ?? 0) + 1);
          }
          return seen.size >= ROWS;
        },
        { timeoutMs: HANG_GUARD_MS, waitingFor: `an update event of each of the ${ROWS} task instances`, daemon: d },
      );
      const deliverMs = Date.now() - t1;
      const bad = got.filter(
        (m) => m.event.type !== "task_instance" || m.event.op !== "update" || m.event.state !== "scheduled" || m.event.try_number !== 1,
      );
      const twice = [...seen.values()].filter((n) => n !== 1).length;
      const xids = new Set(got.map((m) => m.event.source.xid));
      console.log(
        `big transaction: inserted ${ROWS} TIs in ${insertMs} ms; UPDATE took ${updateMs} ms; ${got.length} events read, ${seen.size} distinct TIs, ` +
          `${twice} TIs not exactly once, all delivered ${deliverMs} ms after the UPDATE began; daemon RSS idle ${idle.toFixed(0)} MB, peak ${peak.toFixed(0)} MB (bound ${RSS_BOUND_MB} MB)`,
      );
      expect(bad.length).toBe(0);
      expect(seen.size).toBe(ROWS);
      for (let i = 0; i < ROWS; i++) if (!seen.has(`task_${i}`)) throw new Error(`task_${i} missing`);
      expect(twice).toBe(0);
      expect(xids.size).toBe(1);
      expect(peak).toBeLessThan(RSS_BOUND_MB);
      d.proc.kill("SIGTERM");
      expect(await d.exited).toBe(0);
    } finally {
      clearInterval(sampler);
      if (d.proc.exitCode === null && d.proc.signalCode === null) d.proc.kill("SIGKILL");
      await dropDatabase(db);
    }
  });
});
