import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamEvent } from "../../src/airflow/events.js";
import { confirmedFlush, consume, createDatabase, daemonConfig, daemonEnv, dropDatabase, spawnDaemon, startDaemon, uniqueName, waitFor, withPg } from "../support/harness.js";
import { insertDagRun, insertTi, setXCom, updateTi } from "../support/airflow-rows.js";

/**
 * An event larger than Kafka accepts is never dropped silently: by default the daemon stops with an
 * error naming the row (and acknowledges nothing after it); with a dead-letter topic a summary goes
 * there, in order, and the stream goes on.
 */
describe("oversized events", () => {
  const db = uniqueName("oversize");
  const dag = "big_dag";
  const key = { dag_id: dag, task_id: "export", run_id: "r1" };
  let runId = 0;

  beforeAll(async () => {
    await createDatabase(db, "3");
    await withPg(db, async (c) => {
      await c.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run, xcom`);
      await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [db]);
      runId = await insertDagRun(c, "3", dag, "r1", "running");
      await insertTi(c, "3", key, { state: "running", try_number: 1 });
      await setXCom(c, "3", runId, key, "eventstream", { request_id: "big", payload: { blob: "x".repeat(5000) } });
      await updateTi(c, key, { state: "success" });
    });
  });

  afterAll(async () => {
    await dropDatabase(db);
  });

  it("stops, naming the row, and acknowledges nothing from that transaction on", async () => {
    const d = spawnDaemon(daemonEnv(db, { EVENTSTREAM_MAX_MESSAGE_BYTES: "2000" }));
    expect(await d.exited).toBe(2);
    const out = d.output.join("\n");
    const m = /dag_id=big_dag task_id=export run_id=r1 \(position ([0-9A-F]{16})-[0-9A-F]{8}\) is \d+ bytes, over EVENTSTREAM_MAX_MESSAGE_BYTES=2000/.exec(out);
    expect(m, out).not.toBeNull();
    expect(out).toContain("EVENTSTREAM_DEAD_LETTER_TOPIC");
    // The slot stays before the oversized transaction's commit, so it is read again on restart.
    const commitLsn = BigInt(`0x${m![1]}`);
    expect((await confirmedFlush(db, db))! <= commitLsn).toBe(true);
  });

  it("with a dead-letter topic, sends a summary there in the event's place and goes on", async () => {
    const dlq = `${db}.dlq`;
    const daemon = startDaemon(daemonConfig(db, { EVENTSTREAM_MAX_MESSAGE_BYTES: "2000", EVENTSTREAM_DEAD_LETTER_TOPIC: dlq }));
    try {
      const main = await consume([`${db}.events`], (all) => all.some((m) => m.event.type === "task_instance" && m.event.state === "success"));
      // The first test's daemon published what came before the oversized event; what it had not
      // acknowledged comes again, with the same positions: de-duplicate as consumers do.
      const seen = new Set<string>();
      const events = main.map((m) => StreamEvent.parse(m.event)).filter((e) => !seen.has(e.source.position) && seen.add(e.source.position));
      expect(events.map((e) => e.type)).toEqual(["dag_run", "task_instance", "task_instance"]);
      const dead = await consume([dlq], (all) => all.length >= 1);
      const summary = dead[0]!.event as unknown as Record<string, unknown>;
      expect(summary).toMatchObject({ reason: "message_too_large", limit: 2000, type: "notification", dag_id: dag, task_id: "export", run_id: "r1" });
      expect(summary.bytes as number).toBeGreaterThan(5000);
      expect(dead[0]!.key).toBe(dag);
      // In order: the summary's position lies between the running insert and the success.
      const pos = (summary.source as { position: string }).position;
      expect(pos > events[1]!.source.position && pos < events[2]!.source.position).toBe(true);
      await waitFor("the slot to pass the oversized transaction", async () => {
        const { rows } = await withPg("postgres", (c) => c.query<{ behind: boolean }>("SELECT confirmed_flush_lsn < pg_current_wal_lsn() AS behind FROM pg_replication_slots WHERE slot_name = $1", [db]));
        return rows[0]?.behind === false;
      }, 20_000);
    } finally {
      await daemon.stop();
    }
  });
});
