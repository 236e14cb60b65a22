import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import pg from "pg";
import { airflowFixture, consume, daemonEnv, exitCode, spawnDaemon, uniqueName, type DaemonProcess } from "../support/harness.js";
import { insertDagRun } from "../support/airflow-rows.js";
import { startScratchPostgres, type ScratchPostgres } from "../support/scratch-postgres.js";
import { startPgPair, type PgNode } from "../support/pg-pair.js";

/**
 * The server's own invalidation reasons, for real: a throwaway cluster of the major that has the
 * reason, the daemon streams a little and is stopped, the server invalidates the slot, and the
 * next start refuses with the gap message naming that reason and what to do about it.
 *
 * - PostgreSQL 17: invalidation_reason wal_removed (max_slot_wal_keep_size 1MB, WAL written and
 *   checkpointed while the daemon is stopped).
 * - PostgreSQL 18: idle_timeout (idle_replication_slot_timeout at its smallest, the slot left
 *   inactive past it; the check runs at a checkpoint).
 * - A PostgreSQL 17 standby: rows_removed (hot_standby_feedback off for a while, catalog rows
 *   removed by a VACUUM on the primary) and wal_level_insufficient (the primary restarted with
 *   wal_level replica).
 */

const STREAMING = /"msg":"streaming"/;
const DAG = "invalidation_dag";
const spawned: DaemonProcess[] = [];

afterAll(async () => {
  for (const p of spawned) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
});

/** The server programs of a major, fetched and unpacked once by the repo's script. */
function binOf(major: "17" | "18"): string {
  return execFileSync("bash", ["scripts/pg-binaries.sh", major], { encoding: "utf8", timeout: 300_000 }).trim();
}

/** Runs `fn` on a new cluster of `major`, stopped (and its files removed) afterwards whatever happened. */
async function withCluster(major: "17" | "18", settings: Record<string, string>, fn: (c: ScratchPostgres) => Promise<void>): Promise<void> {
  const c = await startScratchPostgres({ bin: binOf(major), settings: { wal_level: "logical", ...settings } });
  try {
    await fn(c);
  } finally {
    await c.stop();
  }
}

async function on<T>(c: ScratchPostgres, database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ host: c.host, port: c.port, user: c.user, database });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function airflowDatabase(c: ScratchPostgres, prefix: string): Promise<string> {
  const db = uniqueName(prefix);
  await on(c, "postgres", (client) => client.query(`CREATE DATABASE ${db}`));
  await on(c, db, (client) => client.query(airflowFixture("3").sql));
  return db;
}

function envOn(c: ScratchPostgres, db: string): Record<string, string> {
  return daemonEnv(db, { PGHOST: c.host, PGPORT: String(c.port), PGUSER: c.user, PGPASSWORD: "" });
}

function start(env: Record<string, string>): DaemonProcess {
  const p = spawnDaemon(env);
  spawned.push(p);
  return p;
}

/** Starts the daemon, commits a DAG run, waits for its event in Kafka, stops the daemon (exit 0). */
async function streamOnce(c: ScratchPostgres, db: string, env: Record<string, string>): Promise<void> {
  await streamOnceVia(c, c, db, env);
}

/** streamOnce with the daemon on `reader` (a standby) and the run committed on `writer`. */
async function streamOnceVia(writer: ScratchPostgres, reader: ScratchPostgres, db: string, env = envOn(reader, db)): Promise<void> {
  const d = start(env);
  await d.waitForLog(STREAMING, 60_000);
  await on(writer, db, (client) => insertDagRun(client, "3", DAG, "before"));
  await consume([env.EVENTSTREAM_TOPIC!], (all) => all.some((m) => m.event.run_id === "before"), {
    timeoutMs: 30_000,
    waitingFor: "the event of run before",
  });
  d.proc.kill("SIGTERM");
  expect(await exitCode(d)).toBe(0);
}

interface SlotNow {
  wal_status: string | null;
  invalidation_reason: string | null;
  active: boolean;
}

async function slotNow(c: ScratchPostgres, db: string): Promise<SlotNow | undefined> {
  return on(c, db, async (client) => {
    const { rows } = await client.query<SlotNow>(
      "SELECT wal_status, invalidation_reason, active FROM pg_replication_slots WHERE slot_name = $1",
      [db],
    );
    return rows[0];
  });
}

/** The next start: exit 2, SlotGapError, the gap message with every needle. */
async function expectRefused(env: Record<string, string>, needles: string[]): Promise<string> {
  const d = start(env);
  const code = await exitCode(d);
  const text = d.output.join("\n");
  expect(code, text).toBe(2);
  expect(text).toContain('"error":"SlotGapError"');
  for (const n of ["GAP IN THE EVENT STREAM", 'wal_status "lost"', "EVENTS WERE LOST", ...needles]) expect(text).toContain(n);
  expect(text).not.toMatch(STREAMING);
  return text;
}

describe("PostgreSQL 17: invalidation_reason wal_removed", () => {
  it("the daemon stopped, WAL past max_slot_wal_keep_size and a CHECKPOINT: the next start names wal_removed and the limit", async () => {
    await withCluster("17", { max_slot_wal_keep_size: "1MB" }, async (c) => {
      const db = await airflowDatabase(c, "inval_wal");
      const env = envOn(c, db);
      await streamOnce(c, db, env);
      await on(c, db, async (client) => {
        await client.query("CREATE TABLE filler (id serial PRIMARY KEY, payload text)");
        for (let i = 0; i < 20; i++) {
          if ((await slotNow(c, db))?.wal_status === "lost") return;
          await client.query("INSERT INTO filler (payload) SELECT repeat('x', 1000) FROM generate_series(1, 2000)");
          await client.query("SELECT pg_switch_wal()");
          await client.query("CHECKPOINT");
        }
      });
      expect(await slotNow(c, db)).toMatchObject({ wal_status: "lost", invalidation_reason: "wal_removed" });
      await expectRefused(env, [
        'invalidation_reason "wal_removed"',
        "fell more than max_slot_wal_keep_size (1MB) behind",
        "raise max_slot_wal_keep_size",
      ]);
    });
  });
});

describe("PostgreSQL 18: invalidation_reason idle_timeout", () => {
  it("the daemon stopped longer than idle_replication_slot_timeout, then a CHECKPOINT: the next start names idle_timeout and the server's value", async () => {
    await withCluster("18", {}, async (c) => {
      // Its unit, as this server has it (seconds on 18.1; the name alone does not say): the smallest value is 1 of it.
      const unit = await on(c, "postgres", async (client) => {
        const { rows } = await client.query<{ unit: string | null }>(
          "SELECT unit FROM pg_settings WHERE name = 'idle_replication_slot_timeout'",
        );
        const u = rows[0]?.unit ?? null;
        await client.query(`ALTER SYSTEM SET idle_replication_slot_timeout = '1${u ?? ""}'`);
        await client.query("SELECT pg_reload_conf()");
        return u;
      });
      expect(unit, "a timeout in minutes would make this test take minutes").toBe("s");
      const shown = await on(
        c,
        "postgres",
        async (client) => (await client.query<{ v: string }>("SELECT current_setting('idle_replication_slot_timeout') AS v")).rows[0]!.v,
      );
      expect(shown).toBe("1s");

      const db = await airflowDatabase(c, "inval_idle");
      const env = envOn(c, db);
      // `check` tells the operator the bound before anything is lost.
      const check = spawnDaemon(env, ["check"]);
      spawned.push(check);
      await exitCode(check);
      expect(check.output.join("\n")).toMatch(
        /warning\s+idle_replication_slot_timeout: 1s: if the daemon is down \(or cannot connect\) longer than 1s, PostgreSQL invalidates its slot/,
      );
      await streamOnce(c, db, env);
      // The slot is checked at checkpoints only: a CHECKPOINT a little past the timeout invalidates it.
      for (let i = 0; i < 20 && (await slotNow(c, db))?.wal_status !== "lost"; i++) {
        await new Promise((r) => setTimeout(r, 1_000));
        await on(c, db, (client) => client.query("CHECKPOINT"));
      }
      expect(await slotNow(c, db)).toMatchObject({ wal_status: "lost", invalidation_reason: "idle_timeout", active: false });
      await expectRefused(env, [
        'invalidation_reason "idle_timeout"',
        "longer than idle_replication_slot_timeout (1s)",
        "a daemon stopped (or unable to connect) for that long loses its slot",
      ]);
    });
  });
});

/** A node as a ScratchPostgres, for the helpers above (only host, port and user are used). */
function asScratch(n: PgNode): ScratchPostgres {
  return { host: n.host, port: n.port, user: "postgres", dir: n.data, stop: async () => undefined };
}

describe("a PostgreSQL 17 standby: rows_removed and wal_level_insufficient", () => {
  it("each reason the standby gives is named in the next start's gap message, with what prevents it", async () => {
    const pair = await startPgPair({ major: 17, syncSlots: false });
    try {
      const standby = asScratch(pair.standby);
      const primary = asScratch(pair.primary);
      const dbs = [uniqueName("inval_rows"), uniqueName("inval_level")];
      for (const db of dbs) {
        await pair.primary.query(`CREATE DATABASE ${db}`);
        await pair.primary.query(airflowFixture("3").sql, [], db);
        await pair.primary.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run, xcom`, [], db);
        await pair.primary.query("ALTER TABLE task_instance REPLICA IDENTITY FULL", [], db);
        await pair.primary.query("ALTER TABLE dag_run REPLICA IDENTITY FULL", [], db);
      }
      await pair.waitCaughtUp();
      // The slot's creation on a standby waits for the primary's next running-transactions record.
      const nudge = setInterval(() => void pair.primary.query("SELECT pg_log_standby_snapshot()").catch(() => undefined), 500);
      try {
        for (const db of dbs) await streamOnceVia(primary, standby, db);
      } finally {
        clearInterval(nudge);
      }

      // rows_removed: without feedback the primary's VACUUM removes catalog rows the slot needs.
      const [rowsDb, levelDb] = dbs as [string, string];
      await pair.standby.query("ALTER SYSTEM SET hot_standby_feedback = off");
      await pair.standby.query("SELECT pg_reload_conf()");
      // The standby's physical slot on the primary holds the catalog rows until its feedback says otherwise.
      const held = async () =>
        (
          await pair.primary.query<{ held: boolean }>(
            "SELECT xmin IS NOT NULL OR catalog_xmin IS NOT NULL AS held FROM pg_replication_slots WHERE slot_name = $1",
            [pair.physicalSlot],
          )
        )[0]?.held;
      for (let i = 0; i < 100 && (await held()); i++) await new Promise((r) => setTimeout(r, 100));
      expect(await held(), "the physical slot still holds an xmin with hot_standby_feedback off").toBe(false);
      for (let i = 0; i < 30 && (await slotNow(standby, rowsDb))?.invalidation_reason !== "rows_removed"; i++) {
        // Two transactions: a row inserted and deleted by one transaction conflicts with no one.
        await pair.primary.query("CREATE TABLE churn (id int)", [], rowsDb);
        await pair.primary.query("DROP TABLE churn", [], rowsDb);
        await pair.primary.query("VACUUM pg_class", [], rowsDb);
        await pair.waitCaughtUp();
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(await slotNow(standby, rowsDb)).toMatchObject({ wal_status: "lost", invalidation_reason: "rows_removed" });
      await pair.standby.query("ALTER SYSTEM SET hot_standby_feedback = on");
      await pair.standby.query("SELECT pg_reload_conf()");
      await expectRefused(envOn(standby, rowsDb), [
        'invalidation_reason "rows_removed"',
        "the primary removed rows of its system catalogs that the slot still needed",
        "hot_standby_feedback = on",
      ]);

      // wal_level_insufficient: the standby replays the primary's restart with wal_level replica.
      await pair.primary.query("ALTER SYSTEM SET wal_level = replica");
      pair.primary.stop("fast");
      pair.primary.start();
      for (let i = 0; i < 50 && (await slotNow(standby, levelDb))?.wal_status !== "lost"; i++) await new Promise((r) => setTimeout(r, 200));
      expect(await slotNow(standby, levelDb)).toMatchObject({ wal_status: "lost", invalidation_reason: "wal_level_insufficient" });
      await expectRefused(envOn(standby, levelDb), [
        'invalidation_reason "wal_level_insufficient"',
        "the primary's wal_level went below logical",
      ]);
    } finally {
      await pair.destroy();
    }
  });
});
