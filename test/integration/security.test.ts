import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import type { SASLOptions } from "kafkajs";
import { loadConfig } from "../../src/config.js";
import { PrivilegeError, TlsError, type UserActionError } from "../../src/errors.js";
import { pgClientConfig } from "../../src/source/connection.js";
import { StreamEvent } from "../../src/airflow/events.js";
import {
  consume,
  createDatabase,
  daemonEnv,
  dropDatabase,
  spawnDaemon,
  tlsServices,
  uniqueName,
  waitForStreaming,
  withPg,
  type DaemonProcess,
  expectUserAction as expectUserActionOf,
  withTimeout,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateDagRun, updateTi } from "../support/airflow-rows.js";
import type { TlsServices } from "../support/services.js";

/**
 * The daemon's security settings against services configured that way (scripts/services.sh: a test
 * CA, Kafka's SASL_SSL listener with SCRAM users, PostgreSQL with ssl=on):
 * - Kafka over TLS with SCRAM-SHA-256 and SCRAM-SHA-512 streams exactly what changed;
 * - PostgreSQL with PGSSLMODE=verify-full streams, and every connection it opens is TLS;
 * - a wrong password, a CA that did not sign the certificate, or a host name the certificate does
 *   not list stops the daemon (exit 2) with a message naming what to set;
 * - no output carries a password.
 */

/** The password of the PostgreSQL role these tests create. */
const SECRET = `s3cr3t-${randomBytes(8).toString("hex")}`;
/** Every line any daemon wrote in this file. */
const outputs: { what: string; lines: string[] }[] = [];
const databases: string[] = [];
const spawned: DaemonProcess[] = [];

/** pg_hba.conf of the test services refuses non-TLS connections of this role's members. */
const TLS_ONLY_GROUP = "eventstream_tls_only";
/** LOGIN REPLICATION, member of TLS_ONLY_GROUP: whatever connects as it, connects over TLS. */
const tlsRole = uniqueName("sec_tls");

let tls: TlsServices;
let wrongSasl: string;
let scratch: string;
/** A CA that signed neither server's certificate. */
let wrongCa: string;

beforeAll(async () => {
  tls = tlsServices();
  wrongSasl = `${tls.saslPassword}-wrong-${randomBytes(4).toString("hex")}`;
  scratch = mkdtempSync(join(tmpdir(), "security-test-"));
  wrongCa = join(scratch, "other-ca.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      join(scratch, "other-ca.key"),
      "-out",
      wrongCa,
      "-days",
      "2",
      "-subj",
      "/CN=not the test CA",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  await withPg("postgres", async (c) => {
    // The group may exist already (an earlier run): it is never dropped, other runs may use it.
    await c.query(`DO $$ BEGIN CREATE ROLE ${TLS_ONLY_GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await c.query(`CREATE ROLE ${tlsRole} LOGIN REPLICATION PASSWORD '${SECRET}' IN ROLE ${TLS_ONLY_GROUP}`);
  });
});

afterAll(async () => {
  for (const p of spawned) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
  await Promise.all(spawned.map((p) => withTimeout(p.exited, 5_000)));
  for (const db of databases) await dropDatabase(db);
  await withPg("postgres", (c) => c.query(`DROP ROLE IF EXISTS ${tlsRole}`));
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

async function newDatabase(prefix: string): Promise<string> {
  const db = uniqueName(prefix);
  databases.push(db);
  await createDatabase(db, "3");
  return db;
}

/** The daemon's Kafka settings for the SASL_SSL listener. */
function saslEnv(mechanism: "scram-sha-256" | "scram-sha-512", password = tls.saslPassword): Record<string, string> {
  return {
    KAFKA_BROKERS: tls.kafkaSaslBrokers.join(","),
    KAFKA_SSL: "true",
    KAFKA_SSL_CA_FILE: tls.caFile,
    KAFKA_SASL_MECHANISM: mechanism,
    KAFKA_SASL_USERNAME: tls.saslUsername,
    KAFKA_SASL_PASSWORD: password,
  };
}

/** The daemon's PostgreSQL settings: the TLS-only role, verify-full against the test CA. */
function pgTlsEnv(db: string, extra: Record<string, string> = {}): Record<string, string> {
  return daemonEnv(db, {
    PGHOST: tls.pgTlsHost,
    PGUSER: tlsRole,
    PGPASSWORD: SECRET,
    PGSSLMODE: "verify-full",
    PGSSLROOTCERT: tls.caFile,
    // Publication made by the owner below: the role owns no table.
    EVENTSTREAM_CREATE_PUBLICATION: "false",
    ...extra,
  });
}

/** What the TLS-only role needs in `db`: SELECT, and the publication (made by the tables' owner). */
async function prepareForRole(db: string): Promise<void> {
  await withPg(db, async (c) => {
    await c.query(`GRANT SELECT ON public.task_instance, public.dag_run, public.xcom TO ${tlsRole}`);
    await c.query(`CREATE PUBLICATION ${db} FOR TABLE public.task_instance, public.dag_run, public.xcom`);
  });
}

/** One run of one task, as Airflow writes it; returns the events it must produce, in order. */
async function playRun(db: string, dag: string): Promise<[string, string, string | null, string | null][]> {
  const run = "manual__2026-11-25T00:00:00+00:00";
  const k = { dag_id: dag, task_id: "t1", run_id: run };
  await withPg(db, async (c) => {
    await c.query("BEGIN");
    const id = await insertDagRun(c, "3", dag, run, "running");
    await insertTi(c, "3", k);
    await c.query("COMMIT");
    await updateTi(c, k, { state: "scheduled", try_number: 1 });
    await updateTi(c, k, { state: "queued" });
    await updateTi(c, k, { state: "running", hostname: "worker-1" });
    await updateTi(c, k, { state: "success" });
    await updateDagRun(c, id, { state: "success" });
  });
  return [
    ["dag_run", "insert", null, "running"],
    ["task_instance", "insert", null, null],
    ["task_instance", "update", null, "scheduled"],
    ["task_instance", "update", "scheduled", "queued"],
    ["task_instance", "update", "queued", "running"],
    ["task_instance", "update", "running", "success"],
    ["dag_run", "update", "running", "success"],
  ];
}

/** Reads the topic until the run's last event; the events as [type, op, previous, state]. */
async function readRun(db: string, dag: string, client?: Parameters<typeof consume>[3]) {
  const got = await consume(
    [`${db}.events`],
    (all) => all.some((m) => m.event.type === "dag_run" && m.event.state === "success"),
    60_000,
    client,
  );
  const events = got.map((m) => StreamEvent.parse(m.event));
  expect(got.every((m) => m.key === dag)).toBe(true);
  return events.map((e) => [
    e.type,
    (e as { op: string }).op,
    (e as { previous_state: string | null }).previous_state,
    (e as { state: string | null }).state,
  ]);
}

function spawnTracked(what: string, env: Record<string, string>): DaemonProcess {
  const proc = spawnDaemon(env);
  spawned.push(proc);
  outputs.push({ what, lines: proc.output });
  return proc;
}

async function stopCleanly(proc: DaemonProcess): Promise<void> {
  proc.proc.kill("SIGTERM");
  expect(await withTimeout(proc.exited, 30_000), `exit after SIGTERM; output:\n${proc.output.slice(-10).join("\n")}`).toBe(0);
}

const expectUserAction = (what: string, env: Record<string, string>, cls: typeof UserActionError, needles: string[], withinMs?: number) =>
  expectUserActionOf({ outputs, spawned }, what, env, cls, needles, withinMs);

describe("Kafka over SASL_SSL", () => {
  it.each(["scram-sha-256", "scram-sha-512"] as const)(
    "%s: the daemon streams exactly the run's transitions; a SASL_SSL consumer reads them",
    async (mechanism) => {
      const db = await newDatabase(`sec_${mechanism.replaceAll("-", "")}`);
      const proc = spawnTracked(`SASL_SSL ${mechanism}`, daemonEnv(db, saslEnv(mechanism)));
      await waitForStreaming(db).catch((e: unknown) => {
        throw new Error(`${(e as Error).message}\n${proc.output.slice(-20).join("\n")}`);
      });
      // The daemon says where it publishes: the SASL_SSL listener, nothing else.
      const starting = JSON.parse(await proc.waitForLog(/"msg":"starting"/)) as { brokers: string[] };
      expect(starting.brokers).toEqual(tls.kafkaSaslBrokers);

      const dag = `sec_dag_${mechanism.slice(-3)}`;
      const expected = await playRun(db, dag);
      const sasl = { mechanism, username: tls.saslUsername, password: tls.saslPassword } as SASLOptions;
      const events = await readRun(db, dag, {
        brokers: tls.kafkaSaslBrokers,
        ssl: { ca: [readFileSync(tls.caFile, "utf8")], rejectUnauthorized: true },
        sasl,
      });
      expect(events).toEqual(expected);
      await stopCleanly(proc);
    },
  );

  it("wrong SASL password: PrivilegeError at once, naming the user and the variables to check", async () => {
    const db = await newDatabase("sec_saslpw");
    const message = await expectUserAction("wrong SASL password", daemonEnv(db, saslEnv("scram-sha-512", wrongSasl)), PrivilegeError, [
      `refused the SASL SCRAM-SHA-512 login of user "${tls.saslUsername}"`,
      "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
    ]);
    expect(message).toContain(tls.kafkaSaslBrokers.join(","));
  });

  it("a CA that did not sign the brokers' certificate: TlsError within seconds (not after a minute of retries), naming KAFKA_SSL_CA_FILE", async () => {
    const db = await newDatabase("sec_kafkaca");
    const message = await expectUserAction(
      "Kafka: wrong CA",
      daemonEnv(db, { ...saslEnv("scram-sha-256"), KAFKA_SSL_CA_FILE: wrongCa }),
      TlsError,
      [`not signed by the CA in KAFKA_SSL_CA_FILE (${wrongCa})`, "set KAFKA_SSL_CA_FILE to the PEM file of the CA"],
      15_000,
    );
    expect(message).toContain(`Kafka broker ${tls.kafkaSaslBrokers[0]}`);
  });
});

describe("PostgreSQL with PGSSLMODE=verify-full", () => {
  it("the TLS-only role is refused without TLS (so a daemon that streams as it connects only over TLS)", async () => {
    const db = await newDatabase("sec_nossl");
    await prepareForRole(db);
    await expectUserAction(
      "TLS-only role without TLS",
      pgTlsEnv(db, { PGSSLMODE: "disable", PGHOST: tls.pgTlsWrongHost }),
      PrivilegeError,
      [`refused role "${tlsRole}"`, "over TLS only: set PGSSLMODE=verify-full"],
    );
  });

  it("through a host name in the certificate: streams exactly the run's transitions, every connection TLS, the replication one too", async () => {
    const db = await newDatabase("sec_pgtls");
    await prepareForRole(db);
    const proc = spawnTracked("PostgreSQL verify-full", pgTlsEnv(db));
    await waitForStreaming(db).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}\n${proc.output.slice(-20).join("\n")}`);
    });
    // The walsender streaming from the slot serves a TLS connection of our role...
    const walsender = await withPg(
      "postgres",
      async (c) =>
        (
          await c.query<{ usename: string; backend_type: string; ssl: boolean; version: string | null }>(
            `SELECT a.usename, a.backend_type, s.ssl, s.version
             FROM pg_replication_slots r JOIN pg_stat_activity a ON a.pid = r.active_pid JOIN pg_stat_ssl s ON s.pid = r.active_pid
            WHERE r.slot_name = $1`,
            [db],
          )
        ).rows,
    );
    expect(walsender).toEqual([
      { usename: tlsRole, backend_type: "walsender", ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) },
    ]);
    // ...and none of the role's backends is unencrypted (pg_hba.conf refuses those anyway).
    const plain = await withPg(
      "postgres",
      async (c) =>
        (await c.query("SELECT 1 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1 AND NOT s.ssl", [tlsRole]))
          .rowCount,
    );
    expect(plain).toBe(0);

    const expected = await playRun(db, "sec_dag_pg");
    expect(await readRun(db, "sec_dag_pg")).toEqual(expected);
    await stopCleanly(proc);
  });

  it("through a host name not in the certificate: TlsError naming PGHOST and the certificate's names", async () => {
    const db = await newDatabase("sec_pghost");
    await prepareForRole(db);
    const message = await expectUserAction(
      "PostgreSQL: host not in the certificate",
      pgTlsEnv(db, { PGHOST: tls.pgTlsWrongHost }),
      TlsError,
      [`certificate that does not name "${tls.pgTlsWrongHost}"`, "set PGHOST to a name in the certificate"],
    );
    expect(message).toMatch(/; it names \S/);
  });

  it("with a CA that did not sign the server's certificate: TlsError naming PGSSLROOTCERT", async () => {
    const db = await newDatabase("sec_pgca");
    await prepareForRole(db);
    await expectUserAction("PostgreSQL: wrong CA", pgTlsEnv(db, { PGSSLROOTCERT: wrongCa }), TlsError, [
      `not signed by the CA in PGSSLROOTCERT (${wrongCa})`,
      "set PGSSLROOTCERT to the PEM file of the CA",
    ]);
  });

  it("verify-ca checks the chain only; require encrypts without checking (the daemon's client options, on the real server)", async () => {
    const sslOf = async (env: Record<string, string>): Promise<boolean> => {
      const c = new pg.Client(pgClientConfig(loadConfig(env).pg, { replication: false, applicationName: "security-test" }));
      await c.connect();
      try {
        return (await c.query<{ ssl: boolean }>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).rows[0]!.ssl;
      } finally {
        await c.end();
      }
    };
    const base = pgTlsEnv("postgres", { PGHOST: tls.pgTlsWrongHost });
    expect(await sslOf({ ...base, PGSSLMODE: "verify-ca" })).toBe(true);
    await expect(sslOf({ ...base, PGSSLMODE: "verify-ca", PGSSLROOTCERT: wrongCa })).rejects.toMatchObject({
      code: expect.stringMatching(/^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)$/),
    });
    expect(await sslOf({ ...base, PGSSLMODE: "require", PGSSLROOTCERT: "" })).toBe(true);
    await expect(sslOf({ ...base, PGSSLMODE: "verify-full" })).rejects.toMatchObject({ code: "ERR_TLS_CERT_ALTNAME_INVALID" });
  });
});

describe("secrets", () => {
  it("no output of any daemon above carries a password", () => {
    const lines = outputs.flatMap((o) => o.lines.map((l) => ({ what: o.what, l })));
    expect(outputs.length).toBeGreaterThanOrEqual(12);
    expect(lines.length).toBeGreaterThan(40);
    const leaks = lines.filter(({ l }) => l.includes(SECRET) || l.includes(tls.saslPassword) || l.includes(wrongSasl));
    expect(leaks).toEqual([]);
  });
});
