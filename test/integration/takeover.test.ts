import { afterAll, describe, expect, it } from "vitest";
import { TaskInstanceEvent } from "../../src/airflow/events.js";
import { consume, createDatabase, daemonEnv, dropDatabase, pgClient, spawnDaemon, uniqueName, withPg } from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";

/**
 * Two daemons on one slot: one streams, the other waits and says so. Kill the active one and the
 * standby takes over within seconds, from the slot's position, with nothing lost.
 */
describe("standby daemon on the same slot", () => {
  const db = uniqueName("takeover");
  afterAll(async () => {
    await dropDatabase(db);
  });

  it("waits while the slot is held, takes over within seconds of a SIGKILL, loses nothing", async () => {
    await createDatabase(db, "2");
    const env = daemonEnv(db);
    const active = spawnDaemon(env);
    await active.waitForLog(/"streaming"/);
    const standby = spawnDaemon(env);
    try {
      await standby.waitForLog(/replication slot in use by another connection; waiting for it/);
      expect(standby.output.some((l) => l.includes('"streaming"'))).toBe(false);

      const c = pgClient(db);
      await c.connect();
      await insertDagRun(c, "2", "td", "r");
      const tasks = Array.from({ length: 20 }, (_, i) => `t${i}`);
      const states = ["scheduled", "queued", "running", "success"];
      let killedAt = 0;
      let tookOverMs = -1;
      for (const [i, t] of tasks.entries()) {
        await insertTi(c, "2", { dag_id: "td", task_id: t, run_id: "r" });
        for (const state of states)
          await updateTi(c, { dag_id: "td", task_id: t, run_id: "r" }, { state, ...(state === "scheduled" ? { try_number: 1 } : {}) });
        if (i === 9) {
          active.proc.kill("SIGKILL");
          killedAt = Date.now();
          void standby.waitForLog(/"streaming"/, 30_000).then(() => (tookOverMs = Date.now() - killedAt));
        }
      }
      await c.end();
      await standby.waitForLog(/"streaming"/, 30_000);
      expect(tookOverMs).toBeGreaterThanOrEqual(0);
      expect(tookOverMs).toBeLessThan(10_000);
      console.log(`standby took over ${tookOverMs} ms after the SIGKILL`);

      const all = await consume(
        [`${db}.events`],
        (got) =>
          new Set(got.flatMap((m) => (m.event.type === "task_instance" && m.event.state === "success" ? [m.event.task_id] : []))).size >=
          tasks.length,
        60_000,
      );
      const byPos = new Map<string, TaskInstanceEvent>();
      for (const m of all) if (m.event.type === "task_instance") byPos.set(m.event.source.position, TaskInstanceEvent.parse(m.event));
      for (const t of tasks) {
        const seq = [...byPos.values()].filter((e) => e.task_id === t).map((e) => e.state);
        expect(seq, t).toEqual([null, ...states]);
      }
    } finally {
      active.proc.kill("SIGKILL");
      standby.proc.kill("SIGTERM");
      await standby.exited;
    }
    // The standby, now active, had the slot: the table records nothing else holding it.
    const holders = await withPg(
      "postgres",
      async (p) => (await p.query("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active", [db])).rowCount,
    );
    expect(holders).toBe(0);
  });
});
