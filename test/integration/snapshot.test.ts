import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { chunkQuery } from "../../src/snapshot/chunk-reader.js";
import { requestSnapshot } from "../../src/snapshot/request.js";
import { newSpec } from "../../src/snapshot/request.js";
import type { SnapshotTable } from "../../src/snapshot/spec.js";
import {
  consume,
  type Consumed,
  createDatabase,
  daemonEnv,
  dropDatabase,
  pgClient,
  spawnDaemon,
  uniqueName,
  withPg,
  type AirflowMajor,
} from "../support/harness.js";
import { LoadGenerator, untilSentinels } from "../support/load.js";
import { Churner, applyInPositionOrder, databaseState, differences, preload, staleSnapshots } from "../support/snapshot-world.js";

/** The events of the rows named in `problems`, in position order: what a failure needs to be understood. */
function trail(events: Consumed[], problems: string[]): string {
  const names = new Set(problems.slice(0, 5).map((p) => p.split(/:| at /)[0]!));
  const lines: string[] = [];
  for (const m of [...events].sort((a, b) => (a.event.source.position < b.event.source.position ? -1 : 1))) {
    const e = m.event;
    const name = e.type === "task_instance" ? `ti/${e.dag_id}/${e.task_id}/${e.run_id}/${e.map_index}` : `run/${e.dag_id}/${e.run_id}`;
    if (names.has(name)) lines.push(`${name} ${e.source.position} xid ${e.source.xid} ${e.op} ${e.previous_state} -> ${e.state}`);
  }
  return lines.join("\n");
}

/**
 * Snapshots (src/snapshot/) against real PostgreSQL and Kafka, with the real daemon: under
 * concurrent Airflow-like writes, a consumer applying the event topic in position order ends with
 * exactly the database's rows and states, including rows that existed before the slot (only a
 * snapshot can carry those); and a SIGKILL mid-snapshot loses no chunk.
 *
 * EVENTSTREAM_TEST_SNAPSHOT_SEEDS=N runs N seeds (default 5; each varies the chunk size, the
 * Airflow major, the delivery mode and the writers' interleaving).
 */

const SEEDS = Number(process.env.EVENTSTREAM_TEST_SNAPSHOT_SEEDS ?? 5);
const BASE_SEED = Number(process.env.LOAD_SEED ?? Date.now() % 100_000);
const CHUNKS = [7, 32, 150];

describe("snapshot", () => {
  const dbs: string[] = [];
  afterAll(async () => {
    for (const db of dbs) await dropDatabase(db);
  });

  async function world(prefix: string, major: AirflowMajor, runsPerDag: number, tisPerRun: number) {
    const db = uniqueName(prefix);
    dbs.push(db);
    await createDatabase(db, major);
    const pre = await preload(db, major, ["sa", "sb", "sc"], runsPerDag, tisPerRun);
    return { db, pre };
  }

  async function request(db: string): Promise<string> {
    const c = pgClient(db);
    await c.connect();
    try {
      return (await requestSnapshot(c, {})).id;
    } finally {
      await c.end();
    }
  }

  for (let i = 0; i < SEEDS; i++) {
    const seed = BASE_SEED + i;
    const major: AirflowMajor = i % 3 === 2 ? "3" : "2";
    const chunk = CHUNKS[i % CHUNKS.length]!;
    const delivery = i % 2 === 1 ? "exactly-once" : "at-least-once";
    it(`seed ${seed} (Airflow ${major}, chunks of ${chunk}, ${delivery}): position order ends in the database's state`, async () => {
      const { db, pre } = await world("snap", major, 4, 40);
      const daemon = spawnDaemon(
        daemonEnv(db, {
          EVENTSTREAM_SNAPSHOT_CHUNK_ROWS: String(chunk),
          EVENTSTREAM_SNAPSHOT_ROWS_PER_SECOND: "20000",
          EVENTSTREAM_DELIVERY: delivery,
        }),
      );
      try {
        await daemon.waitForLog(/"streaming"/);
        // Sentinels in every DAG, the preloaded ones too: each DAG's events share a partition, read at its own pace.
        const load = new LoadGenerator({
          db,
          major,
          dags: [...pre.dags, "la", "lb"],
          workers: 2,
          tasksPerRun: 6,
          activePerWorker: 12,
          maxRowsPerTx: 4,
          seed,
        });
        load.start();
        const churn = new Churner(db, major, pre, seed);
        const id = await request(db);
        await daemon.waitForLog(new RegExp(`"job":"${id}".*"snapshot finished"`), 60_000);
        await churn.stop();
        await load.stop();
        await load.commitSentinels();
        const events = await consume([`${db}.events`], untilSentinels([...pre.dags, "la", "lb"]), 60_000);
        const { state, snapshots } = applyInPositionOrder(events);
        const problems = differences(state, await databaseState(db));
        console.log(
          `seed ${seed}: ${events.length} events, ${snapshots} snapshot events, ${churn.transactions} churn + ${load.ledger.transactions} load transactions; ${problems.length} differences`,
        );
        if (problems.length > 0) console.log(trail(events, problems));
        expect(problems).toEqual([]);
        const stale = staleSnapshots(events);
        if (stale.length > 0) console.log(trail(events, stale));
        expect(stale.slice(0, 20)).toEqual([]);
        // Not vacuous: the preloaded rows reached Kafka by the snapshot alone.
        expect(snapshots).toBeGreaterThanOrEqual(pre.tis.length / 2);
      } finally {
        daemon.proc.kill("SIGKILL");
        await daemon.exited;
      }
    }, 120_000);
  }

  it("SIGKILL mid-snapshot: the next start resumes the job from its progress; no row is lost", async () => {
    const { db, pre } = await world("snapkill", "2", 10, 100);
    const env = daemonEnv(db, { EVENTSTREAM_SNAPSHOT_CHUNK_ROWS: "50", EVENTSTREAM_SNAPSHOT_ROWS_PER_SECOND: "800" });
    const first = spawnDaemon(env);
    await first.waitForLog(/"streaming"/);
    const churn = new Churner(db, "2", pre, BASE_SEED, 1);
    await request(db);
    // A few chunks in Kafka, well before the end (1,010 rows at 800 rows/s).
    await consume([`${db}.events`], (all) => all.filter((m) => m.event.op === "snapshot").length >= 200, 30_000);
    first.proc.kill("SIGKILL");
    await first.exited;
    const second = spawnDaemon(env);
    try {
      const resumed = await second.waitForLog(/"snapshot: resuming the job"/, 60_000);
      expect(JSON.parse(resumed).rows).toBeGreaterThan(0);
      await second.waitForLog(/"snapshot finished"/, 60_000);
      await churn.stop();
      const sentinels = new LoadGenerator({
        db,
        major: "2",
        dags: pre.dags,
        workers: 1,
        tasksPerRun: 1,
        activePerWorker: 1,
        maxRowsPerTx: 1,
        seed: 1,
      });
      await sentinels.commitSentinels();
      const events = await consume([`${db}.events`], untilSentinels(pre.dags), 60_000);
      const { state } = applyInPositionOrder(events);
      expect(differences(state, await databaseState(db))).toEqual([]);
      expect(staleSnapshots(events).slice(0, 20)).toEqual([]);
      const snapshotted = new Set(
        events
          .filter((m) => m.event.op === "snapshot")
          .map((m) => JSON.stringify([m.event.dag_id, m.event.type === "task_instance" ? m.event.task_id : "", m.event.run_id])),
      );
      const total = pre.tis.length + pre.runs.length;
      const snapshotEvents = events.filter((m) => m.event.op === "snapshot").length;
      console.log(
        `SIGKILL mid-snapshot: ${snapshotEvents} snapshot events for ${snapshotted.size} rows of ${total}; resumed at ${resumed}`,
      );
      // Resumed, not started over: at most the chunks around the kill are read twice.
      expect(snapshotEvents).toBeLessThan(total + 400);
    } finally {
      second.proc.kill("SIGKILL");
      await second.exited;
    }
  }, 180_000);

  it("the CLI: `snapshot --dag sa --table task_instance --wait` prints the id, follows the job to done; only that DAG's task instances, on the event and the current-state topic", async () => {
    const { db, pre } = await world("snapcli", "2", 2, 10);
    const env = daemonEnv(db, { EVENTSTREAM_SNAPSHOT_CHUNK_ROWS: "8" });
    const daemon = spawnDaemon(env);
    try {
      await daemon.waitForLog(/"streaming"/);
      const cli = spawnDaemon(env, ["snapshot", "--dag", "sa", "--table", "task_instance", "--wait"]);
      expect(await cli.exited).toBe(0);
      const [id, ...progress] = cli.output.filter((l) => !l.startsWith("{"));
      expect(id).toMatch(/^[0-9a-f]{16}$/);
      expect(progress[progress.length - 1]).toBe(`${id}: done, 20 rows`);
      const events = await consume([`${db}.events`], (all) => all.filter((m) => m.event.op === "snapshot").length >= 20, 30_000);
      const snap = events.filter((m) => m.event.op === "snapshot");
      expect(new Set(snap.map((m) => `${m.event.type}/${m.event.dag_id}`))).toEqual(new Set(["task_instance/sa"]));
      expect(snap.length).toBe(pre.tis.filter((t) => t.dag_id === "sa").length);
      // The current-state topic holds them too: a snapshot's rows are each row's latest state.
      const stateTopic = loadConfig(env).stateTopic!;
      const states = await consume([stateTopic], (all) => all.filter((m) => m.event.op === "snapshot").length >= snap.length, 30_000);
      expect(states.filter((m) => m.event.op === "snapshot").map((m) => m.event.dag_id)).toEqual(snap.map(() => "sa"));
    } finally {
      daemon.proc.kill("SIGKILL");
      await daemon.exited;
    }
  }, 60_000);

  it("a job whose query PostgreSQL refuses is dropped as failed; the stream and the next job go on", async () => {
    const { db } = await world("snapfail", "2", 1, 3);
    const daemon = spawnDaemon(daemonEnv(db));
    try {
      await daemon.waitForLog(/"streaming"/);
      const c = pgClient(db);
      await c.connect();
      try {
        // Past the CLI's own check: the date reaches PostgreSQL, which refuses it (22007).
        const bad = await requestSnapshot(c, { runsSince: "not a date" });
        const good = await requestSnapshot(c, { tables: ["dag_run"] });
        await daemon.waitForLog(new RegExp(`"job":"${bad.id}".*PostgreSQL refused its query`), 30_000);
        const finished = await daemon.waitForLog(new RegExp(`"job":"${good.id}".*"snapshot finished"`), 30_000);
        expect(JSON.parse(finished).rows).toBe(3);
      } finally {
        await c.end();
      }
      expect(daemon.output.filter((l) => /"level":50|"level":60/.test(l) && !l.includes("refused its query"))).toEqual([]);
    } finally {
      daemon.proc.kill("SIGKILL");
      await daemon.exited;
    }
  }, 60_000);

  it("a transaction decoded before the low watermark but invisible to the chunk's snapshot: its row is left out, not overwritten", async () => {
    const { db, pre } = await world("snapvis", "2", 1, 20);
    const daemon = spawnDaemon(daemonEnv(db, { EVENTSTREAM_SNAPSHOT_CHUNK_ROWS: "50" }));
    // A synchronous standby that never comes: a commit writes (and flushes) its commit record, which
    // the slot decodes and the daemon publishes, then waits, still in the proc array, invisible to
    // every snapshot taken meanwhile. Only this test's sessions ask for it (synchronous_commit=on);
    // every other session of this test runs with synchronous_commit=local.
    const local = { options: "-c synchronous_commit=local" };
    const held = pgClient(db);
    const admin = pgClient("postgres", local);
    await admin.connect();
    try {
      await daemon.waitForLog(/"streaming"/);
      await admin.query("ALTER SYSTEM SET synchronous_standby_names = 'eventstream_test_never'");
      await admin.query("SELECT pg_reload_conf()");
      await held.connect();
      await held.query("SET synchronous_commit = on");
      const x = pre.tis[3]!;
      const committing = held.query("UPDATE task_instance SET state = 'failed' WHERE dag_id = $1 AND task_id = $2 AND run_id = $3", [
        x.dag_id,
        x.task_id,
        x.run_id,
      ]);
      committing.catch(() => undefined);
      const published = await consume([`${db}.events`], (all) =>
        all.some((m) => m.event.type === "task_instance" && m.event.state === "failed"),
      );
      expect(published.length).toBeGreaterThan(0);
      const c = pgClient(db, local);
      await c.connect();
      const spec = await requestSnapshot(c, { tables: ["task_instance"] });
      await c.end();
      await daemon.waitForLog(new RegExp(`"job":"${spec.id}".*"snapshot finished"`), 30_000);
      // The held transaction is still invisible: the database says 'scheduled' to everyone else.
      await withPg(db, async (r) =>
        expect(
          (
            await r.query("SELECT state FROM task_instance WHERE dag_id = $1 AND task_id = $2 AND run_id = $3", [
              x.dag_id,
              x.task_id,
              x.run_id,
            ])
          ).rows[0].state,
        ).toBe("scheduled"),
      );
      await admin.query("ALTER SYSTEM RESET synchronous_standby_names");
      await admin.query("SELECT pg_reload_conf()");
      await committing;
      const events = await consume([`${db}.events`], (all) => all.filter((m) => m.event.op === "snapshot").length >= pre.tis.length - 1);
      const ofX = events.filter(
        (m) =>
          m.event.type === "task_instance" && m.event.dag_id === x.dag_id && m.event.task_id === x.task_id && m.event.run_id === x.run_id,
      );
      expect(ofX.map((m) => `${m.event.op} ${m.event.state}`)).toEqual(["update failed"]);
      expect(staleSnapshots(events)).toEqual([]);
      expect(events.filter((m) => m.event.op === "snapshot").length).toBe(pre.tis.length - 1);
    } finally {
      await admin.query("ALTER SYSTEM RESET synchronous_standby_names").catch(() => undefined);
      await admin.query("SELECT pg_reload_conf()").catch(() => undefined);
      await admin.end();
      await held.end().catch(() => undefined);
      daemon.proc.kill("SIGKILL");
      await daemon.exited;
    }
  }, 90_000);

  it("chunk reads are primary-key index range scans", async () => {
    for (const major of ["2", "3"] as const) {
      const { db } = await world(`snapplan${major}`, major, 100, 10);
      const cfg = loadConfig(daemonEnv(db));
      await withPg(db, async (c) => {
        await c.query("ANALYZE");
        for (const table of ["task_instance", "dag_run"] as SnapshotTable[]) {
          const pk = table === "dag_run" || major === "3" ? ["id"] : ["dag_id", "task_id", "run_id", "map_index"];
          const first = await c.query(
            `SELECT ${pk.map((p) => `${p}::text AS ${p}`).join(", ")} FROM ${table} ORDER BY ${pk.join(", ")} LIMIT 1`,
          );
          const after = pk.map((p) => String(first.rows[0][p]));
          const spec = { ...newSpec({ dags: ["sa"], activeOnly: true }) };
          const { sql, values } = chunkQuery(cfg.airflowSchema, table, pk, spec, after, 20);
          const plan = JSON.stringify((await c.query(`EXPLAIN (FORMAT JSON) ${sql}`, values)).rows[0]);
          const text = (await c.query(`EXPLAIN ${sql}`, values)).rows.map((r: Record<string, string>) => r["QUERY PLAN"]).join("\n");
          console.log(`${table} on ${major}.x, --dag and --active-only:\n${text}`);
          expect(plan, `${table} on ${major}.x: ${plan}`).toMatch(/"Node Type":"Index Scan"[^}]*"Index Name":"[a-z_]*pkey"/);
          expect(plan).not.toMatch(/"Node Type":"(Seq Scan|Sort)"/);
        }
      });
    }
  }, 60_000);
});
