import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { expect, inject } from "vitest";
import pg from "pg";
import { Kafka, logLevel, type KafkaConfig } from "kafkajs";
import { pino } from "pino";
import { loadConfig, type Config } from "../../src/config.js";
import { Daemon } from "../../src/main.js";
import type { AirflowEvent } from "../../src/airflow/events.js";
import type { UserActionError } from "../../src/errors.js";
import { HOW_TO_CONFIGURE_TLS, type TlsServices } from "./services.js";
import { registerCleanup } from "./cleanup.js";

/** Helpers shared by the integration tests. Each test file owns its database, slot, publication and topics. */

export function services() {
  return inject("services");
}

/**
 * The TLS and SASL endpoints, for the tests that need them; a failure saying which variables to
 * set when they are not configured (never a skip).
 */
export function tlsServices(): TlsServices {
  const s = services();
  if (s.tls === null)
    throw new Error(
      `this test needs TLS and SASL services, and ${s.tlsMissing.join(", ")} ${s.tlsMissing.length === 1 ? "is" : "are"} not set.\n${HOW_TO_CONFIGURE_TLS}`,
    );
  if (!existsSync(s.tls.caFile)) throw new Error(`EVENTSTREAM_TEST_CA_FILE=${s.tls.caFile} does not exist\n${HOW_TO_CONFIGURE_TLS}`);
  return s.tls;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString("hex")}`;
}

export function pgClient(database = "postgres", overrides: Partial<pg.ClientConfig> = {}): pg.Client {
  const s = services();
  return new pg.Client({ ...s.pg, database, ...overrides });
}

export async function withPg<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = pgClient(database);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export type AirflowMajor = "2" | "3";

/**
 * The committed schema dumps of real Airflow versions (scripts/airflow-schemas.sh makes them).
 * "fresh": as `airflow db migrate` creates it on an empty database; "migrated": the same release
 * reached by running every migration, as a long-lived install has it (other column order).
 */
export function airflowFixture(major: AirflowMajor, install: "fresh" | "migrated" = "fresh"): { version: string; sql: string } {
  const versions = JSON.parse(readFileSync("test/fixtures/airflow/versions.json", "utf8")) as {
    files: Record<string, string>;
    migratedFiles: Record<string, string>;
  } & Record<string, unknown>;
  const version = versions[major];
  const file = (install === "fresh" ? versions.files : versions.migratedFiles)[major];
  if (typeof version !== "string" || !file)
    throw new Error(`test/fixtures/airflow/versions.json has no Airflow ${major}.x ${install} entry`);
  return { version, sql: readFileSync(`test/fixtures/airflow/${file}`, "utf8") };
}

/** Databases made by `createDatabase` and not yet dropped: each one's `done()` of test/support/cleanup.ts. */
const databasesToDrop = new Map<string, () => void>();

/**
 * A fresh database holding a real Airflow schema (or none), dropped again by `dropDatabase`; if the
 * test file never gets there (a timeout), by the cleanup hooks after the file.
 */
export async function createDatabase(name: string, major: AirflowMajor | null, install: "fresh" | "migrated" = "fresh"): Promise<void> {
  databasesToDrop.set(
    name,
    registerCleanup("database", name, () => dropDatabase(name)),
  );
  await withPg("postgres", (c) => c.query(`CREATE DATABASE ${name}`));
  if (major !== null) await withPg(name, (c) => c.query(airflowFixture(major, install).sql));
}

/** Drops a test database and the replication slots in it. */
export async function dropDatabase(name: string): Promise<void> {
  await withPg("postgres", async (c) => {
    for (let i = 0; i < 50; i++) {
      const { rows } = await c.query<{ slot_name: string; active_pid: number | null }>(
        "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1",
        [name],
      );
      if (rows.length === 0) break;
      for (const r of rows) {
        if (r.active_pid !== null) await c.query("SELECT pg_terminate_backend($1)", [r.active_pid]);
        else await c.query("SELECT pg_drop_replication_slot($1)", [r.slot_name]).catch(() => undefined);
      }
      await sleep(100);
    }
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
  databasesToDrop.get(name)?.();
  databasesToDrop.delete(name);
}

/** Environment for a daemon pointed at `database`, with its own slot, publication and topics. */
export function daemonEnv(database: string, extra: Record<string, string> = {}): Record<string, string> {
  const s = services();
  return {
    PGHOST: s.pg.host,
    PGPORT: String(s.pg.port),
    PGUSER: s.pg.user,
    PGPASSWORD: s.pg.password,
    PGDATABASE: database,
    KAFKA_BROKERS: s.kafkaBrokers.join(","),
    EVENTSTREAM_SLOT: database,
    EVENTSTREAM_PUBLICATION: database,
    EVENTSTREAM_TOPIC: `${database}.events`,
    // Its own checkpoint topic too: a shared one grows with every test's records, and a slot's first
    // start reads it whole (its key is not among the last records). Not under "<database>.": tests
    // read every topic with that prefix as event topics.
    EVENTSTREAM_CHECKPOINT_TOPIC: `checkpoints.${database}`,
    // Its own current-state topic, for the same reasons.
    EVENTSTREAM_STATE_TOPIC: `state.${database}`,
    // serve's insights writer: its own topic and group too (a shared one would hold another test's
    // partition count and members).
    EVENTSTREAM_SERVE_INSIGHTS_TOPIC: `insights.${database}`,
    EVENTSTREAM_SERVE_INSIGHTS_GROUP: `insights-${database}`,
    EVENTSTREAM_TOPIC_PARTITIONS: "3",
    EVENTSTREAM_STATUS_INTERVAL_SECONDS: "1",
    LOG_LEVEL: "info",
    // Off unless a test asks for it: test files run in parallel, and daemons sharing the default
    // port would refuse to start.
    EVENTSTREAM_HTTP_PORT: "0",
    ...producerFromEnvironment(extra),
    ...modelThreadFromEnvironment(),
    ...extra,
  };
}

/**
 * EVENTSTREAM_KAFKA_PRODUCER from the test run's environment (to run the suites on the wire
 * producer); not for a daemon in exactly-once, which always runs on kafkajs's transactional producer.
 */
function producerFromEnvironment(extra: Record<string, string>): Record<string, string> {
  const producer = process.env.EVENTSTREAM_KAFKA_PRODUCER;
  if (producer === undefined || producer === "" || extra.EVENTSTREAM_DELIVERY === "exactly-once") return {};
  return { EVENTSTREAM_KAFKA_PRODUCER: producer };
}

/** EVENTSTREAM_MODEL_THREAD from the test run's environment (to run the suites with decode and model on a thread of their own). */
function modelThreadFromEnvironment(): Record<string, string> {
  const on = process.env.EVENTSTREAM_MODEL_THREAD;
  return on === undefined || on === "" ? {} : { EVENTSTREAM_MODEL_THREAD: on };
}

export function daemonConfig(database: string, extra: Record<string, string> = {}): Config {
  return loadConfig(daemonEnv(database, extra));
}

/** The daemon in this process; `stop()` is the same path as SIGTERM. */
export function startDaemon(cfg: Config, logLines?: string[]): { daemon: Daemon; done: Promise<void>; stop: () => Promise<void> } {
  const stream = { write: (line: string) => logLines?.push(line) };
  const log = pino({ level: "info" }, stream);
  const daemon = new Daemon(cfg, log);
  const done = daemon.run();
  done.catch(() => undefined);
  // Stopped by the cleanup hooks if the test never stops it (a timeout): it would go on streaming,
  // reconnecting and logging into the next tests.
  const unregister = registerCleanup("daemon", `in-process daemon on slot ${cfg.slot}`, async () => {
    await daemon.stop().catch(() => undefined);
    if (
      (await withTimeout(
        done.catch(() => undefined),
        30_000,
      )) === "timeout"
    )
      throw new Error("the in-process daemon did not stop within 30 s");
  });
  done.then(unregister, unregister);
  return {
    daemon,
    done,
    stop: async () => {
      await daemon.stop();
      await done;
    },
  };
}

export interface DaemonProcess {
  proc: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

/**
 * The daemon as its own process, started as operators start it (bin/airflow-eventstream, which
 * execs Node on dist/cli.js: same pid), for signals and SIGKILL; `args` another command, e.g.
 * ["reset-checkpoint"].
 */
export function spawnDaemon(env: Record<string, string>, args: string[] = ["run"]): DaemonProcess {
  const proc = spawn("bin/airflow-eventstream", args, {
    env: { PATH: process.env.PATH ?? "", NODE: process.execPath, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: string[] = [];
  const waiters: { pattern: RegExp; resolve: (l: string) => void }[] = [];
  const onData = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line === "") continue;
      output.push(line);
      for (const w of [...waiters]) {
        if (w.pattern.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  };
  proc.stdout!.on("data", onData);
  proc.stderr!.on("data", onData);
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  // Killed by the cleanup hooks if the test never ends it (a timeout), or when the worker exits:
  // an orphaned daemon keeps its slot active and writes to Kafka for ever.
  const unregister = registerCleanup(
    "process",
    `airflow-eventstream ${args.join(" ")} (pid ${proc.pid}, slot ${env.EVENTSTREAM_SLOT ?? "?"})`,
    async () => {
      proc.kill("SIGKILL");
      if ((await withTimeout(exited, 10_000)) === "timeout") throw new Error(`pid ${proc.pid} still running 10 s after SIGKILL`);
    },
    () => proc.kill("SIGKILL"),
  );
  void exited.then(unregister);
  return {
    proc,
    output,
    exited,
    waitForLog(pattern, timeoutMs = 30_000) {
      const hit = output.find((l) => pattern.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`no log line matching ${pattern} within ${timeoutMs} ms; output:\n${output.slice(-30).join("\n")}`)),
          timeoutMs,
        );
        waiters.push({
          pattern,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
        });
      });
    },
  };
}

/** The process's exit code, or a failure with the end of its output when it has not exited in time. */
export async function exitCode(p: DaemonProcess, timeoutMs = 60_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
  const code = await Promise.race([p.exited, timeout]).finally(() => clearTimeout(timer));
  if (code === "timeout") throw new Error(`the process did not exit within ${timeoutMs} ms; output:\n${p.output.slice(-20).join("\n")}`);
  return code;
}

export interface Consumed<E = AirflowEvent> {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  event: E;
}

export interface ConsumeOptions {
  /** How long to read before giving up; default 60 s. */
  timeoutMs?: number;
  /** What `until` waits for, in words, for the error when it never comes (else the function's source is shown). */
  waitingFor?: string;
  /**
   * Return what was read when the time is up instead of failing: only for a test that asserts what
   * did NOT arrive. Without it a timeout is an error, so a daemon that publishes nothing cannot pass
   * a test whose assertions happen to hold on an empty or partial read.
   */
  allowTimeout?: boolean;
  /** Another listener of the same Kafka (brokers, ssl, sasl); default: the plaintext one. */
  client?: Pick<KafkaConfig, "brokers" | "ssl" | "sasl">;
  /**
   * The daemon whose events are awaited: if it exits first, fail at once with its last output
   * instead of waiting out the timeout for events that can no longer come.
   */
  daemon?: Pick<DaemonProcess, "exited" | "output">;
}

/**
 * Reads topics from the beginning with an independent consumer (its own group) until `until`
 * says enough; returns what it read, in partition order. Fails if the timeout passes first, naming
 * the topics, what it waited for and what it read, unless `allowTimeout` is set.
 * The third and fourth arguments may also be the timeout and client as plain values (older call sites).
 */
export async function consume(
  topics: string[] | RegExp,
  until: (all: Consumed[]) => boolean,
  options: number | ConsumeOptions = {},
  client?: Pick<KafkaConfig, "brokers" | "ssl" | "sasl">,
): Promise<Consumed[]> {
  const opts: ConsumeOptions = typeof options === "number" ? { timeoutMs: options } : options;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const kafka = new Kafka({
    ...(client ?? opts.client ?? { brokers: services().kafkaBrokers }),
    logLevel: logLevel.NOTHING,
    clientId: "test-consumer",
  });
  const consumer = kafka.consumer({ groupId: uniqueName("test"), sessionTimeout: 10_000, heartbeatInterval: 500, maxWaitTimeInMs: 100 });
  const all: Consumed[] = [];
  let enough = false;
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: Array.isArray(topics) ? topics : [topics], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => resolve(), timeoutMs);
      void opts.daemon?.exited.then((code) => {
        clearTimeout(t);
        const out = opts.daemon!.output.slice(-30).join("\n");
        reject(
          new Error(
            `the daemon exited (code ${code}) after ${all.length} records, before ${opts.waitingFor ?? "what was awaited"}; its last output:\n${out}`,
          ),
        );
      });
      consumer
        .run({
          eachMessage: async ({ topic, partition, message }) => {
            all.push({
              topic,
              partition,
              offset: message.offset,
              key: message.key?.toString() ?? null,
              event: JSON.parse(message.value!.toString()) as AirflowEvent,
            });
            if (until(all)) {
              enough = true;
              clearTimeout(t);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  if (!enough && !opts.allowTimeout) throw new Error(consumeTimeoutMessage(topics, until, opts.waitingFor, timeoutMs, all));
  return all;
}

function consumeTimeoutMessage(
  topics: string[] | RegExp,
  until: (all: Consumed[]) => boolean,
  waitingFor: string | undefined,
  timeoutMs: number,
  all: Consumed[],
): string {
  const perTopic = new Map<string, number>();
  for (const m of all) perTopic.set(m.topic, (perTopic.get(m.topic) ?? 0) + 1);
  const counts = [...perTopic].map(([t, n]) => `${n} from ${t}`).join(", ");
  const what = waitingFor ?? `until ${until.toString().replace(/\s+/g, " ").slice(0, 300)} to return true`;
  const last = all.slice(-3).map((m) => `  ${m.topic}[${m.partition}]@${m.offset} ${JSON.stringify(m.event).slice(0, 200)}`);
  return [
    `consume(${Array.isArray(topics) ? topics.join(", ") : String(topics)}): timed out after ${timeoutMs} ms waiting for ${what}; read ${all.length} records${counts ? ` (${counts})` : ""}.`,
    ...(last.length > 0 ? ["the last ones:", ...last] : []),
    "A test that expects nothing (more) to arrive passes { allowTimeout: true }.",
  ].join("\n");
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The slot's confirmed_flush_lsn as a bigint. */
export async function confirmedFlush(database: string, slot: string): Promise<bigint | null> {
  return withPg("postgres", async (c) => {
    const { rows } = await c.query<{ lsn: string | null }>(
      "SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1 AND database = $2",
      [slot, database],
    );
    const text = rows[0]?.lsn;
    if (!text) return null;
    const [hi, lo] = text.split("/");
    return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
  });
}

/**
 * Resolves once a walsender streams from the slot. Not `pg_replication_slots.active`: that is also
 * true while the slot is still being created, and commits in that window are not in the slot.
 */
export async function waitForStreaming(slot: string, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    `a walsender streaming from slot ${slot}`,
    () =>
      withPg(
        "postgres",
        async (p) =>
          (
            await p.query(
              "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1",
              [slot],
            )
          ).rowCount,
      ),
    timeoutMs,
  );
}

/** `p`, or "timeout" after `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<"timeout">((r) => (t = setTimeout(() => r("timeout"), ms)))]).finally(() => clearTimeout(t));
}

/** What a test file keeps of the daemons it ran: their output (checked for secrets) and processes (killed at the end). */
export interface DaemonRecords {
  outputs: { what: string; lines: string[] }[];
  spawned: DaemonProcess[];
}

/**
 * Runs the daemon in this process, then as its own process, with the same environment. Both must
 * fail: in-process with an error of class `cls`, the process with exit code 2 within `withinMs`
 * and the message on stderr; both messages must contain every needle (the SQL or setting to
 * change). Returns the message.
 */
export async function expectUserAction(
  rec: DaemonRecords,
  what: string,
  env: Record<string, string>,
  cls: typeof UserActionError,
  needles: string[],
  withinMs = 30_000,
): Promise<string> {
  const logLines: string[] = [];
  rec.outputs.push({ what: `${what} (in-process)`, lines: logLines });
  const d = startDaemon(loadConfig(env), logLines);
  const err = await withTimeout(
    d.done.then(
      () => new Error("the daemon ended without an error"),
      (e: unknown) => e,
    ),
    withinMs,
  );
  expect(err, `${what}: in-process daemon; log:\n${logLines.slice(-10).join("")}`).toBeInstanceOf(cls);
  const message = (err as Error).message;
  rec.outputs.push({ what: `${what} (in-process error)`, lines: [message] });
  for (const n of needles) expect(message).toContain(n);

  const proc = spawnDaemon(env);
  rec.spawned.push(proc);
  rec.outputs.push({ what, lines: proc.output });
  const stderr: string[] = [];
  proc.proc.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")));
  const started = Date.now();
  const code = await withTimeout(proc.exited, withinMs);
  expect(code, `${what}: exit code after ${Date.now() - started} ms; output:\n${proc.output.slice(-10).join("\n")}`).toBe(2);
  const stderrText = stderr.join("");
  expect(stderrText).toContain("airflow-eventstream: ");
  for (const n of needles) expect(stderrText).toContain(n);
  return message;
}
