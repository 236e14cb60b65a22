import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { loadConfig } from "../../src/config.js";
import { ConfigError, PrivilegeError, PublicationError, SlotError, WalLevelError, type UserActionError } from "../../src/errors.js";
import { ReplicationStream } from "../../src/source/replication.js";
import {
  consume,
  createDatabase,
  daemonConfig,
  daemonEnv,
  dropDatabase,
  sleep,
  spawnDaemon,
  startDaemon,
  uniqueName,
  waitFor,
  withPg,
  type DaemonProcess,
  expectUserAction as expectUserActionOf,
  withTimeout,
} from "../support/harness.js";
import { insertDagRun } from "../support/airflow-rows.js";
import { freePort, startScratchPostgres } from "../support/scratch-postgres.js";

/**
 * Every condition an operator must fix stops the daemon (exit code 2) with a message that says
 * what to run or set; conditions expected to clear by themselves (slot held by another process,
 * Kafka down) are waited out without losing anything; no output ever carries the password.
 */

/** The password of every role these tests create: it must never show up in any output. */
const SECRET = `s3cr3t-${randomBytes(8).toString("hex")}`;
const WRONG_SECRET = `${SECRET}-wrong`;

/** Every line any daemon wrote in this file (spawned: stdout and stderr; in-process: the log). */
const outputs: { what: string; lines: string[] }[] = [];

const norepl = uniqueName("err_norepl"); // LOGIN, no REPLICATION, owns nothing
const repl = uniqueName("err_repl"); // LOGIN REPLICATION, owns nothing; SELECT granted per test
const databases: string[] = [];
const spawned: DaemonProcess[] = [];
const inProcess: ReturnType<typeof startDaemon>[] = [];

async function newDatabase(prefix: string, major: "2" | "3"): Promise<string> {
  const db = uniqueName(prefix);
  databases.push(db);
  await createDatabase(db, major);
  return db;
}

/** What the daemon captures with the default configuration (notifications on: xcom too). */
const TABLES = `"public"."task_instance", "public"."dag_run", "public"."xcom"`;
const grantRead = (db: string, role: string) => withPg(db, (c) => c.query(`GRANT SELECT ON ${TABLES} TO ${role}`));
const createPublication = (db: string) => withPg(db, (c) => c.query(`CREATE PUBLICATION ${db} FOR TABLE ${TABLES}`));

/** Environment of a daemon connecting as `role` (with the secret password) to `db`. */
function roleEnv(db: string, role: string, extra: Record<string, string> = {}): Record<string, string> {
  return daemonEnv(db, { PGUSER: role, PGPASSWORD: SECRET, ...extra });
}

type LogLine = { msg?: string; err?: string; retryInMs?: number; retryCount?: number; retryTime?: number; namespace?: string };

function parsed(lines: string[]): LogLine[] {
  return lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

const restarts = (lines: string[]) => parsed(lines).filter((l) => l.msg?.startsWith("session ended; restarting"));

const expectUserAction = (what: string, env: Record<string, string>, cls: typeof UserActionError, needles: string[], withinMs?: number) =>
  expectUserActionOf({ outputs, spawned }, what, env, cls, needles, withinMs);

const slotsOf = (db: string) =>
  withPg(
    "postgres",
    async (c) =>
      (await c.query<{ slot_name: string; plugin: string }>("SELECT slot_name, plugin FROM pg_replication_slots WHERE database = $1", [db]))
        .rows,
  );
const publicationsOf = (db: string) =>
  withPg(db, async (c) => (await c.query<{ pubname: string }>("SELECT pubname FROM pg_publication")).rows.map((r) => r.pubname));

/** Kafka unreachable: this daemon starts first and runs in the background while the other tests run. */
let kafkaDown: { proc: DaemonProcess; db: string; port: number; startedAt: number } | null = null;

beforeAll(async () => {
  await withPg("postgres", async (c) => {
    await c.query(`CREATE ROLE ${norepl} LOGIN PASSWORD '${SECRET}'`);
    await c.query(`CREATE ROLE ${repl} LOGIN REPLICATION PASSWORD '${SECRET}'`);
  });
  // Everything right on the PostgreSQL side (SELECT granted, publication made by the owner), Kafka
  // on a port nothing listens on.
  const db = await newDatabase("err_kafka", "2");
  await grantRead(db, repl);
  await createPublication(db);
  const port = await freePort();
  // At debug: the tests below look at kafkajs's own lines too, which go out at debug.
  const proc = spawnDaemon(roleEnv(db, repl, { KAFKA_BROKERS: `127.0.0.1:${port}`, LOG_LEVEL: "debug" }));
  spawned.push(proc);
  outputs.push({ what: "Kafka unreachable", lines: proc.output });
  kafkaDown = { proc, db, port, startedAt: Date.now() };
});

afterAll(async () => {
  for (const d of inProcess) await d.stop().catch(() => undefined);
  for (const p of spawned) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
  await Promise.all(spawned.map((p) => withTimeout(p.exited, 5_000)));
  for (const db of databases) await dropDatabase(db);
  await withPg("postgres", async (c) => {
    await c.query(`DROP ROLE IF EXISTS ${norepl}`);
    await c.query(`DROP ROLE IF EXISTS ${repl}`);
  });
});

describe("errors an operator must act on", () => {
  it("wal_level other than logical: WalLevelError, exit 2, with the ALTER SYSTEM to run", async () => {
    const scratch = await startScratchPostgres({ settings: { wal_level: "replica" } });
    try {
      const env = {
        ...daemonEnv("postgres"),
        PGHOST: scratch.host,
        PGPORT: String(scratch.port),
        PGUSER: scratch.user,
        PGPASSWORD: SECRET, // trust authentication: ignored, but it must not be echoed either
        EVENTSTREAM_SLOT: "scratch",
        EVENTSTREAM_PUBLICATION: "scratch",
      };
      const message = await expectUserAction("wal_level=replica", env, WalLevelError, ["ALTER SYSTEM SET wal_level = logical", "restart"]);
      expect(message).toContain('wal_level is "replica"');
    } finally {
      await scratch.stop();
    }
  });

  it("role without REPLICATION: PrivilegeError with the ALTER ROLE to run; nothing created", async () => {
    const db = await newDatabase("err_norepl", "2");
    await expectUserAction("no REPLICATION", roleEnv(db, norepl), PrivilegeError, [`ALTER ROLE "${norepl}" WITH REPLICATION;`]);
    expect(await slotsOf(db)).toEqual([]);
    expect(await publicationsOf(db)).toEqual([]);
  });

  it("role without SELECT on the tables: PrivilegeError with the GRANT; once granted, PublicationError: only the owner may create it", async () => {
    const db = await newDatabase("err_noselect", "3");
    const env = roleEnv(db, repl);
    const grant = `GRANT SELECT ON ${TABLES} TO "${repl}";`;
    await expectUserAction("no SELECT", env, PrivilegeError, [grant]);

    // The statement from the message, as given, is the fix.
    await withPg(db, (c) => c.query(grant));
    const createSql = `CREATE PUBLICATION "${db}" FOR TABLE ${TABLES};`;
    const message = await expectUserAction("not the owner, EVENTSTREAM_CREATE_PUBLICATION=true", env, PublicationError, [
      createSql,
      "owner",
    ]);
    expect(message).toContain("EVENTSTREAM_CREATE_PUBLICATION=false");
    expect(await publicationsOf(db)).toEqual([]);
    expect(await slotsOf(db)).toEqual([]);
  });

  it("EXECUTE on pg_logical_emit_message revoked: PrivilegeError with the GRANT (snapshots write their watermarks with it)", async () => {
    const db = await newDatabase("err_noemit", "2");
    // PostgreSQL 17 added a fourth argument (flush): the GRANT must name this server's signature.
    const versionNum = await withPg(db, async (c) =>
      Number((await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v),
    );
    const sig = versionNum >= 170000 ? "boolean, text, text, boolean" : "boolean, text, text";
    await withPg(db, async (c) => {
      await c.query(`GRANT SELECT ON ${TABLES} TO "${repl}"`);
      // Per database (pg_proc is): PostgreSQL grants it to PUBLIC by default.
      await c.query(`REVOKE EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(${sig}) FROM PUBLIC`);
    });
    await expectUserAction("no EXECUTE on pg_logical_emit_message", roleEnv(db, repl), PrivilegeError, [
      `GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(${sig}) TO "${repl}";`,
    ]);
  });

  it("slot of another plugin: SlotError naming the plugin, with the way out; the slot is left alone", async () => {
    const db = await newDatabase("err_plugin", "2");
    await grantRead(db, repl);
    await createPublication(db);
    await withPg(db, (c) => c.query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", [db]));
    await expectUserAction("slot of test_decoding", roleEnv(db, repl), SlotError, [
      'plugin "test_decoding"',
      "EVENTSTREAM_SLOT",
      `SELECT pg_drop_replication_slot('${db}');`,
    ]);
    expect(await slotsOf(db)).toEqual([{ slot_name: db, plugin: "test_decoding" }]);
  });

  it("slot in use by another connection: waits and retries, then streams, delivering what changed meanwhile", async () => {
    const db = await newDatabase("err_busy", "2");
    await createPublication(db);
    await withPg(db, (c) => c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [db]));
    const cfg = daemonConfig(db);

    // Another reader holds the slot (and never acknowledges anything).
    const holder = new ReplicationStream(cfg, pino({ level: "silent" }));
    let released = false;
    try {
      await holder.start({ onData: () => undefined, onKeepalive: () => undefined });
      expect(
        (await withPg("postgres", (c) => c.query("SELECT active FROM pg_replication_slots WHERE slot_name = $1", [db]))).rows[0],
      ).toEqual({ active: true });

      const lines: string[] = [];
      outputs.push({ what: "slot in use (in-process)", lines });
      const d = startDaemon(cfg, lines);
      inProcess.push(d);
      let ended = false;
      d.done.then(
        () => (ended = true),
        () => (ended = true),
      );

      const waiting = () => parsed(lines).filter((l) => /in use/.test(`${l.msg ?? ""} ${l.err ?? ""}`));
      await waitFor("a log line saying the slot is in use", async () => waiting().length >= 1, 15_000);
      expect(waiting()[0]!.err).toMatch(new RegExp(`replication slot "${db}" is in use .*waiting for it to be released`));

      // A change committed while the daemon waits; then a few seconds of waiting: it must not give up.
      await withPg(db, (c) => insertDagRun(c, "2", "while_waiting", "manual__while_waiting"));
      await sleep(3_000);
      expect(ended).toBe(false);
      expect(parsed(lines).some((l) => l.msg === "streaming")).toBe(false);

      // Released: the daemon, still retrying, takes the slot over promptly.
      await holder.stop();
      released = true;
      const releasedAt = Date.now();
      await waitFor("the daemon to stream", async () => parsed(lines).some((l) => l.msg === "streaming"), 20_000);
      expect(Date.now() - releasedAt).toBeLessThan(10_000);
      const got = await consume([`${db}.events`], (all) => all.some((m) => m.event.dag_id === "while_waiting"), 30_000);
      expect(
        got.map((m) => [m.event.type, m.event.dag_id, (m.event as { op?: string }).op]),
        `daemon log:\n${lines.join("")}`,
      ).toContainEqual(["dag_run", "while_waiting", "insert"]);
      expect(ended).toBe(false);
      await d.stop();
    } finally {
      if (!released) await holder.stop();
    }
  });

  it("publication or slot missing and creation disabled: the exact SQL to run; after running it nothing is lost", async () => {
    const db = await newDatabase("err_missing", "3");
    await grantRead(db, repl);
    const env = roleEnv(db, repl, { EVENTSTREAM_CREATE_PUBLICATION: "false", EVENTSTREAM_CREATE_SLOT: "false" });

    // Without notifications only the two state tables are captured.
    const withoutXcom = await startDaemon(loadConfig({ ...env, EVENTSTREAM_NOTIFICATIONS: "false" })).done.catch((e: unknown) => e);
    expect(withoutXcom).toBeInstanceOf(PublicationError);
    expect((withoutXcom as Error).message).toContain(`CREATE PUBLICATION "${db}" FOR TABLE "public"."task_instance", "public"."dag_run";`);

    const createPub = `CREATE PUBLICATION "${db}" FOR TABLE ${TABLES};`;
    await expectUserAction("publication missing", env, PublicationError, [createPub, "EVENTSTREAM_CREATE_PUBLICATION"]);
    expect(await slotsOf(db)).toEqual([]);
    await withPg(db, (c) => c.query(createPub)); // as the owner, as the message says

    // On 17+ the slot is a failover slot (EVENTSTREAM_FAILOVER_SLOT=auto): the SQL names the flag.
    const versionNum = await withPg(db, async (c) =>
      Number((await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v),
    );
    const createSlot =
      versionNum >= 170000
        ? `SELECT pg_create_logical_replication_slot('${db}', 'pgoutput', false, false, true);`
        : `SELECT pg_create_logical_replication_slot('${db}', 'pgoutput');`;
    await expectUserAction("slot missing", env, SlotError, [createSlot, "EVENTSTREAM_CREATE_SLOT"]);
    await withPg(db, (c) => c.query(createSlot));

    // The stream starts at the slot's creation: a change after it, before the daemon runs, is delivered.
    await withPg(db, (c) => insertDagRun(c, "3", "after_slot", "manual__after_slot"));
    const lines: string[] = [];
    outputs.push({ what: "after the fixes (in-process)", lines });
    const d = startDaemon(loadConfig(env), lines);
    inProcess.push(d);
    await waitFor("the daemon to stream", async () => parsed(lines).some((l) => l.msg === "streaming"), 20_000);
    const got = await consume([`${db}.events`], (all) => all.some((m) => m.event.dag_id === "after_slot"), 30_000);
    expect(
      got.map((m) => [m.event.type, m.event.dag_id, (m.event as { op?: string }).op]),
      `daemon log:\n${lines.join("")}`,
    ).toContainEqual(["dag_run", "after_slot", "insert"]);
    await d.stop();
  });

  it("bad configuration: exit 2, every bad variable listed on stderr with the value refused, never the password", async () => {
    const env = { ...daemonEnv("postgres"), PGPASSWORD: SECRET, PGPORT: "abc", EVENTSTREAM_SLOT: "Bad-Name" };
    let thrown: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ConfigError);

    const proc = spawnDaemon(env);
    spawned.push(proc);
    outputs.push({ what: "bad configuration", lines: proc.output });
    const stderr: string[] = [];
    proc.proc.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")));
    expect(await withTimeout(proc.exited, 15_000)).toBe(2);
    const text = stderr.join("");
    expect(text).toMatch(/^\s*PGPORT="abc" \(from the environment\): /m);
    expect(text).toMatch(/^\s*EVENTSTREAM_SLOT="Bad-Name" \(from the environment\): .*lower-case/m);
    expect(text).not.toContain(SECRET);
  });

  it("bounds the launcher's heap cannot hold: exit 2 before connecting, naming the setting and the NODE_OPTIONS to use; that NODE_OPTIONS works", async () => {
    const env = { ...daemonEnv("postgres"), PGPASSWORD: SECRET, EVENTSTREAM_STATE_CACHE_SIZE: "2000000" };
    const proc = spawnDaemon(env);
    spawned.push(proc);
    outputs.push({ what: "heap limit", lines: proc.output });
    expect(await withTimeout(proc.exited, 15_000)).toBe(2);
    const text = proc.output.join("\n");
    expect(text).toMatch(/EVENTSTREAM_STATE_CACHE_SIZE=2000000.*this Node allows \d+ MB/);
    const suggested = /NODE_OPTIONS=(--max-old-space-size=\d+)/.exec(text)?.[1];
    expect(suggested).toBeDefined();
    // With the suggested flag the same settings pass the check (and then fail on the bad slot
    // database, which proves the check let it through).
    const again = spawnDaemon({ ...env, NODE_OPTIONS: suggested!, PGDATABASE: "no_such_database_here" });
    spawned.push(again);
    outputs.push({ what: "heap limit raised", lines: again.output });
    expect(await withTimeout(again.exited, 30_000)).toBe(2);
    expect(again.output.join("\n")).not.toMatch(/this Node allows/);
    expect(again.output.join("\n")).toMatch(/no_such_database_here/);
  });

  it("wrong password: PrivilegeError saying to check PGUSER and PGPASSWORD", async () => {
    const db = await newDatabase("err_password", "2");
    await expectUserAction("wrong password", roleEnv(db, repl, { PGPASSWORD: WRONG_SECRET }), PrivilegeError, [
      `role "${repl}"`,
      "wrong password",
      "PGPASSWORD",
    ]);
  });
});

describe("Kafka unreachable", () => {
  it("says so at once in its own words, then every 30 s while it lasts; kafkajs's detail at debug; never exits by itself", async () => {
    const { proc, port, startedAt } = kafkaDown!;
    type Line = LogLine & { level?: number; time?: number; problem?: string; forSeconds?: number; component?: string };
    const lines = () => parsed(proc.output) as Line[];
    const warned = () => lines().filter((l) => (l.level ?? 0) >= 40);
    await waitFor("the first line about Kafka", async () => warned().length >= 1, 20_000, 100);
    const first = warned()[0]!;
    expect(first.msg).toContain(`Kafka at 127.0.0.1:${port} is unreachable`);
    expect(first.problem).toBe("kafka unreachable");
    // At once: kafkajs's first failed connection, not after its minute of retries.
    expect(first.time! - startedAt).toBeLessThan(10_000);
    await waitFor("the repeat", async () => warned().length >= 2, Math.max(45_000 - (Date.now() - startedAt), 10_000), 250);
    const [, again] = warned();
    expect(again!.msg).toMatch(new RegExp(`^still: Kafka at 127\\.0\\.0\\.1:${port} is unreachable`));
    expect(again!.forSeconds).toBeGreaterThanOrEqual(29);
    expect(again!.time! - first.time!).toBeGreaterThanOrEqual(29_000);
    // Every line of the daemon at warn or above is the first or a repeat, each repeat at least 29 s after
    // the one before: no kafkajs error with its stack, no restart line. How many repeats there are depends
    // on how long the other tests of this file took (the daemon runs from beforeAll), so it is not counted.
    const all = warned();
    for (const [i, l] of all.entries()) {
      if (i === 0) continue;
      expect(l.msg, `warn line ${i}`).toMatch(new RegExp(`^still: Kafka at 127\\.0\\.0\\.1:${port} is unreachable`));
      expect(l.time! - all[i - 1]!.time!, `gap before warn line ${i}`).toBeGreaterThanOrEqual(29_000);
    }
    const kafkajs = lines().filter((l) => l.component === "kafkajs");
    expect(kafkajs.length).toBeGreaterThan(0);
    expect(kafkajs.every((l) => l.level === 20)).toBe(true);
    expect(restarts(proc.output)).toEqual([]);
    expect(proc.proc.exitCode).toBeNull();
  }, 60_000);

  it("SIGTERM while waiting for Kafka: exit 0 within 15 s", async () => {
    const { proc } = kafkaDown!;
    // Signal while a connection attempt is under way (not during the supervisor's sleep): that is
    // where the daemon spends nearly all its time while Kafka is down.
    const seen = proc.output.length;
    await waitFor("a connection attempt", async () => proc.output.slice(seen).some((l) => /"namespace":"BrokerPool"/.test(l)), 30_000);
    expect(proc.proc.exitCode).toBeNull();
    const t0 = Date.now();
    proc.proc.kill("SIGTERM");
    const code = await withTimeout(proc.exited, 15_000);
    const elapsed = Date.now() - t0;
    expect(code, `exit after SIGTERM (${elapsed} ms); last output:\n${proc.output.slice(-5).join("\n")}`).toBe(0);
    expect(elapsed).toBeLessThan(15_000);
  }, 60_000);
});

describe("secrets", () => {
  it("no output of any daemon above carries the password", () => {
    const lines = outputs.flatMap((o) => o.lines.map((l) => ({ what: o.what, l })));
    expect(outputs.length).toBeGreaterThanOrEqual(10);
    expect(lines.length).toBeGreaterThan(50);
    const leaks = lines.filter(({ l }) => l.includes(SECRET) || l.includes("s3cr3t"));
    expect(leaks).toEqual([]);
  });
});
