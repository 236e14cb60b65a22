import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamEvent, TableTruncatedEvent } from "../../src/airflow/events.js";
import { PublicationError } from "../../src/errors.js";
import {
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  startDaemon,
  uniqueName,
  waitForStreaming,
  withPg,
  type Consumed,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";

/**
 * TRUNCATE of a captured table under a running daemon: no per-row events exist for it, so a
 * table_truncated event says all state of the table is void. It reaches every partition of the
 * event topic (a consumer of any partition must see it), between the events committed before it
 * and those after; rows written afterwards are published as new rows.
 */
describe("TRUNCATE task_instance while the daemon runs", () => {
  const db = uniqueName("truncate");
  const topic = `${db}.events`;
  /** daemonEnv's EVENTSTREAM_TOPIC_PARTITIONS. */
  const PARTITIONS = 3;
  // Enough DAGs that their keys cover more than one partition, so order is checked on several.
  const dags = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
  let daemon: ReturnType<typeof startDaemon>;

  beforeAll(async () => {
    await createDatabase(db, "3");
    daemon = startDaemon(daemonConfig(db));
    await waitForStreaming(db);
  });

  afterAll(async () => {
    await daemon?.stop();
    await dropDatabase(db);
  });

  it("publishes table_truncated once to every partition, in order; later inserts are inserts", async () => {
    await withPg(db, async (c) => {
      for (const dag of dags) {
        await insertDagRun(c, "3", dag, "r1", "running");
        await insertTi(c, "3", { dag_id: dag, task_id: "t", run_id: "r1" }, { state: "running", try_number: 1 });
      }
      await c.query("TRUNCATE task_instance CASCADE");
      // The same task instance again, written anew, then a transition of it.
      await insertTi(c, "3", { dag_id: "alpha", task_id: "t", run_id: "r1" }, { state: "queued", try_number: 1 });
      await updateTi(c, { dag_id: "alpha", task_id: "t", run_id: "r1" }, { state: "running" });
    });

    const isAlphaRunningAgain = (m: Consumed) => {
      const e = m.event as StreamEvent;
      return e.type === "task_instance" && e.dag_id === "alpha" && e.op === "update" && e.state === "running";
    };
    const all = await consume(
      [topic],
      (got) =>
        got.filter((m) => (m.event as StreamEvent).type === "table_truncated").length === PARTITIONS && got.some(isAlphaRunningAgain),
    );
    const events = all.map((m) => ({ ...m, event: StreamEvent.parse(m.event) }));

    const truncates = events.filter((m) => m.event.type === "table_truncated");
    expect(truncates.map((m) => m.partition).sort()).toEqual([0, 1, 2]);
    for (const m of truncates) {
      expect(m.key).toBeNull();
      const e = TableTruncatedEvent.parse(m.event);
      expect(e.tables).toContain("task_instance");
      expect(e.tables).not.toContain("dag_run");
      expect(e.schema).toBe("public");
      expect(e.source).toStrictEqual(truncates[0]!.event.source);
    }
    const at = truncates[0]!.event.source.position;

    // In order on each partition: everything committed before the TRUNCATE, then it, then the rest.
    for (let p = 0; p < PARTITIONS; p++) {
      const positions = events.filter((m) => m.partition === p).map((m) => m.event.source.position);
      const i = positions.indexOf(at);
      expect(
        positions.slice(0, i).every((x) => x < at),
        `partition ${p}: ${positions.join(" ")}`,
      ).toBe(true);
      expect(
        positions.slice(i + 1).every((x) => x > at),
        `partition ${p}: ${positions.join(" ")}`,
      ).toBe(true);
    }
    const before = events.filter((m) => m.event.type === "task_instance" && m.event.source.position < at);
    expect(before.map((m) => (m.event.type === "task_instance" ? m.event.dag_id : null)).sort()).toEqual([...dags].sort());

    const after = events.filter((m) => m.event.type === "task_instance" && m.event.source.position > at).map((m) => m.event);
    expect(after.map((e) => (e.type === "task_instance" ? [e.op, e.dag_id, e.previous_state, e.state] : null))).toEqual([
      ["insert", "alpha", null, "queued"],
      ["update", "alpha", "queued", "running"],
    ]);
  });

  it("refuses a publication that leaves truncates out, saying how to include them", async () => {
    await daemon.stop();
    await withPg(db, (c) => c.query(`ALTER PUBLICATION ${db} SET (publish = 'insert, update, delete')`));
    const d = startDaemon(daemonConfig(db));
    const err = await d.done.then(
      () => new Error("the daemon ended without an error"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PublicationError);
    expect((err as Error).message).toContain(`ALTER PUBLICATION "${db}" SET (publish = 'insert, update, delete, truncate');`);
  });
});
