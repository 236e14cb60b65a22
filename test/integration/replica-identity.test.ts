import { afterAll, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { StreamEvent, type DagRunEvent, type TaskInstanceEvent } from "../../src/airflow/events.js";
import { ReplicaIdentityError } from "../../src/errors.js";
import { loadConfig } from "../../src/config.js";
import {
  consume,
  createDatabase,
  daemonEnv,
  dropDatabase,
  pgClient,
  spawnDaemon,
  startDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
  type AirflowMajor,
  type Consumed,
  type DaemonProcess,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateDagRun, updateTi, type TiKey } from "../support/airflow-rows.js";

/**
 * EVENTSTREAM_REPLICA_IDENTITY=full on the real 2.x and 3.x schemas: the daemon makes task_instance
 * and dag_run REPLICA IDENTITY FULL, and after a restart (SIGTERM, a new process: nothing
 * remembered) every event's previous state comes from the old row in the WAL. The same script with
 * the default setting shows what FULL buys: the first change after the restart of each row the
 * daemon does not remember is published with previous_state_known false, heartbeats included.
 */

const databases: string[] = [];
const spawned: DaemonProcess[] = [];
const roles: string[] = [];

afterAll(async () => {
  for (const p of spawned) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
  for (const db of databases) await dropDatabase(db);
  for (const r of roles) await withPg("postgres", (c) => c.query(`DROP ROLE IF EXISTS ${r}`)).catch(() => undefined);
});

const relreplident = (db: string) =>
  withPg(db, async (c) => {
    const { rows } = await c.query<{ relname: string; ident: string }>(
      "SELECT relname, relreplident::text AS ident FROM pg_class WHERE relname IN ('task_instance', 'dag_run', 'xcom') AND relnamespace = 'public'::regnamespace",
    );
    return Object.fromEntries(rows.map((r) => [r.relname, r.ident]));
  });

async function startAndStream(env: Record<string, string>, slot: string): Promise<DaemonProcess> {
  const d = spawnDaemon(env);
  spawned.push(d);
  await waitForStreaming(slot).catch((e: unknown) => {
    throw new Error(`${(e as Error).message}\n${d.output.slice(-20).join("\n")}`);
  });
  return d;
}

async function sigterm(d: DaemonProcess): Promise<void> {
  d.proc.kill("SIGTERM");
  expect(await d.exited, `exit code after SIGTERM; output:\n${d.output.slice(-20).join("\n")}`).toBe(0);
}

/** Events of the topic, one per position (a re-delivery carries the same one), in position order. */
function distinct(consumed: Consumed[]): StreamEvent[] {
  const byPosition = new Map<string, StreamEvent>();
  for (const m of consumed) {
    const e = StreamEvent.parse(m.event);
    byPosition.set(e.source.position, e);
  }
  return [...byPosition.values()].sort((a, b) => (a.source.position < b.source.position ? -1 : 1));
}

type Row = [op: string, previous: string | null, known: boolean, state: string | null, prevTry: number | null, tryNumber: number | null];

const dag = "ri_dag";
const run = "manual__2026-11-25T00:00:00+00:00";
const k = (task_id: string): TiKey => ({ dag_id: dag, task_id, run_id: run, map_index: -1 });

/**
 * Phase 1 with the first daemon; SIGTERM; phase 2 (changes of rows last changed in phase 1) with a
 * second daemon. Returns the events published after the restart, and the second daemon's output.
 */
async function lifecycleAcrossRestart(
  major: AirflowMajor,
  db: string,
  env: Record<string, string>,
  beforeRestart?: (c: pg.Client) => Promise<void>,
) {
  const topic = `${db}.events`;
  const c = pgClient(db);
  await c.connect();
  try {
    const first = await startAndStream(env, db);
    const runId = await insertDagRun(c, major, dag, run, "queued");
    await updateDagRun(c, runId, { state: "running", start_date: new Date() });
    await c.query("BEGIN");
    for (const t of ["a", "b", "c", "d"]) await insertTi(c, major, k(t));
    await c.query("COMMIT");
    for (const t of ["a", "b", "c", "d"]) {
      await updateTi(c, k(t), { state: "scheduled", try_number: 1 });
      await updateTi(c, k(t), { state: "queued", queued_dttm: new Date() });
    }
    for (const t of ["a", "c", "d"])
      await updateTi(c, k(t), {
        state: "running",
        start_date: new Date(),
        hostname: "worker-1",
        ...(major === "3" ? { last_heartbeat_at: new Date() } : {}),
      });
    await updateTi(c, k("d"), { state: "success", end_date: new Date(), duration: 1.5 });
    await insertTi(c, major, k("zz_phase1"));
    const phase1 = await consume([topic], (all) => all.some((m) => m.event.type === "task_instance" && m.event.task_id === "zz_phase1"));
    const boundary = distinct(phase1).at(-1)!.source.position;
    await sigterm(first);
    await beforeRestart?.(c);

    const second = await startAndStream(env, db);
    // The worker's heartbeat (2.x: its pid write; heartbeats go to `job` there): churn.
    await updateTi(c, k("a"), major === "3" ? { last_heartbeat_at: new Date() } : { pid: 4242 });
    await updateTi(c, k("a"), { state: "success", end_date: new Date(), duration: 2.5 });
    await updateTi(c, k("b"), { state: "running", start_date: new Date(), hostname: "worker-2" });
    // A retry: 3.x writes it as two UPDATEs in one transaction, the state, then a new id for the next try.
    const retryId = major === "3" ? randomUUID() : null;
    await c.query("BEGIN");
    await updateTi(c, k("c"), { state: "up_for_retry", end_date: new Date() });
    if (retryId !== null) await updateTi(c, k("c"), { id: retryId });
    await c.query("COMMIT");
    await updateTi(c, k("c"), { state: "scheduled", try_number: 2 });
    await c.query("DELETE FROM task_instance WHERE dag_id = $1 AND task_id = 'd' AND run_id = $2", [dag, run]);
    await updateDagRun(c, runId, { state: "success", end_date: new Date() });
    await insertTi(c, major, k("zz_end"));
    // 3.x under DEFAULT: a deleted row never seen is named by its id alone, so its event has no
    // dag_id key and may land on any partition: wait for it too.
    const all = await consume(
      [topic],
      (got) =>
        got.some((m) => m.event.type === "task_instance" && m.event.task_id === "zz_end") &&
        got.some((m) => m.event.type === "task_instance" && m.event.op === "delete"),
    );
    await sigterm(second);
    const after = distinct(all).filter((e) => e.source.position > boundary);
    const tis = after.filter((e): e is TaskInstanceEvent => e.type === "task_instance" && e.task_id !== "zz_end");
    const ofTask = (t: string): Row[] =>
      tis
        .filter((e) => e.task_id === t || (t === "d" && e.op === "delete"))
        .map((e) => [e.op, e.previous_state, e.previous_state_known, e.state, e.previous_try_number, e.try_number]);
    const runs = after
      .filter((e): e is DagRunEvent => e.type === "dag_run")
      .map((e) => [e.op, e.previous_state, e.previous_state_known, e.state]);
    return { tis, ofTask, runs, retryId, output: second.output, firstOutput: first.output };
  } finally {
    await c.end();
  }
}

describe.each(["2", "3"] as const)("Airflow %s.x schema: REPLICA IDENTITY FULL", (major) => {
  it("previous_state is exact across a SIGTERM restart; a heartbeat right after it is no event; deletes carry the old state", async () => {
    const db = uniqueName(`rifull${major}`);
    databases.push(db);
    await createDatabase(db, major);
    expect(await relreplident(db)).toEqual({ task_instance: "d", dag_run: "d", xcom: "d" });
    const env = daemonEnv(db, { EVENTSTREAM_REPLICA_IDENTITY: "full" });

    const r = await lifecycleAcrossRestart(major, db, env);

    // The first daemon set FULL (it owns the tables here); xcom is left alone. The second found it set.
    expect(await relreplident(db)).toEqual({ task_instance: "f", dag_run: "f", xcom: "d" });
    expect(r.firstOutput.some((l) => l.includes("set REPLICA IDENTITY FULL"))).toBe(true);
    expect(r.output.some((l) => l.includes("set REPLICA IDENTITY FULL"))).toBe(false);

    // No event for the heartbeat: the old row says the state did not change.
    expect(r.ofTask("a")).toEqual([["update", "running", true, "success", 1, 1]]);
    expect(r.ofTask("b")).toEqual([["update", "queued", true, "running", 1, 1]]);
    // The retry is one event (3.x: the new id is churn), then the next try.
    expect(r.ofTask("c")).toEqual([
      ["update", "running", true, "up_for_retry", 1, 1],
      ["update", "up_for_retry", true, "scheduled", 1, 2],
    ]);
    if (r.retryId !== null) expect(r.tis.filter((e) => e.task_id === "c").map((e) => e.ti_id)[1]).toBe(r.retryId);
    // The delete: the row's own last state and key, also on 3.x where DEFAULT would give the id alone.
    expect(r.ofTask("d")).toEqual([["delete", "success", true, "success", 1, 1]]);
    const del = r.tis.find((e) => e.op === "delete")!;
    expect(del).toMatchObject({ dag_id: dag, task_id: "d", run_id: run, map_index: -1, hostname: "worker-1", duration: 1.5 });
    expect(r.runs).toEqual([["update", "running", true, "success"]]);
    expect(r.tis.every((e) => e.previous_state_known)).toBe(true);
  });

  it("contrast, the default setting: the first change of each row after the restart is unknown, the heartbeat included; a table someone set FULL is exact anyway", async () => {
    const db = uniqueName(`ridflt${major}`);
    databases.push(db);
    await createDatabase(db, major);
    // What a start reads back from Kafka is limited to the last record of each partition (the
    // phase's last insert, here): no other row is remembered across the restart (see docs/delivery.md,
    // "Restarts"; test/integration/redelivery.test.ts for rows that are).
    const env = daemonEnv(db, { EVENTSTREAM_RESTART_READ_EVENTS: "1" });

    // While the daemon is stopped an operator sets dag_run FULL without telling the daemon.
    const r = await lifecycleAcrossRestart(major, db, env, (c) =>
      c.query("ALTER TABLE dag_run REPLICA IDENTITY FULL").then(() => undefined),
    );

    expect(await relreplident(db)).toEqual({ task_instance: "d", dag_run: "f", xcom: "d" });
    // The heartbeat is published: nothing says the state did not change.
    expect(r.ofTask("a")).toEqual([
      ["update", null, false, "running", null, 1],
      ["update", "running", true, "success", 1, 1],
    ]);
    expect(r.ofTask("b")).toEqual([["update", null, false, "running", null, 1]]);
    expect(r.ofTask("c")).toEqual([
      ["update", null, false, "up_for_retry", null, 1],
      ["update", "up_for_retry", true, "scheduled", 1, 2],
    ]);
    // 2.x: the old key names the row; 3.x: only its id. Either way its state is unknown.
    expect(r.ofTask("d")).toEqual([["delete", null, false, null, null, null]]);
    expect(r.tis.find((e) => e.op === "delete")).toMatchObject(
      major === "2" ? { dag_id: dag, task_id: "d" } : { dag_id: null, task_id: null },
    );
    // dag_run's old rows are in the WAL: exact although the daemon was not told.
    expect(r.runs).toEqual([["update", "running", true, "success"]]);
  });
});

describe("preflight with EVENTSTREAM_REPLICA_IDENTITY=full", () => {
  it("a role that does not own the tables stops with ReplicaIdentityError and the exact SQL; as the owner that SQL makes it start", async () => {
    const db = uniqueName("riperm");
    const role = uniqueName("ri_role");
    databases.push(db);
    roles.push(role);
    await createDatabase(db, "3");
    await withPg(db, async (c) => {
      await c.query(`CREATE ROLE ${role} WITH LOGIN REPLICATION PASSWORD 'pw_${role}'`);
      await c.query(`GRANT SELECT ON public.task_instance, public.dag_run, public.xcom TO ${role}`);
      await c.query(`CREATE PUBLICATION ${db} FOR TABLE public.task_instance, public.dag_run, public.xcom`);
    });
    const env = daemonEnv(db, {
      PGUSER: role,
      PGPASSWORD: `pw_${role}`,
      EVENTSTREAM_CREATE_PUBLICATION: "false",
      EVENTSTREAM_REPLICA_IDENTITY: "full",
    });
    const sql = `ALTER TABLE "public"."task_instance" REPLICA IDENTITY FULL; ALTER TABLE "public"."dag_run" REPLICA IDENTITY FULL;`;

    const d = startDaemon(loadConfig(env));
    const err = await d.done.then(
      () => new Error("the daemon ended without an error"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ReplicaIdentityError);
    const message = (err as Error).message;
    expect(message).toContain(sql);
    expect(message).toContain(`role "${role}"`);
    expect(message).toContain('owner ("postgres")');
    // Nothing was changed, and the check came before the slot.
    expect(await relreplident(db)).toEqual({ task_instance: "d", dag_run: "d", xcom: "d" });
    expect((await withPg("postgres", (c) => c.query("SELECT 1 FROM pg_replication_slots WHERE database = $1", [db]))).rowCount).toBe(0);

    // As its own process: exit code 2, the SQL on stderr.
    const proc = spawnDaemon(env);
    spawned.push(proc);
    const stderr: string[] = [];
    proc.proc.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")));
    expect(await proc.exited).toBe(2);
    expect(stderr.join("")).toContain(sql);

    // Run exactly what the message says, as the owner: the daemon starts and streams.
    const given = /run: (ALTER TABLE .*?;(?: ALTER TABLE .*?;)*) \(or/.exec(message)?.[1];
    expect(given).toBe(sql);
    await withPg(db, (c) => c.query(given!));
    expect(await relreplident(db)).toEqual({ task_instance: "f", dag_run: "f", xcom: "d" });
    const ok = await startAndStream(env, db);
    await sigterm(ok);
  });

  it("an ALTER stuck behind an open transaction of Airflow's gives up after 2 s and is retried until it gets through", async () => {
    const db = uniqueName("rilock");
    databases.push(db);
    await createDatabase(db, "3");
    const blocker = pgClient(db);
    await blocker.connect();
    const logs: string[] = [];
    let d: ReturnType<typeof startDaemon> | null = null;
    try {
      // A transaction that has read task_instance holds a lock the ALTER must wait for.
      await blocker.query("BEGIN");
      await blocker.query("SELECT count(*) FROM task_instance");
      d = startDaemon(loadConfig(daemonEnv(db, { EVENTSTREAM_REPLICA_IDENTITY: "full" })), logs);
      await waitFor(
        "a session that gave up waiting for the lock",
        async () => logs.some((l) => l.includes('"level":40') && l.includes("gave up") && l.includes("retrying")),
        30_000,
      );
      expect(await relreplident(db)).toMatchObject({ task_instance: "d" });
      // The daemon never queues on the table for long: Airflow's next query gets through (behind an
      // ALTER without a lock timeout it would wait as long as the blocker stays open).
      const probe = pgClient(db, { statement_timeout: 10_000 });
      await probe.connect();
      await probe.query("SELECT count(*) FROM task_instance").finally(() => probe.end());
      await blocker.query("COMMIT");
      await waitForStreaming(db);
      expect(await relreplident(db)).toEqual({ task_instance: "f", dag_run: "f", xcom: "d" });
    } finally {
      await blocker.end();
      await d?.stop();
    }
  });

  it("the owner with EVENTSTREAM_ALTER_REPLICA_IDENTITY=false gets the SQL instead of an ALTER", async () => {
    const db = uniqueName("rinoalter");
    databases.push(db);
    await createDatabase(db, "2");
    const d = startDaemon(loadConfig(daemonEnv(db, { EVENTSTREAM_REPLICA_IDENTITY: "full", EVENTSTREAM_ALTER_REPLICA_IDENTITY: "false" })));
    const err = await d.done.then(
      () => new Error("the daemon ended without an error"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ReplicaIdentityError);
    expect((err as Error).message).toContain(
      `EVENTSTREAM_ALTER_REPLICA_IDENTITY is false. As the owner of Airflow's tables run: ALTER TABLE "public"."task_instance" REPLICA IDENTITY FULL;`,
    );
    expect(await relreplident(db)).toEqual({ task_instance: "d", dag_run: "d", xcom: "d" });
  });
});
