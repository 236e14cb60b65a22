import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import {
  airflowFixture,
  consume,
  createDatabase,
  daemonConfig,
  daemonEnv,
  dropDatabase,
  startDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";
import { postgresBinDir, startScratchPostgres } from "../support/scratch-postgres.js";

/**
 * The documented production set-up, run as written: the SQL and the pg_hba.conf lines are read from
 * docs/operations.md ("Setting up PostgreSQL and Kafka for production"), only names, the password
 * and the client address substituted.
 */
const readme = readFileSync("docs/operations.md", "utf8");
const section = readme.slice(readme.indexOf("## Setting up PostgreSQL and Kafka for production"));

function fenced(lang: string): string {
  const m = new RegExp("```" + lang + "\\n([\\s\\S]*?)```").exec(section);
  if (!m) throw new Error(`docs/operations.md's production set-up has no \`\`\`${lang} block`);
  return m[1]!;
}

/** The statements for the role, its grants, publication and slot, with this test's names. */
function readmeSql(role: string, password: string, database: string): string[] {
  return fenced("sql")
    .split("\n")
    .filter((l) => !l.trim().startsWith("--"))
    .join("\n")
    .split(";")
    .map((st) => st.trim())
    .filter((st) => /^(CREATE ROLE|GRANT|CREATE PUBLICATION|SELECT pg_create_logical_replication_slot)/.test(st))
    .map((st) =>
      st
        .replaceAll("airflow_eventstream", database)
        .replace(/\beventstream\b/g, role)
        .replace("'...'", `'${password}'`),
    );
}

/** docs/operations.md's pg_hba.conf lines for the role, for this test's database, role and client address. */
function readmeHba(role: string, database: string): string[] {
  return fenced("conf")
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.trim().startsWith("#"))
    .map((l) => {
      const [type, db, user, address, method] = l.trim().split(/\s+/);
      return [
        type,
        db === "airflow" ? database : db,
        user === "eventstream" ? role : user,
        address === "::/0" ? "::1/128" : "127.0.0.1/32",
        method,
      ].join("  ");
    });
}

describe("least privilege", () => {
  it("a LOGIN REPLICATION role with SELECT only streams from an owner-made publication", async () => {
    const db = uniqueName("lp");
    const role = uniqueName("es_role");
    const password = "pw_" + role;
    await createDatabase(db, "3");
    const logs: string[] = [];
    let stop: (() => Promise<void>) | null = null;
    try {
      await withPg(db, async (c) => {
        for (const s of readmeSql(role, password, db)) await c.query(s);
      });
      const cfg = daemonConfig(db, {
        PGUSER: role,
        PGPASSWORD: password,
        EVENTSTREAM_CREATE_PUBLICATION: "false",
        EVENTSTREAM_CREATE_SLOT: "false",
      });
      const d = startDaemon(cfg, logs);
      stop = d.stop;
      await waitForStreaming(db).catch((e: unknown) => {
        throw new Error(`${(e as Error).message}\n${logs.slice(-20).join("")}`);
      });
      await withPg(db, async (c) => {
        await c.query("BEGIN");
        await insertDagRun(c, "3", "lp_dag", "r1", "running");
        await insertTi(c, "3", { dag_id: "lp_dag", task_id: "t1", run_id: "r1" });
        await c.query("COMMIT");
        await updateTi(c, { dag_id: "lp_dag", task_id: "t1", run_id: "r1" }, { state: "queued", try_number: 1 });
        await updateTi(c, { dag_id: "lp_dag", task_id: "t1", run_id: "r1" }, { state: "success" });
      });
      const got = await consume(
        [`${db}.events`],
        (all) => all.some((m) => m.event.type === "task_instance" && m.event.state === "success"),
        60_000,
      );
      const tiStates = got.filter((m) => m.event.type === "task_instance").map((m) => m.event.state);
      expect(tiStates).toEqual([null, "queued", "success"]);
      // The role really is not the owner and not a superuser.
      const owner = await withPg(
        db,
        async (c) =>
          (
            await c.query<{ o: string; su: boolean }>(
              `SELECT pg_get_userbyid(relowner) AS o, (SELECT rolsuper FROM pg_roles WHERE rolname = $1) AS su FROM pg_class WHERE relname = 'task_instance'`,
              [role],
            )
          ).rows[0]!,
      );
      expect(owner.o).not.toBe(role);
      expect(owner.su).toBe(false);
    } finally {
      await stop?.().catch(() => undefined);
      await dropDatabase(db);
      await withPg("postgres", (c) => c.query(`DROP ROLE IF EXISTS ${role}`)).catch(() => undefined);
    }
  });

  it(
    "the documented pg_hba.conf lines: the daemon streams without a `replication` line, pg_basebackup is refused; REPLICATION still decodes any table of the database",
    { timeout: 240_000 },
    async () => {
      // A server of its own: the test writes its pg_hba.conf.
      const scratch = await startScratchPostgres({ settings: { wal_level: "logical" } });
      const db = "airflow_lp";
      const role = "es_lp";
      const password = "pw-lp";
      const logs: string[] = [];
      let stop: (() => Promise<void>) | null = null;
      const backupDir = mkdtempSync(join(tmpdir(), "lp-basebackup-"));
      const superuser = (database: string) => new pg.Client({ host: scratch.host, port: scratch.port, user: scratch.user, database });
      const on = async <T>(c: pg.Client, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
        await c.connect();
        try {
          return await fn(c);
        } finally {
          await c.end();
        }
      };
      try {
        await on(superuser("postgres"), (c) => c.query(`CREATE DATABASE ${db}`));
        await on(superuser(db), async (c) => {
          await c.query(airflowFixture("3").sql);
          for (const s of readmeSql(role, password, db)) await c.query(s);
          // A table the role was granted nothing on.
          await c.query("CREATE TABLE public.not_granted (secret text)");
        });
        // The documented lines first (the first matching line decides), then the test's own superuser access.
        const hba = [
          ...readmeHba(role, db),
          "local all all trust",
          `host all ${scratch.user} 127.0.0.1/32 trust`,
          `host replication ${scratch.user} 127.0.0.1/32 trust`,
        ];
        expect(hba.some((l) => /^host\S*\s+replication\s+/.test(l) && !l.endsWith("reject") && !l.includes(scratch.user))).toBe(false);
        writeFileSync(join(scratch.dir, "data/pg_hba.conf"), `${hba.join("\n")}\n`);
        await on(superuser("postgres"), (c) => c.query("SELECT pg_reload_conf()"));

        // The daemon's streaming connection (replication=database) is matched by the database line.
        const cfg = loadConfig({
          ...daemonEnv(db),
          PGHOST: scratch.host,
          PGPORT: String(scratch.port),
          PGUSER: role,
          PGPASSWORD: password,
          EVENTSTREAM_CHECKPOINT_TOPIC: `checkpoints.${uniqueName("lp")}`,
          EVENTSTREAM_TOPIC: `${uniqueName("lp")}.events`,
          EVENTSTREAM_CREATE_PUBLICATION: "false",
          EVENTSTREAM_CREATE_SLOT: "false",
        });
        const d = startDaemon(cfg, logs);
        stop = d.stop;
        await waitFor(
          "the daemon streaming from the scratch server",
          () =>
            on(
              superuser("postgres"),
              async (c) =>
                (
                  await c.query(
                    "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1",
                    [db],
                  )
                ).rowCount,
            ),
          60_000,
        ).catch((e: unknown) => {
          throw new Error(`${(e as Error).message}\n${logs.slice(-20).join("")}`);
        });
        await on(superuser(db), async (c) => {
          await insertDagRun(c, "3", "lp_dag", "r1", "running");
          await insertTi(c, "3", { dag_id: "lp_dag", task_id: "t1", run_id: "r1" });
          await updateTi(c, { dag_id: "lp_dag", task_id: "t1", run_id: "r1" }, { state: "success", try_number: 1 });
        });
        const got = await consume(
          [cfg.topic],
          (all) => all.some((m) => m.event.type === "task_instance" && m.event.state === "success"),
          60_000,
        );
        expect(got.filter((m) => m.event.type === "task_instance").map((m) => m.event.state)).toEqual([null, "success"]);

        // Physical replication: a full copy of the cluster, refused by the reject line.
        let basebackup = "";
        try {
          execFileSync(
            basebackupProgram(),
            ["-h", scratch.host, "-p", String(scratch.port), "-U", role, "-D", join(backupDir, "copy"), "-X", "none", "-w"],
            {
              env: { ...process.env, PGPASSWORD: password },
              stdio: ["ignore", "pipe", "pipe"],
            },
          );
          basebackup = "succeeded";
        } catch (e) {
          basebackup = String((e as { stderr?: Buffer }).stderr ?? e);
        }
        expect(basebackup).toMatch(/pg_hba\.conf rejects replication connection for host "127\.0\.0\.1", user "es_lp"/);

        // What REPLICATION still allows (docs/operations.md says so): a slot of its own decodes a table it cannot SELECT.
        const asRole = new pg.Client({ host: scratch.host, port: scratch.port, user: role, password, database: db });
        await on(asRole, async (c) => {
          await expect(c.query("SELECT * FROM not_granted")).rejects.toThrow(/permission denied/);
          await c.query("SELECT pg_create_logical_replication_slot('lp_peek', 'test_decoding')");
          // synchronous_commit on: decoding reads only flushed WAL, and the scratch server defaults to off.
          await on(superuser(db), async (s) => {
            await s.query("SET synchronous_commit = on");
            await s.query("INSERT INTO not_granted VALUES ('hunter2')");
          });
          const { rows } = await c.query<{ data: string }>("SELECT data FROM pg_logical_slot_get_changes('lp_peek', NULL, NULL)");
          expect(rows.map((r) => r.data).join("\n")).toContain("table public.not_granted: INSERT: secret[text]:'hunter2'");
          await c.query("SELECT pg_drop_replication_slot('lp_peek')");
        });
      } finally {
        await stop?.().catch(() => undefined);
        rmSync(backupDir, { recursive: true, force: true });
        await scratch.stop();
      }
    },
  );
});

/**
 * The server's own pg_basebackup where its bin directory has one (Debian's); the Maven builds of
 * 16-18 (docs/testing.md, PostgreSQL versions) carry no client programs, so Debian's 15 then: it is
 * refused by pg_hba.conf at connection, before it would compare versions, which is what the test asserts.
 */
function basebackupProgram(): string {
  const own = join(postgresBinDir(), "pg_basebackup");
  return existsSync(own) ? own : "/usr/lib/postgresql/15/bin/pg_basebackup";
}
