import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { airflowFixture, consume, daemonEnv, spawnDaemon, uniqueName, type DaemonProcess } from "../support/harness.js";
import { insertDagRun } from "../support/airflow-rows.js";
import { startPgPair, type PgPair } from "../support/pg-pair.js";
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { asPostgres, scratchPort, startScratchPostgres } from "../support/scratch-postgres.js";

/**
 * The daemon pointed at a real hot standby of PostgreSQL 16 (test/support/pg-pair.ts): what a start
 * says about each prerequisite it finds missing (src/source/standby.ts), that it streams once they
 * are met, and that a snapshot, which needs pg_logical_emit_message, fails with the reason. One
 * pair for every step: each step changes a standby setting with a reload, as an operator would.
 */

const STREAMING = /"msg":"streaming"/;
const spawned: DaemonProcess[] = [];

afterAll(() => {
  for (const p of spawned) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
});

function run(env: Record<string, string>, args?: string[]): DaemonProcess {
  const p = spawnDaemon(env, args);
  spawned.push(p);
  return p;
}

async function exitOf(p: DaemonProcess, timeoutMs = 60_000): Promise<{ code: number | null; text: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
  const code = await Promise.race([p.exited, timeout]).finally(() => clearTimeout(timer));
  if (code === "timeout") throw new Error(`no exit within ${timeoutMs} ms; output:\n${p.output.slice(-20).join("\n")}`);
  return { code, text: p.output.join("\n") };
}

/** A start refused with a UserActionError: exit 2, every needle in its output, never streaming. */
async function expectRefused(env: Record<string, string>, needles: string[]): Promise<void> {
  const { code, text } = await exitOf(run(env));
  expect(code, text).toBe(2);
  for (const n of needles) expect(text).toContain(n);
  expect(text).not.toMatch(STREAMING);
}

async function setOnStandby(pair: PgPair, name: string, value: string): Promise<void> {
  await pair.standby.query(`ALTER SYSTEM SET ${name} = '${value}'`);
  await pair.standby.query("SELECT pg_reload_conf()");
  for (let i = 0; i < 50; i++) {
    const [r] = await pair.standby.query<{ v: string }>(`SELECT current_setting('${name}') AS v`);
    if (r?.v === value) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${name} did not become "${value}" on the standby after a reload`);
}

describe("decoding from a PostgreSQL 16 standby: the start's prerequisites", () => {
  it("hot_standby_feedback off, then the publication missing, are refused with what to do; once met it streams; a snapshot is refused", async () => {
    const pair = await startPgPair({ major: 16, standbySettings: { hot_standby_feedback: "off" } });
    try {
      const db = uniqueName("standby_pre");
      await pair.primary.query(`CREATE DATABASE ${db}`);
      await pair.primary.query(airflowFixture("3").sql, [], db);
      await pair.waitCaughtUp();
      const env = daemonEnv(db, { PGHOST: pair.standby.host, PGPORT: String(pair.standby.port), PGUSER: "postgres", PGPASSWORD: "" });

      await expectRefused(env, [
        "this server is a standby with hot_standby_feedback off",
        "invalidation_reason rows_removed",
        "ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();",
      ]);

      await setOnStandby(pair, "hot_standby_feedback", "on");
      await expectRefused(env, [
        `publication "${db}" does not exist, and ${pair.standby.host}:${pair.standby.port} is a standby (in recovery), where nothing can be created or changed`,
        `CREATE PUBLICATION "${db}"`,
        "On the primary, as the owner of Airflow's tables, run",
      ]);
      expect((await pair.standby.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [db])).length).toBe(0);

      await pair.primary.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run, xcom`, [], db);
      await pair.primary.query("ALTER TABLE task_instance REPLICA IDENTITY FULL", [], db);
      await pair.primary.query("ALTER TABLE dag_run REPLICA IDENTITY FULL", [], db);
      await pair.waitCaughtUp();

      // The slot's creation on the standby waits for a running-transactions record from the
      // primary: written here at once instead of the bgwriter's next (about 15 s).
      const d = run(env);
      await d.waitForLog(/creating the replication slot on a standby/, 60_000);
      const nudge = setInterval(() => void pair.primary.query("SELECT pg_log_standby_snapshot()").catch(() => undefined), 500);
      try {
        await d.waitForLog(STREAMING, 60_000);
      } finally {
        clearInterval(nudge);
      }
      const primary = new pg.Client({ host: pair.primary.host, port: pair.primary.port, user: "postgres", database: db });
      await primary.connect();
      await insertDagRun(primary, "3", "standby_dag", "from_primary").finally(() => primary.end());
      await consume([env.EVENTSTREAM_TOPIC!], (all) => all.some((m) => m.event.run_id === "from_primary"), {
        timeoutMs: 30_000,
        waitingFor: "the event of a run committed on the primary, decoded from the standby",
      });

      const snap = await exitOf(run(env, ["snapshot"]));
      expect(snap.code, snap.text).toBe(2);
      for (const n of [
        "the snapshot request writes pg_logical_emit_message, which a standby refuses",
        "during recovery",
        "point PGHOST at the primary",
      ])
        expect(snap.text).toContain(n);

      d.proc.kill("SIGTERM");
      expect((await exitOf(d)).code).toBe(0);

      // Without a physical slot on the primary the protection lasts only while connected: `check` warns.
      await setOnStandby(pair, "primary_slot_name", "");
      const check = await exitOf(run(env, ["check"]));
      expect(check.text).toMatch(/warning\s+standby: a standby \(PostgreSQL 16, hot_standby_feedback on, primary_slot_name ""\)/);
      expect(check.text).toContain("without a physical replication slot (primary_slot_name is empty)");
    } finally {
      await pair.destroy();
    }
  });
});

describe("a PostgreSQL 15 standby", () => {
  it("is refused at start: decoding from a standby needs PostgreSQL 16", async () => {
    // Debian's 15 and its pg_basebackup, which takes a 15 server, whatever version the services run;
    // "-c fast": the default spread checkpoint before the copy took over 60 s on an idle server.
    const bin = "/usr/lib/postgresql/15/bin";
    const primary = await startScratchPostgres({ bin, settings: { wal_level: "logical" } });
    const data = join(primary.dir, "standby");
    let started = false;
    try {
      const db = uniqueName("standby_15");
      const c = new pg.Client({ host: primary.host, port: primary.port, user: primary.user, database: "postgres" });
      await c.connect();
      await c.query(`CREATE DATABASE ${db}`).finally(() => c.end());
      asPostgres(join(bin, "pg_basebackup"), [
        "-h",
        primary.host,
        "-p",
        String(primary.port),
        "-U",
        "postgres",
        "-D",
        data,
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
      ]);
      const port = await scratchPort();
      appendFileSync(join(data, "postgresql.conf"), `\n# standby\nport = ${port}\nhot_standby_feedback = on\n`);
      writeFileSync(join(data, "standby.signal"), "");
      asPostgres(join(bin, "pg_ctl"), ["-D", data, "-l", join(primary.dir, "standby.log"), "-w", "-t", "60", "-s", "start"]);
      started = true;
      const env = daemonEnv(db, { PGHOST: "127.0.0.1", PGPORT: String(port), PGUSER: "postgres", PGPASSWORD: "" });
      await expectRefused(env, [
        "this server is a standby (in recovery) running PostgreSQL 15: logical decoding from a standby needs PostgreSQL 16 or later",
        "Point PGHOST at the primary",
      ]);
    } finally {
      if (started) asPostgres(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "-s", "stop"]);
      await primary.stop();
    }
  });
});
