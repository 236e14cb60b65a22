import { afterAll, describe, expect, it } from "vitest";
import { TaskInstanceEvent } from "../../src/airflow/events.js";
import {
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  startDaemon,
  uniqueName,
  waitForStreaming,
  withPg,
  type AirflowMajor,
} from "../support/harness.js";
import { insertDagRun, insertTi } from "../support/airflow-rows.js";

/**
 * Runs that began before the daemon's slot existed never pass through the stream: their context
 * (logical date, run type, data interval) is read once at start, on both schemas.
 */
describe.each(["2", "3"] as AirflowMajor[])("Airflow %s.x: context of runs already under way", (major) => {
  const db = uniqueName(`runctx${major}`);
  afterAll(async () => {
    await dropDatabase(db);
  });

  it("task-instance events of a run started before the daemon carry its logical date and run type", async () => {
    await createDatabase(db, major);
    const { logical } = await withPg(db, async (c) => {
      const id = await insertDagRun(c, major, "old_dag", "scheduled__1", "running");
      await c.query(
        "UPDATE dag_run SET run_type = 'scheduled', data_interval_start = '2026-11-24T00:00:00.000001Z', data_interval_end = '2026-11-25T00:00:00Z' WHERE id = $1",
        [id],
      );
      const col = major === "2" ? "execution_date" : "logical_date";
      const { rows } = await c.query<{ v: string }>(
        `SELECT to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS v FROM dag_run WHERE id = $1`,
        [id],
      );
      return { logical: rows[0]!.v };
    });
    const daemon = startDaemon(daemonConfig(db));
    try {
      await waitForStreaming(db);
      await withPg(db, (c) => insertTi(c, major, { dag_id: "old_dag", task_id: "t", run_id: "scheduled__1" }));
      const [m] = await consume([`${db}.events`], (all) => all.length >= 1);
      const e = TaskInstanceEvent.parse(m!.event);
      expect(e).toMatchObject({
        dag_id: "old_dag",
        logical_date: logical,
        run_type: "scheduled",
        data_interval_start: "2026-11-24T00:00:00.000001Z",
        data_interval_end: "2026-11-25T00:00:00.000000Z",
        clear_number: 0,
      });
    } finally {
      await daemon.stop();
    }
  });
});
