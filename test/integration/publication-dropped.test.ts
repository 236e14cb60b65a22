import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamEvent } from "../../src/airflow/events.js";
import {
  confirmedFlush,
  consume,
  createDatabase,
  daemonEnv,
  dropDatabase,
  spawnDaemon,
  startDaemon,
  daemonConfig,
  uniqueName,
  waitForStreaming,
  withPg,
  type DaemonProcess,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";

/**
 * DROP PUBLICATION under a running daemon. pgoutput decodes each change with the publication as of
 * the change's place in the WAL, so the changes after the DROP can never be decoded from the slot,
 * whatever is created later. The daemon must stop with the error that says so and what to do
 * (exit code 2), within a bounded number of session restarts, without creating the publication
 * over the slot and without acknowledging anything it did not deliver; and the steps it gives
 * must bring the stream back.
 */
describe("publication dropped while the daemon runs", () => {
  const db = uniqueName("pubdrop");
  const dag = "pub_dag";
  const key = { dag_id: dag, task_id: "extract", run_id: "r1" };
  const spawned: DaemonProcess[] = [];
  /** Session restarts that may precede the refusal: the failing session's own. */
  const MAX_RESTARTS = 1;

  beforeAll(async () => {
    await createDatabase(db, "3");
  });

  afterAll(async () => {
    for (const d of spawned) d.proc.kill("SIGKILL");
    await dropDatabase(db);
  });

  /** The daemon's exit code, or "restarting without end" once it has restarted more than MAX_RESTARTS times. */
  function outcome(d: DaemonProcess): Promise<number | null | "restarting without end"> {
    const restarts = () => d.output.filter((l) => /"level":40/.test(l) && /restart/i.test(l)).length;
    return new Promise((resolve) => {
      void d.exited.then(resolve);
      const check = () => {
        if (restarts() > MAX_RESTARTS) resolve("restarting without end");
      };
      d.proc.stdout!.on("data", check);
      d.proc.stderr!.on("data", check);
    });
  }

  const publicationExists = () =>
    withPg(db, async (c) => (await c.query("SELECT 1 FROM pg_publication WHERE pubname = $1", [db])).rowCount === 1);

  it("stops with PublicationDroppedError and the way to resume; creates nothing; acknowledges nothing after the DROP", async () => {
    const d = spawnDaemon(daemonEnv(db));
    spawned.push(d);
    await waitForStreaming(db);
    await withPg(db, async (c) => {
      await insertDagRun(c, "3", dag, "r1", "running");
      await insertTi(c, "3", key, { state: "running", try_number: 1 });
    });
    // Delivered before the DROP: the running transition.
    await consume([`${db}.events`], (all) => all.some((m) => m.event.type === "task_instance" && m.event.state === "running"));

    const dropped = await withPg(db, async (c) => {
      await c.query(`DROP PUBLICATION ${db}`);
      return BigInt(
        `0x${(await c.query<{ lsn: string }>("SELECT lpad(replace(pg_current_wal_lsn()::text, '/', ''), 16, '0') AS lsn")).rows[0]!.lsn}`,
      );
    });
    await withPg(db, (c) => updateTi(c, key, { state: "success" }));

    const end = await outcome(d);
    const out = d.output.join("\n");
    expect(end, out.slice(-3000)).toBe(2);
    expect(out).toContain(
      `airflow-eventstream: publication "${db}" was dropped while replication slot "${db}" still had WAL to decode with it`,
    );
    expect(out).toContain(`SELECT pg_drop_replication_slot('${db}');`);
    expect(out).toContain("airflow-eventstream reset-checkpoint");
    expect(out).toContain(`CREATE PUBLICATION "${db}" FOR TABLE "public"."task_instance", "public"."dag_run"`);
    expect(await publicationExists()).toBe(false);
    // The success update (after the DROP) was never delivered, so never acknowledged.
    expect((await confirmedFlush(db, db))! <= dropped).toBe(true);
  });

  it("a publication re-created by hand does not help: a start says so and stops, without restarting", async () => {
    const before = await confirmedFlush(db, db);
    await withPg(db, (c) => c.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run`));
    const d = spawnDaemon(daemonEnv(db));
    spawned.push(d);
    const end = await outcome(d);
    const out = d.output.join("\n");
    expect(end, out.slice(-3000)).toBe(2);
    expect(out).toContain("exists again: re-created after the DROP, which does not help");
    expect(out).toContain(`SELECT pg_drop_replication_slot('${db}');`);
    expect(await confirmedFlush(db, db)).toBe(before);
  });

  it("the steps the message gives resume the stream", async () => {
    await withPg(db, (c) => c.query("SELECT pg_drop_replication_slot($1)", [db]));
    const reset = spawnDaemon(daemonEnv(db), ["reset-checkpoint"]);
    spawned.push(reset);
    expect(await reset.exited, reset.output.join("\n")).toBe(0);
    const daemon = startDaemon(daemonConfig(db));
    try {
      await waitForStreaming(db);
      await withPg(db, (c) => updateTi(c, key, { state: "failed" }));
      const all = await consume([`${db}.events`], (got) => got.some((m) => m.event.type === "task_instance" && m.event.state === "failed"));
      const failed = all.map((m) => StreamEvent.parse(m.event)).find((e) => e.type === "task_instance" && e.state === "failed");
      expect(failed).toMatchObject({ dag_id: dag, task_id: "extract", op: "update" });
    } finally {
      await daemon.stop();
    }
  });
});
