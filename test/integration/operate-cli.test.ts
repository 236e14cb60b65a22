import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  airflowFixture,
  createDatabase,
  daemonEnv,
  dropDatabase,
  spawnDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
  type DaemonProcess,
} from "../support/harness.js";
import { insertDagRun, updateDagRun } from "../support/airflow-rows.js";
import { runCli, type CliRun } from "../support/cli.js";
import { freePort, startScratchPostgres, type ScratchPostgres } from "../support/scratch-postgres.js";

/**
 * The operator's commands (status, check, tail) through the real launcher against the real
 * services: a healthy daemon, then each thing that needs action, with its exit code and the line
 * that says what to do. Also the first start's log: no warning, no kafkajs line above debug.
 */
type Run = CliRun;
const cli = runCli;

/** The line of a text report about `check` (e.g. "wal_level"). */
const lineOf = (r: Run, check: string) =>
  r.out.split("\n").find((l) => l.slice(9).startsWith(`${check}:`)) ?? `(no ${check} line in:\n${r.out}${r.err})`;

describe("the command line", () => {
  it("--version prints the package's version and Node's; --help on every command; an unknown command exits 2", async () => {
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { version: string };
    const v = await cli(["--version"], {});
    expect(v.code).toBe(0);
    expect(v.out.trim()).toBe(`${pkg.version} (Node ${process.versions.node})`);
    for (const cmd of ["run", "reset-checkpoint", "replay", "snapshot", "status", "check", "tail"]) {
      const h = await cli([cmd, "--help"], {});
      expect(h.code, cmd).toBe(0);
      expect(h.out, cmd).toContain(`Usage: airflow-eventstream ${cmd}`);
    }
    const bad = await cli(["stauts"], {});
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("unknown command 'stauts'");
    expect(bad.err).toContain("(Did you mean status?)");
  });
});

describe("a healthy daemon", () => {
  const db = uniqueName("op_ok");
  let env: Record<string, string>;
  let daemon: DaemonProcess;

  beforeAll(async () => {
    await createDatabase(db, "3");
    env = daemonEnv(db);
    daemon = spawnDaemon(env);
    await waitForStreaming(db);
    await withPg(db, async (c) => {
      for (const dag of ["dag_a", "dag_b"]) {
        const id = await insertDagRun(c, "3", dag, "r1");
        await updateDagRun(c, id, { state: "running" });
      }
    });
    // Both DAGs' events acknowledged: the checkpoint has moved past them.
    await waitFor(
      "4 events in Kafka",
      async () => (await cli(["tail", "--from", "beginning", "--json"], env)).out.trim().split("\n").length >= 4,
      30_000,
      500,
    );
  }, 90_000);

  afterAll(async () => {
    daemon?.proc.kill("SIGTERM");
    await daemon?.exited;
    await dropDatabase(db);
  });

  it("its first start logs no warning and no kafkajs line above debug", () => {
    const lines = daemon.output.flatMap((l) => {
      try {
        return [JSON.parse(l) as { level: number; msg: string; component?: string }];
      } catch {
        return [];
      }
    });
    expect(lines.some((l) => l.msg === "streaming")).toBe(true);
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(lines.filter((l) => l.component === "kafkajs")).toEqual([]);
    expect(daemon.output.filter((l) => !l.startsWith("{"))).toEqual([]);
  });

  it("check: every check ok, exit 0", async () => {
    const r = await cli(["check"], env);
    expect(r.code, r.out + r.err).toBe(0);
    for (const c of ["PostgreSQL", "wal_level", "REPLICATION privilege", "tables", "publication", "Kafka", "gap verdict"])
      expect(lineOf(r, c)).toMatch(/^ok /);
    // A daemon holds the slot: that is how it should be.
    expect(lineOf(r, "replication slot")).toMatch(/^ok .*in use by PostgreSQL backend \d+/);
    const json = JSON.parse((await cli(["check", "--json"], env)).out) as { ok: boolean; checks: { check: string; verdict: string }[] };
    expect(json.ok).toBe(true);
    expect(json.checks.filter((c) => c.verdict === "problem")).toEqual([]);
  });

  it("status: the slot active, the checkpoint, the topics' end offsets; exit 0", async () => {
    const r = await cli(["status", "--json"], env);
    expect(r.code, r.out + r.err).toBe(0);
    const s = JSON.parse(r.out) as {
      ok: boolean;
      slot: { row: { active_pid: number | null; confirmed_flush_lsn: string }; lagBytes: string; retainedBytes: string };
      checkpoint: { ackedLsn: string; ageSeconds: number };
      topics: { topic: string; partitions: { high: string }[] }[];
    };
    expect(s.ok).toBe(true);
    expect(s.slot.row.active_pid).toBeGreaterThan(0);
    expect(BigInt(s.slot.lagBytes)).toBeGreaterThanOrEqual(0n);
    expect(s.checkpoint.ackedLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(s.checkpoint.ageSeconds).toBeLessThan(60);
    const events = s.topics.find((t) => t.topic === env.EVENTSTREAM_TOPIC)!;
    expect(events.partitions.length).toBe(3);
    expect(events.partitions.reduce((n, p) => n + Number(p.high), 0)).toBeGreaterThanOrEqual(4);
    const text = await cli(["status"], env);
    expect(lineOf(text, "replication slot")).toMatch(/^ok .*active, streaming to backend \d+ \(confirmed_flush_lsn /);
    expect(lineOf(text, "daemon")).toContain("no daemon endpoint");
  });

  it("tail: readable lines, --json, --dag, --from a position", async () => {
    const all = await cli(["tail", "--from", "beginning"], env);
    expect(all.code, all.err).toBe(0);
    const lines = all.out.trim().split("\n");
    expect(lines.filter((l) => /key=dag_a update dag run r1 +queued -> running/.test(l))).toHaveLength(1);
    const json = (await cli(["tail", "--from", "beginning", "--json", "--dag", "dag_b"], env)).out.trim().split("\n");
    const events = json.map((l) => JSON.parse(l) as { dag_id: string; state: string; source: { position: string } });
    expect(events.map((e) => [e.dag_id, e.state])).toEqual([
      ["dag_b", "queued"],
      ["dag_b", "running"],
    ]);
    const from = await cli(["tail", "--from", events[1]!.source.position, "--json", "--dag", "dag_b"], env);
    expect(
      from.out
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { state: string }).state),
    ).toEqual(["running"]);
    expect((await cli(["tail"], env)).out).toBe("");
    const bad = await cli(["tail", "--from", "yesterday"], env);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('"yesterday" is not a position, an LSN or a time');
  });

  it("tail --follow prints what is committed after it started", async () => {
    const p = spawn("bin/airflow-eventstream", ["tail", "--follow", "--dag", "dag_c"], { env: { PATH: process.env.PATH ?? "", ...env } });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (err += d.toString()));
    try {
      // Committed only once tail has taken its start offsets (a fixed wait lost the race on a busy machine).
      await waitFor("tail to say it follows", async () => /^following \d+ partition\(s\) of /m.test(err), 30_000, 100);
      await withPg(db, (c) => insertDagRun(c, "3", "dag_c", "r1"));
      await waitFor("the new event", async () => out.includes("key=dag_c insert dag run r1"), 30_000, 200);
    } finally {
      p.kill("SIGTERM");
    }
  });
});

describe("what needs action", () => {
  const dbs: Record<string, string> = {};
  beforeAll(async () => {
    for (const k of ["noslot", "notopic", "nopriv"]) {
      dbs[k] = uniqueName(`op_${k}`);
      await createDatabase(dbs[k], "3");
    }
  });
  afterAll(async () => {
    for (const db of Object.values(dbs)) await dropDatabase(db);
  });

  it("slot missing (EVENTSTREAM_CREATE_SLOT=false): check and status exit 1 and say how to create it", async () => {
    const env = daemonEnv(dbs.noslot!, { EVENTSTREAM_CREATE_SLOT: "false" });
    const check = await cli(["check"], env);
    expect(check.code).toBe(1);
    expect(lineOf(check, "replication slot")).toMatch(
      /^PROBLEM .*does not exist and EVENTSTREAM_CREATE_SLOT is false\. Run: SELECT pg_create_logical_replication_slot/,
    );
    const status = await cli(["status"], env);
    expect(status.code).toBe(1);
    expect(lineOf(status, "replication slot")).toMatch(/^PROBLEM .*does not exist.*Start the daemon/);
    // With EVENTSTREAM_CREATE_SLOT (the default) a missing slot is what a first start creates: not a problem.
    const first = await cli(["check"], daemonEnv(dbs.noslot!));
    expect(lineOf(first, "replication slot")).toMatch(/^warning .*the first start creates it/);
  });

  it("topic missing with EVENTSTREAM_CREATE_TOPICS=false: check exits 1 naming the topic and the command", async () => {
    const env = daemonEnv(dbs.notopic!, { EVENTSTREAM_CREATE_TOPICS: "false" });
    const r = await cli(["check"], env);
    expect(r.code).toBe(1);
    expect(lineOf(r, `topic ${env.EVENTSTREAM_TOPIC}`)).toMatch(
      /^PROBLEM .*EVENTSTREAM_CREATE_TOPICS is false: create it \(kafka-topics\.sh --create/,
    );
    const status = await cli(["status"], env);
    expect(status.code).toBe(1);
    expect(lineOf(status, `topic ${env.EVENTSTREAM_TOPIC}`)).toMatch(/^PROBLEM .*does not exist/);
  });

  it("Kafka unreachable: check and status exit 1 within seconds, saying so", async () => {
    const env = daemonEnv(dbs.notopic!, { KAFKA_BROKERS: `127.0.0.1:${await freePort()}` });
    const t0 = Date.now();
    const r = await cli(["check"], env);
    expect(r.code).toBe(1);
    expect(lineOf(r, "Kafka")).toMatch(/^PROBLEM .*Kafka at 127\.0\.0\.1:\d+ is unreachable/);
    expect(lineOf(r, "gap verdict")).toMatch(/^warning .*not assessed/);
    const s = await cli(["status"], env);
    expect(s.code).toBe(1);
    expect(lineOf(s, "Kafka")).toMatch(/^PROBLEM .*unreachable/);
    expect(Date.now() - t0).toBeLessThan(30_000);
  });

  it("missing privilege: a role without REPLICATION is told the ALTER ROLE to run", async () => {
    const role = uniqueName("op_role");
    await withPg(dbs.nopriv!, async (c) => {
      await c.query(`CREATE ROLE ${role} LOGIN PASSWORD 'pw-${role}'`);
      await c.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role}`);
    });
    try {
      const r = await cli(["check"], daemonEnv(dbs.nopriv!, { PGUSER: role, PGPASSWORD: `pw-${role}` }));
      expect(r.code).toBe(1);
      expect(lineOf(r, "REPLICATION privilege")).toContain(
        `lacks the REPLICATION attribute needed to stream changes. As a superuser run: ALTER ROLE "${role}" WITH REPLICATION;`,
      );
      expect(lineOf(r, "tables")).toMatch(/^ok /);
    } finally {
      await withPg(dbs.nopriv!, async (c) => {
        await c.query(`REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ${role}`);
        await c.query(`DROP ROLE ${role}`);
      });
    }
  });

  it("the daemon with PostgreSQL unreachable: one line in its words at once, the retries at debug, no 'session ended'", async () => {
    const port = await freePort();
    const d = spawnDaemon(daemonEnv(dbs.noslot!, { PGPORT: String(port), LOG_LEVEL: "debug" }));
    try {
      const lines = () =>
        d.output.flatMap((l) => {
          try {
            return [JSON.parse(l) as { level: number; msg: string; problem?: string }];
          } catch {
            return [];
          }
        });
      const problem = (level: number) => lines().filter((l) => l.level === level && l.problem === "postgresql unreachable");
      // Retried after 0.5, 1 and 2 s: three more attempts within 5 s.
      await waitFor("three retries", async () => problem(20).length >= 3, 20_000, 100);
      expect(problem(40).map((l) => l.msg)).toEqual([
        expect.stringMatching(new RegExp(`^PostgreSQL at 127\\.0\\.0\\.1:${port} is unreachable \\(.*\\); retrying$`)),
      ]);
      expect(lines().filter((l) => l.level >= 40)).toHaveLength(1);
      expect(d.output.filter((l) => l.includes("session ended"))).toEqual([]);
    } finally {
      d.proc.kill("SIGTERM");
      await d.exited;
    }
  });

  it("a configuration error: exit 2", async () => {
    const r = await cli(["check"], daemonEnv(dbs.noslot!, { EVENTSTREAM_TOPIC_PARTITIONS: "many" }));
    expect(r.code).toBe(2);
    expect(r.err).toContain("EVENTSTREAM_TOPIC_PARTITIONS");
  });
});

describe("server settings (scratch clusters)", () => {
  let replica: ScratchPostgres;
  let keep1mb: ScratchPostgres;
  beforeAll(async () => {
    [replica, keep1mb] = await Promise.all([
      startScratchPostgres({ settings: { wal_level: "replica" } }),
      startScratchPostgres({ settings: { wal_level: "logical", max_slot_wal_keep_size: "1MB" } }),
    ]);
  }, 60_000);
  afterAll(async () => {
    await replica?.stop();
    await keep1mb?.stop();
  });

  async function scratchDb(s: ScratchPostgres, db: string): Promise<Record<string, string>> {
    const on = async (database: string, sql: string) => {
      const c = new pg.Client({ host: s.host, port: s.port, user: s.user, database });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    };
    await on("postgres", `CREATE DATABASE ${db}`);
    await on(db, airflowFixture("3").sql);
    return daemonEnv(db, { PGHOST: s.host, PGPORT: String(s.port), PGUSER: s.user, PGPASSWORD: "" });
  }

  it("wal_level replica: check exits 1 with the ALTER SYSTEM to run", async () => {
    const env = await scratchDb(replica, uniqueName("op_wal"));
    const r = await cli(["check"], env);
    expect(r.code).toBe(1);
    expect(lineOf(r, "wal_level")).toMatch(/^PROBLEM +wal_level: wal_level is "replica".*ALTER SYSTEM SET wal_level = logical/);
  });

  it("slot invalidated by max_slot_wal_keep_size: check and status exit 1 with the gap and the recovery", async () => {
    const db = uniqueName("op_lost");
    const env = await scratchDb(keep1mb, db);
    const c = new pg.Client({ host: keep1mb.host, port: keep1mb.port, user: keep1mb.user, database: db });
    await c.connect();
    try {
      await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [db]);
      await c.query("CREATE TABLE filler (id serial PRIMARY KEY, payload text)");
      for (let i = 0; i < 30; i++) {
        const { rows } = await c.query<{ wal_status: string }>("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", [db]);
        if (rows[0]?.wal_status === "lost") break;
        await c.query("INSERT INTO filler (payload) SELECT repeat('x', 1000) FROM generate_series(1, 2000)");
        await c.query("SELECT pg_switch_wal()");
        await c.query("CHECKPOINT");
      }
    } finally {
      await c.end();
    }
    const r = await cli(["check"], env);
    expect(r.code).toBe(1);
    expect(lineOf(r, "replication slot")).toMatch(/^PROBLEM .*invalidated by PostgreSQL \(wal_status lost/);
    expect(lineOf(r, "gap verdict")).toMatch(/^PROBLEM .*GAP IN THE EVENT STREAM.*airflow-eventstream reset-checkpoint/);
    const s = await cli(["status"], env);
    expect(s.code).toBe(1);
    expect(lineOf(s, "replication slot")).toMatch(/^PROBLEM .*invalidated.*reset-checkpoint/);
  }, 90_000);
});
