/**
 * Side by side (issue 14): the same backlog of Airflow-3.x-shaped task_instance changes drained by
 * pg_recvlogical (PostgreSQL's decode limit), the daemon, Kafka's own producer perf test (Kafka's
 * limit) and Debezium Server (defaults and tuned), one after the other, each from a slot of its own
 * created before the backlog and into fresh 6-partition topics. A program, not a test:
 *
 *   npm run bench:compare                               # 300,000 changes, every system
 *   npm run bench:compare -- --changes 60000 --systems pg_recvlogical,daemon
 *
 * Run by Node's type stripping (erasable syntax only); nothing of the product is imported: the
 * daemon is the built dist/cli.js started through bin/airflow-eventstream. See bench/README.md,
 * "Side by side", for how each system is timed and what is fair about it.
 */
import { execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import type { Kafka } from "kafkajs";
import { Workload, airflowSchema, sqlFor, type Run } from "./workload.ts";
import { servicesEnv } from "../scripts/services-env.ts";
import { MachineSampler, TreeSampler, kafkaClient, listenerPid } from "./compare-proc.ts";
import { runDaemon, runDebezium, runProducerPerf, runRecvlogical, sleep, type Ctx, type SystemResult } from "./compare-systems.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS_DIR = path.join(ROOT, "bench", "results");
const SYSTEMS = ["pg_recvlogical", "daemon", "kafka-perf", "debezium-tuned", "debezium-default"] as const;
/** The daemon's default publication: xcom only with notifications (EVENTSTREAM_XCOM_KEY), off by default. */
const TABLES = ["task_instance", "dag_run"];
/** Ports of this bench's own (the daemon's endpoint, Debezium's Quarkus HTTP server). */
const PORT_BASE = Number(process.env.BENCH_COMPARE_PORT_BASE ?? 35600);

const USAGE = `npm run bench:compare -- [options]     (or: node bench/compare.ts [options] after npm run build)

  --changes N        row changes in the backlog (inserts, then scheduler waves and worker updates,
                     2% retries; ~2.3 changes per transaction)          [300000]
  --systems a,b      of ${SYSTEMS.join(",")}                            [all]
  --record-size B    kafka-perf's record size when the daemon does not run first  [839]
  --seed N           workload random seed                                [1]

PostgreSQL and Kafka: PGHOST PGPORT PGUSER PGPASSWORD KAFKA_BROKERS, else \`bash scripts/services.sh env\`.
Debezium Server comes from \`bash scripts/debezium.sh\` (Maven Central; Java 21+), Kafka's producer perf
test from the Kafka jars of scripts/services.sh (\`$EVENTSTREAM_SERVICES_DIR/kafka/libs\`).
EVENTSTREAM_* in the environment goes to the daemon (slot, publication and topics excepted).`;

interface Options {
  changes: number;
  systems: string[];
  recordSize: number;
  seed: number;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { changes: 300_000, systems: [...SYSTEMS], recordSize: 839, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--help" || a === "-h") {
      console.log(USAGE);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    const value = m?.[2] ?? argv[++i];
    if (!m || value === undefined) throw new Error(`bad argument "${a}"\n\n${USAGE}`);
    if (m[1] === "systems") {
      o.systems = value.split(",").filter((s) => s !== "");
      for (const s of o.systems)
        if (!(SYSTEMS as readonly string[]).includes(s)) throw new Error(`--systems: unknown "${s}" (${SYSTEMS.join(", ")})`);
      o.systems = SYSTEMS.filter((s) => o.systems.includes(s));
      continue;
    }
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${m[1]}: expected a positive integer, got "${value}"`);
    if (m[1] === "changes") o.changes = n;
    else if (m[1] === "record-size") o.recordSize = n;
    else if (m[1] === "seed") o.seed = n;
    else throw new Error(`unknown option --${m[1]}\n\n${USAGE}`);
  }
  return o;
}

function log(msg: string): void {
  console.log(`[compare ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

function env(): Record<string, string | undefined> {
  if (process.env.PGHOST && process.env.KAFKA_BROKERS) return process.env;
  return servicesEnv(ROOT);
}

class Compare {
  readonly opts: Options;
  readonly name = `cmp_${randomBytes(4).toString("hex")}`;
  readonly svc: { host: string; port: number; user: string; password: string };
  readonly brokers: string[];
  readonly kafka: Kafka;
  readonly children = new Set<ChildProcess>();
  admin: pg.Client | null = null;
  dbCreated = false;
  topics: string[] = [];
  pgVersion = "";
  private cleaning: Promise<void> | null = null;

  constructor(opts: Options) {
    this.opts = opts;
    const e = env();
    if (!e.PGHOST || !e.KAFKA_BROKERS)
      throw new Error('PGHOST and KAFKA_BROKERS are required: npm run services:up && eval "$(bash scripts/services.sh env)"');
    this.svc = { host: e.PGHOST, port: Number(e.PGPORT ?? 5432), user: e.PGUSER ?? "postgres", password: e.PGPASSWORD ?? "" };
    this.brokers = e.KAFKA_BROKERS.split(",").map((b) => b.trim());
    this.kafka = kafkaClient(this.brokers);
  }

  client(database: string): pg.Client {
    const c = new pg.Client({ ...this.svc, database, application_name: "eventstream-compare" });
    c.on("error", () => undefined);
    return c;
  }

  slot(system: string): string {
    return `${this.name}_${system.replace(/[^a-z]/g, "")}`;
  }

  /** The database, the publications and one slot per system, before any change is written. */
  async setup(): Promise<void> {
    const { version, sql: schema } = airflowSchema(ROOT, "3");
    this.admin = this.client("postgres");
    await this.admin.connect();
    this.pgVersion = (await this.admin.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
    await this.admin.query(`CREATE DATABASE ${this.name}`);
    this.dbCreated = true;
    const c = this.client(this.name);
    await c.connect();
    await c.query(schema);
    await c.query(`CREATE PUBLICATION ${this.name} FOR TABLE ${TABLES.map((t) => `public.${t}`).join(", ")}`);
    await c.query(`CREATE PUBLICATION ${this.name}_dbz FOR TABLE ${TABLES.map((t) => `public.${t}`).join(", ")}`);
    for (const s of this.opts.systems.filter((s) => s !== "kafka-perf"))
      await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [this.slot(s)]);
    await c.end();
    log(
      `database ${this.name}: Airflow ${version} schema (PostgreSQL ${this.pgVersion}); publications ${this.name}, ${this.name}_dbz on ${TABLES.join(", ")}`,
    );
  }

  /** Runs until the backlog holds at least --changes row changes (seed INSERTs + lifecycle). */
  async backlog(): Promise<{
    changes: number;
    events: number;
    pkChanges: number;
    txs: number;
    seconds: number;
    endLsn: string;
    walBytes: number;
  }> {
    const w = new Workload(200, this.opts.seed, 0.02, 0);
    const sql = sqlFor("3");
    const runs: Run[] = [];
    let planned = 0;
    while (planned < this.opts.changes) {
      const r = w.plan(1)[0]!;
      runs.push(r);
      planned += 1 + r.tis.length + r.events;
    }
    // Per-database statistics: read them in the bench's database.
    const counts = async (c: pg.Client): Promise<number> => {
      const { rows } = await c.query<{ n: string }>(
        `SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) AS n FROM pg_stat_all_tables WHERE relname = ANY($1) AND schemaname = 'public'`,
        [TABLES],
      );
      return Number(rows[0]!.n);
    };
    const db = this.client(this.name);
    await db.connect();
    const startLsn = (await db.query<{ l: string }>("SELECT pg_current_wal_lsn() AS l")).rows[0]!.l;
    await db.end();
    const pool = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const c = this.client(this.name);
        await c.connect();
        // Asynchronous commit only writes the backlog sooner: the WAL is the same.
        await c.query("SET synchronous_commit = off");
        return c;
      }),
    );
    const t0 = Date.now();
    let txs = 0;
    let pkChanges = 0;
    let next = 0;
    await Promise.all(
      pool.map(async (c) => {
        for (let r = runs[next++]; r !== undefined; r = runs[next++]) {
          r.dagRunId = ((await c.query(sql.seed(r))).rows[0] as { id: number }).id;
          txs++;
          for (const tx of w.script(r, sql)) {
            await c.query({ name: tx.name, text: tx.text, values: tx.values });
            txs++;
            // Airflow 3 gives a retry a new task_instance.id: an UPDATE of the primary key.
            if (tx.name === "fail3") pkChanges++;
          }
        }
      }),
    );
    const seconds = (Date.now() - t0) / 1000;
    // A backend sends its table statistics when it ends: closing the pool makes the counts exact.
    await Promise.all(pool.map((c) => c.end()));
    await sleep(500);
    const stats = this.client(this.name);
    await stats.connect();
    const changes = await counts(stats);
    await stats.end();
    const end = await this.admin!.query<{ l: string; b: string }>(
      "SELECT pg_current_wal_lsn() AS l, pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS b",
      [startLsn],
    );
    return { changes, events: planned, pkChanges, txs, seconds, endLsn: end.rows[0]!.l, walBytes: Number(end.rows[0]!.b) };
  }

  async createTopics(topics: { topic: string; partitions?: number; compact?: boolean }[]): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      this.topics.push(...topics.map((t) => t.topic));
      await admin.createTopics({
        waitForLeaders: true,
        topics: topics.map((t) => ({
          topic: t.topic,
          numPartitions: t.partitions ?? 6,
          configEntries: [
            { name: "message.timestamp.type", value: "LogAppendTime" },
            ...(t.compact ? [{ name: "cleanup.policy", value: "compact" }] : []),
          ],
        })),
      });
    } finally {
      await admin.disconnect();
    }
  }

  ctx(): Ctx {
    return {
      pg: { ...this.svc, database: this.name },
      kafka: this.kafka,
      brokers: this.brokers,
      resultsDir: RESULTS_DIR,
      children: this.children,
      walsenderPid: async (slot) => {
        const { rows } = await this.admin!.query<{ pid: number | null }>(
          "SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1",
          [slot],
        );
        return rows[0]?.pid ?? null;
      },
      log,
    };
  }

  /** Slots, publications, topics, the database and every process started: also on Ctrl-C. */
  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      for (const c of this.children) c.kill("SIGKILL");
      if (this.topics.length > 0) {
        const admin = this.kafka.admin();
        try {
          await admin.connect();
          await admin.deleteTopics({ topics: this.topics, timeout: 30_000 });
        } catch (e) {
          log(`could not delete topics ${this.topics.join(", ")}: ${(e as Error).message}`);
        } finally {
          await admin.disconnect().catch(() => undefined);
        }
      }
      if (this.admin && this.dbCreated) {
        try {
          await this.admin.query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name LIKE $1 AND active_pid IS NOT NULL",
            [`${this.name}%`],
          );
          await sleep(300);
          await this.admin.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE $1", [
            `${this.name}%`,
          ]);
          // The publications go with the database.
          await this.admin.query(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
        } catch (e) {
          log(`cleanup: ${(e as Error).message}`);
        }
      }
      await this.admin?.end().catch(() => undefined);
    })();
    return this.cleaning;
  }
}

function kafkaLibs(e: Record<string, string | undefined>): string {
  const svcDir = e.EVENTSTREAM_SERVICES_DIR ?? path.join(ROOT, ".services");
  const libs = path.join(svcDir, "kafka", "libs");
  if (!existsSync(libs)) throw new Error(`no Kafka jars in ${libs}: run npm run services:up (it fetches them)`);
  return libs;
}

function sh(args: string[]): string {
  return execFileSync("bash", args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
}

async function runAll(cmp: Compare, o: Options): Promise<{ results: SystemResult[]; backlog: Awaited<ReturnType<Compare["backlog"]>> }> {
  await cmp.setup();
  const backlog = await cmp.backlog();
  log(
    `backlog: ${backlog.changes.toLocaleString("en-US")} row changes (${backlog.events.toLocaleString("en-US")} daemon events planned) in ${backlog.txs.toLocaleString("en-US")} transactions, ${(backlog.walBytes / 1048576).toFixed(1)} MB of WAL, written in ${backlog.seconds.toFixed(1)} s; end LSN ${backlog.endLsn}`,
  );
  const ctx = cmp.ctx();
  const results: SystemResult[] = [];
  // What shares the machine with each system: the broker's CPU and every core's.
  const machine = new MachineSampler();
  const brokerPid = listenerPid(Number(cmp.brokers[0]!.split(":").pop()));
  const broker = brokerPid === null ? null : new TreeSampler(brokerPid);
  if (broker === null) log(`the broker's process on ${cmp.brokers[0]} is not seen: its CPU is not reported`);
  let meanRecord = o.recordSize;
  for (const system of o.systems) {
    log(`${system}: draining`);
    const load0 = os.loadavg()[0]!;
    try {
      const r = await runSystem(cmp, ctx, system, backlog, meanRecord);
      r.brokerCpuS = broker?.cpuBetween(r.fromMs, r.toMs) ?? null;
      r.machineCores = machine.coresBetween(r.fromMs, r.toMs);
      if (system === "daemon" && r.meanRecordBytes !== null) meanRecord = Math.round(r.meanRecordBytes);
      results.push({ ...r, settings: { ...r.settings, load_before: load0.toFixed(2) } });
      log(
        `${system}: ${r.records.toLocaleString("en-US")} records in ${r.seconds.toFixed(2)} s, ${Math.round(r.perSecond).toLocaleString("en-US")}/s, CPU ${r.cpuS.toFixed(2)} s (main thread ${r.mainThreadCpuS.toFixed(2)}), peak RSS ${r.peakRssMb.toFixed(0)} MB, broker CPU ${fmt(r.brokerCpuS, 2)} s, machine ${fmt(r.machineCores, 2)} of ${os.cpus().length} cores busy${r.pausedS !== null ? `, reading paused ${r.pausedS.toFixed(2)} s` : ""} (load ${load0.toFixed(2)})`,
      );
    } catch (e) {
      log(`${system}: FAILED: ${(e as Error).message}`);
      results.push({ system, label: system, ok: false, error: (e as Error).message } as SystemResult);
    }
    await sleep(2_000);
  }
  machine.stop();
  broker?.stop();
  return { results, backlog };
}

async function runSystem(
  cmp: Compare,
  ctx: Ctx,
  system: string,
  backlog: { changes: number; events: number; pkChanges: number; endLsn: string },
  meanRecord: number,
): Promise<SystemResult> {
  const e = env();
  if (system === "pg_recvlogical") {
    const major = cmp.pgVersion.split(".")[0]!;
    const bin = existsSync(`/usr/lib/postgresql/${major}/bin/pg_recvlogical`)
      ? `/usr/lib/postgresql/${major}/bin`
      : "/usr/lib/postgresql/15/bin";
    return runRecvlogical(ctx, bin, cmp.slot(system), cmp.name, backlog.endLsn, backlog.changes);
  }
  if (system === "daemon") {
    const n = { topic: `${cmp.name}.events`, stateTopic: `${cmp.name}.state`, checkpointTopic: `${cmp.name}.checkpoints` };
    await cmp.createTopics([
      { topic: n.topic },
      { topic: n.stateTopic, compact: true },
      { topic: n.checkpointTopic, partitions: 1, compact: true },
    ]);
    const ours = [
      "EVENTSTREAM_SLOT",
      "EVENTSTREAM_PUBLICATION",
      "EVENTSTREAM_TOPIC",
      "EVENTSTREAM_STATE_TOPIC",
      "EVENTSTREAM_CHECKPOINT_TOPIC",
    ];
    const passthrough = Object.fromEntries(
      Object.entries(process.env).filter(
        ([k, v]) =>
          v !== undefined &&
          (k.startsWith("MALLOC_") ||
            (k.startsWith("EVENTSTREAM_") &&
              !k.startsWith("EVENTSTREAM_TEST_") &&
              !ours.includes(k) &&
              !k.includes("SERVICES") &&
              !k.includes("_PORT") &&
              !k.startsWith("EVENTSTREAM_PG_") &&
              !k.startsWith("EVENTSTREAM_KAFKA_"))),
      ),
    ) as Record<string, string>;
    // As in bench.ts: node flags for the daemon, after the launcher's (experiments, not the defaults).
    if (process.env.BENCH_DAEMON_NODE_ARGS) passthrough.NODE_OPTIONS = process.env.BENCH_DAEMON_NODE_ARGS;
    return runDaemon(
      ctx,
      ROOT,
      { ...n, slot: cmp.slot(system), publication: cmp.name, httpPort: PORT_BASE + 1 },
      backlog.events,
      passthrough,
    );
  }
  if (system === "kafka-perf") {
    const topic = `${cmp.name}.perf`;
    await cmp.createTopics([{ topic }]);
    return runProducerPerf(ctx, sh(["scripts/debezium.sh", "--java"]), kafkaLibs(e), topic, backlog.events, meanRecord);
  }
  const variant = system === "debezium-tuned" ? "tuned" : "default";
  const prefix = `${cmp.name}_dbz${variant}`;
  await cmp.createTopics(TABLES.map((t) => ({ topic: `${prefix}.public.${t}` })));
  const dist = sh(["scripts/debezium.sh"]);
  const java = sh(["scripts/debezium.sh", "--java"]);
  const port = PORT_BASE + (variant === "tuned" ? 10 : 11);
  return runDebezium(ctx, {
    variant,
    dist,
    java,
    slot: cmp.slot(system),
    publication: `${cmp.name}_dbz`,
    prefix,
    tables: TABLES,
    httpPort: port,
    changes: backlog.changes,
    expected: backlog.changes + 2 * backlog.pkChanges,
  });
}

function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "-";
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function report(results: SystemResult[]): string[] {
  const rows = [
    [
      "system",
      "records",
      "time s",
      "changes/s",
      "peak RSS MB",
      "CPU s",
      "main thread",
      "CPU s /100k",
      "CPU s total",
      "walsender CPU s",
      "broker CPU s",
      "cores busy",
    ],
  ];
  for (const r of results) {
    if (!r.ok) rows.push([r.system, `FAILED: ${r.error}`, "", "", "", "", "", "", "", "", "", ""]);
    else
      rows.push([
        r.label,
        fmt(r.records),
        fmt(r.seconds, 2),
        fmt(r.perSecond),
        fmt(r.peakRssMb),
        fmt(r.cpuS, 2),
        fmt(r.mainThreadCpuS, 2),
        fmt(r.cpuPer100k, 1),
        fmt(r.cpuTotalS, 2),
        fmt(r.walsenderCpuS, 2),
        fmt(r.brokerCpuS, 2),
        fmt(r.machineCores, 2),
      ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "));
  lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  const by = new Map(results.filter((r) => r.ok).map((r) => [r.system, r]));
  const d = by.get("daemon");
  for (const other of ["pg_recvlogical", "debezium-tuned", "debezium-default", "kafka-perf"]) {
    const x = by.get(other);
    if (!d || !x) continue;
    lines.push(
      `daemon / ${other}: rate x${(d.perSecond / x.perSecond).toFixed(2)}, CPU per change x${(d.cpuPer100k / x.cpuPer100k).toFixed(2)}, peak RSS x${(d.peakRssMb / x.peakRssMb).toFixed(2)}`,
    );
  }
  if (d && d.pausedS !== null)
    lines.push(
      `daemon: reading PostgreSQL paused for backpressure ${d.pausedS.toFixed(2)} s (${((d.pausedS / d.seconds) * 100).toFixed(0)}% of its ${d.seconds.toFixed(2)} s)`,
    );
  const p = by.get("pg_recvlogical");
  if (d && p && d.walsenderCpuS !== null && d.brokerCpuS !== null) {
    // The daemon's whole path per change (PostgreSQL's decoding, the daemon, the broker), measured in
    // its own run, scaled to pg_recvlogical's rate: the cores that rate needs, against the machine's.
    const perChange = (d.walsenderCpuS + d.cpuS + d.brokerCpuS) / d.records;
    lines.push(
      `at pg_recvlogical's ${fmt(p.perSecond)} changes/s the daemon's path needs ${(perChange * p.perSecond).toFixed(2)} cores (walsender ${fmt((d.walsenderCpuS / d.records) * p.perSecond, 2)} + daemon ${fmt((d.cpuS / d.records) * p.perSecond, 2)} + broker ${fmt((d.brokerCpuS / d.records) * p.perSecond, 2)}); 90% of it ${(perChange * p.perSecond * 0.9).toFixed(2)}; this machine has ${os.cpus().length}`,
    );
  }
  return lines;
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  // Before the backlog is made: without a build the daemon only dies at its first line.
  if (o.systems.includes("daemon") && !existsSync(path.join(ROOT, "dist/cli.js")))
    throw new Error("dist/cli.js is missing: run `npm run build` first (npm run bench:compare does)");
  const cmp = new Compare(o);
  const stop = (sig: string) => {
    log(`${sig}: cleaning up`);
    void cmp.cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
  mkdirSync(RESULTS_DIR, { recursive: true });
  const load = os.loadavg();
  log(`machine: ${os.cpus().length} CPUs, load average ${load.map((l) => l.toFixed(2)).join(" ")}; systems ${o.systems.join(", ")}`);
  try {
    const { results, backlog } = await runAll(cmp, o);
    const lines = report(results);
    console.log(`\n${lines.join("\n")}\n`);
    const out = {
      at: new Date().toISOString(),
      options: o,
      machine: {
        cpus: os.cpus().length,
        loadavg_before: load,
        loadavg_after: os.loadavg(),
        postgres: cmp.pgVersion,
        node: process.version,
      },
      commit: (() => {
        try {
          return sh(["-c", "git rev-parse --short HEAD"]);
        } catch {
          return null;
        }
      })(),
      backlog,
      results,
      table: lines,
    };
    const file = path.join(RESULTS_DIR, `compare-${out.at.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify(out, null, 2));
    writeFileSync(path.join(RESULTS_DIR, "compare-latest.json"), JSON.stringify(out, null, 2));
    log(`results: ${path.relative(ROOT, file)} (and bench/results/compare-latest.json)`);
    return results.every((r) => r.ok) ? 0 : 1;
  } finally {
    await cmp.cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(1);
  },
);
