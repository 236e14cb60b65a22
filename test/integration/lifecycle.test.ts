import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type pg from "pg";
import { StreamEvent, type DagRunEvent, type NotificationEvent, type TaskInstanceEvent } from "../../src/airflow/events.js";
import {
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  pgClient,
  startDaemon,
  uniqueName,
  waitForStreaming,
  type AirflowMajor,
} from "../support/harness.js";
import { insertDagRun, insertTi, setXCom, updateDagRun, updateTi, type TiKey } from "../support/airflow-rows.js";

/**
 * A scripted lifecycle per task instance, following how Airflow writes its rows,
 * on the real 2.11 and 3.x schemas. The events read back from Kafka by an independent consumer must
 * be exactly the transitions, in commit order, with exact previous states; churn (executor ids,
 * heartbeats, hostnames) must produce nothing.
 */

type Step = [task: string, mapIndex: number, op: string, previous: string | null, state: string | null, tryNumber: number | null];

const schemas: [AirflowMajor, "fresh" | "migrated"][] = [
  ["2", "fresh"],
  ["3", "fresh"],
  // The same releases reached through every migration: other column order, same events.
  ["2", "migrated"],
  ["3", "migrated"],
];

describe.each(schemas)("Airflow %s.x schema (%s install): scripted lifecycle", (major, install) => {
  const db = uniqueName(`lifecycle${major}${install[0]}`);
  let daemon: ReturnType<typeof startDaemon>;
  let c: pg.Client;
  const dag = "etl_daily";
  const run = "manual__2026-11-25T00:00:00+00:00";

  beforeAll(async () => {
    await createDatabase(db, major, install);
    daemon = startDaemon(daemonConfig(db));
    await waitForStreaming(db);
    c = pgClient(db);
    await c.connect();
  });

  afterAll(async () => {
    await c?.end();
    await daemon?.stop();
    await dropDatabase(db);
  });

  it("publishes exactly the transitions, in order, with exact previous states", async () => {
    const k = (task_id: string, map_index = -1): TiKey => ({ dag_id: dag, task_id, run_id: run, map_index });
    const runId = await insertDagRun(c, major, dag, run, "queued");
    await updateDagRun(c, runId, { state: "running", start_date: new Date() });

    // The scheduler creates every task instance of the run in one transaction.
    await c.query("BEGIN");
    for (const t of ["ok", "flaky", "skipper", "mapped"]) await insertTi(c, major, k(t));
    await c.query("COMMIT");

    // "ok": scheduled, queued, executor id (churn), running, heartbeats (churn), success.
    await updateTi(c, k("ok"), { state: "scheduled", try_number: 1, ...(major === "3" ? { scheduled_dttm: new Date() } : {}) });
    await updateTi(c, k("ok"), { state: "queued", queued_dttm: new Date() });
    await updateTi(c, k("ok"), { external_executor_id: "celery-123" });
    await updateTi(c, k("ok"), { state: "running", start_date: "2026-11-25T08:00:00.123456Z", hostname: "worker-1", pid: 4242 });
    for (let i = 0; i < 3; i++) {
      await updateTi(c, k("ok"), major === "3" ? { last_heartbeat_at: new Date() } : { updated_at: new Date() });
    }
    // While running, the task pushes its notification XCom (and an ordinary one, ignored).
    const notification = {
      request_id: "req-42",
      start: "2026-11-24",
      end: "2026-11-25",
      metadata: { rows: 3 },
      payload: { table: "sales" },
      payload_uri: "s3://bucket/etl/",
      files: { "sales.csv": "9e107d9d372bb6826bd81d3542a419d6" },
    };
    await c.query("BEGIN");
    await setXCom(c, major, runId, k("ok"), "eventstream", notification);
    await setXCom(c, major, runId, k("ok"), "return_value", { not: "a notification" });
    await c.query("COMMIT");
    await updateTi(c, k("ok"), { state: "success", end_date: "2026-11-25T08:00:02.654321Z", duration: 2.530865 });

    // "flaky": fails once (up_for_retry; 3.x gives the retry a new id), then fails for good.
    await updateTi(c, k("flaky"), { state: "scheduled", try_number: 1 });
    await updateTi(c, k("flaky"), { state: "queued" });
    await updateTi(c, k("flaky"), { state: "running" });
    await updateTi(c, k("flaky"), { state: "up_for_retry", ...(major === "3" ? { id: crypto.randomUUID() } : {}) });
    await updateTi(c, k("flaky"), { state: "scheduled", try_number: 2 });
    await updateTi(c, k("flaky"), { state: "queued" });
    await updateTi(c, k("flaky"), { state: "running" });
    await updateTi(c, k("flaky"), { state: "failed", end_date: new Date() });

    // "skipper": skipped straight from None.
    await updateTi(c, k("skipper"), { state: "skipped" });

    // "mapped": expanded over 3 items: the -1 row becomes index 0, rows 1 and 2 are inserted.
    await updateTi(c, k("mapped"), { state: "scheduled", try_number: 1 });
    await c.query("BEGIN");
    await updateTi(c, k("mapped"), { map_index: 0 });
    await insertTi(c, major, k("mapped", 1), { state: "scheduled", try_number: 1 });
    await insertTi(c, major, k("mapped", 2), { state: "scheduled", try_number: 1 });
    await c.query("COMMIT");
    for (const i of [0, 1, 2]) await updateTi(c, k("mapped", i), { state: "success" });

    // Clear "ok" and rerun it: state None (3.x: new id), more tries allowed, the run back to queued.
    await c.query("BEGIN");
    await updateTi(c, k("ok"), { state: null, max_tries: 1, ...(major === "3" ? { id: crypto.randomUUID() } : {}) });
    await updateDagRun(c, runId, { state: "queued", clear_number: 1 });
    await c.query("COMMIT");
    await updateDagRun(c, runId, { state: "running" });
    await updateTi(c, k("ok"), { state: "scheduled", try_number: 2 });
    await updateTi(c, k("ok"), { state: "running" });
    await updateTi(c, k("ok"), { state: "success" });
    await updateDagRun(c, runId, { state: "failed", end_date: new Date() });

    // A last event of the same DAG marks the end: everything before it is on the same partition.
    await insertTi(c, major, k("zz_sentinel"));

    const consumed = await consume([`${db}.events`], (all) =>
      all.some((m) => m.event.type === "task_instance" && m.event.task_id === "zz_sentinel"),
    );
    const events = consumed.map((m) => StreamEvent.parse(m.event));
    expect(consumed.every((m) => m.key === dag)).toBe(true);
    expect(new Set(consumed.map((m) => m.partition)).size).toBe(1);
    // Commit order: positions strictly increase along the partition.
    const positions = events.map((e) => e.source.position);
    expect([...positions].sort()).toEqual(positions);
    expect(new Set(positions).size).toBe(positions.length);

    const tis = events.filter((e): e is TaskInstanceEvent => e.type === "task_instance" && e.task_id !== "zz_sentinel");
    const steps: Step[] = tis.map((e) => [e.task_id!, e.map_index!, e.op, e.previous_state, e.state, e.try_number]);
    const of = (task: string, mapIndex = -1) =>
      steps.filter((s) => s[0] === task && (task !== "mapped" || s[1] === mapIndex || (mapIndex === 0 && s[1] === -1)));

    expect(of("ok")).toEqual([
      ["ok", -1, "insert", null, null, 0],
      ["ok", -1, "update", null, "scheduled", 1],
      ["ok", -1, "update", "scheduled", "queued", 1],
      ["ok", -1, "update", "queued", "running", 1],
      ["ok", -1, "update", "running", "success", 1],
      ["ok", -1, "update", "success", null, 1],
      ["ok", -1, "update", null, "scheduled", 2],
      ["ok", -1, "update", "scheduled", "running", 2],
      ["ok", -1, "update", "running", "success", 2],
    ]);
    expect(of("flaky")).toEqual([
      ["flaky", -1, "insert", null, null, 0],
      ["flaky", -1, "update", null, "scheduled", 1],
      ["flaky", -1, "update", "scheduled", "queued", 1],
      ["flaky", -1, "update", "queued", "running", 1],
      ["flaky", -1, "update", "running", "up_for_retry", 1],
      ["flaky", -1, "update", "up_for_retry", "scheduled", 2],
      ["flaky", -1, "update", "scheduled", "queued", 2],
      ["flaky", -1, "update", "queued", "running", 2],
      ["flaky", -1, "update", "running", "failed", 2],
    ]);
    expect(of("skipper")).toEqual([
      ["skipper", -1, "insert", null, null, 0],
      ["skipper", -1, "update", null, "skipped", 0],
    ]);
    expect(of("mapped", 0)).toEqual([
      ["mapped", -1, "insert", null, null, 0],
      ["mapped", -1, "update", null, "scheduled", 1],
      // The key change is an event: consumers learn that index 0 exists; the state carries over.
      ["mapped", 0, "update", "scheduled", "scheduled", 1],
      ["mapped", 0, "update", "scheduled", "success", 1],
    ]);
    expect(of("mapped", 1)).toEqual([
      ["mapped", 1, "insert", null, "scheduled", 1],
      ["mapped", 1, "update", "scheduled", "success", 1],
    ]);
    expect(of("mapped", 2)).toEqual([
      ["mapped", 2, "insert", null, "scheduled", 1],
      ["mapped", 2, "update", "scheduled", "success", 1],
    ]);
    expect(tis.length).toBe(9 + 9 + 2 + 4 + 2 + 2);

    // Field values: microseconds kept, the worker's details carried, the 3.x id present.
    const running = tis.find((e) => e.task_id === "ok" && e.state === "running" && e.try_number === 1)!;
    expect(running).toMatchObject({
      start_date: "2026-11-25T08:00:00.123456Z",
      hostname: "worker-1",
      dag_id: dag,
      run_id: run,
      pool: "default_pool",
      queue: "default",
      operator: "PythonOperator",
    });
    const success = tis.find((e) => e.task_id === "ok" && e.state === "success" && e.try_number === 1)!;
    expect(success).toMatchObject({ end_date: "2026-11-25T08:00:02.654321Z", duration: 2.530865 });
    if (major === "3") expect(tis.every((e) => typeof e.ti_id === "string" && e.ti_id.length === 36)).toBe(true);
    else expect(tis.every((e) => e.ti_id === null)).toBe(true);
    for (const e of tis) expect(e.previous_state_known).toBe(true);

    // Run context on every task-instance event; the clear shows in clear_number.
    for (const e of tis) expect(e).toMatchObject({ run_type: "manual", logical_date: expect.stringMatching(/Z$/) });
    expect(tis.filter((e) => e.clear_number === 1).map((e) => `${e.task_id}:${e.state}`)).toEqual([
      "ok:scheduled",
      "ok:running",
      "ok:success",
    ]);

    // The notification: once, between the task's running and success events, with the try and run.
    const notes = events.filter((e): e is NotificationEvent => e.type === "notification");
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatchObject({
      dag_id: dag,
      task_id: "ok",
      run_id: run,
      map_index: -1,
      try_number: 1,
      xcom_key: "eventstream",
      ...notification,
      error: null,
    });
    const at = (pred: (e: (typeof events)[number]) => boolean) => events.findIndex(pred);
    const noteAt = at((e) => e.type === "notification");
    expect(noteAt).toBeGreaterThan(at((e) => e.type === "task_instance" && e.task_id === "ok" && e.state === "running"));
    expect(noteAt).toBeLessThan(at((e) => e.type === "task_instance" && e.task_id === "ok" && e.state === "success"));

    const runs = events.filter((e): e is DagRunEvent => e.type === "dag_run");
    expect(runs.map((e) => [e.op, e.previous_state, e.state, e.clear_number])).toEqual([
      ["insert", null, "queued", 0],
      ["update", "queued", "running", 0],
      ["update", "running", "queued", 1],
      ["update", "queued", "running", 1],
      ["update", "running", "failed", 1],
    ]);
    expect(runs[0]).toMatchObject({ dag_id: dag, run_id: run, dag_run_id: runId, run_type: "manual" });
    expect(runs[0]!.logical_date).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(tis[0]!.logical_date).toBe(runs[0]!.logical_date);
  });
});
