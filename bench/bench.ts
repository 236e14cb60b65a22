/**
 * End-to-end benchmark: drives Airflow task-instance transitions through a real PostgreSQL and a
 * real Kafka, with the daemon (dist/cli.js) as a child process, and prints events/s (commit to
 * Kafka), latency percentiles and the daemon's peak RSS. A program, not a test: `npm run bench`.
 *
 * Run directly by Node's type stripping (`node bench/bench.ts`), so only erasable TypeScript
 * syntax is used (no enums, no parameter properties) and nothing of the product is imported at
 * run time: the daemon is the built dist/cli.js, spawned like an operator would; the one import
 * from src/ is a type, erased before running.
 *
 *   npm run bench                                 # full run (a few minutes)
 *   npm run bench -- --quick                      # smoke (~30 s)
 *   npm run bench -- --transitions 500000 --rate 2000 --major 2 --cpu-prof
 *   EVENTSTREAM_BATCH_MAX_EVENTS=5000 npm run bench   # EVENTSTREAM_* is passed to the daemon
 *
 * Phases (each waits until every event it wrote has been consumed, then checks the count):
 *   seed        dag_run + task_instance INSERTs for every later phase (one transaction per run, as
 *               the scheduler creates a run). Counted as events of their own (op "insert").
 *   latency     paced load at --rate events/s for --latency-seconds: per-event latency.
 *   throughput  --transitions events as fast as the generator can write them, live.
 *   paced-max   paced at --max-fraction (0.8) of the throughput phase's live rate (the lower of
 *               what the generator committed and what the consumer received), for
 *               --latency-seconds: latency near the most this machine sustains live. Its runs are
 *               seeded just before it (phase seed-max).
 *   drain       daemon stopped (SIGTERM), the same amount written as a backlog, daemon restarted:
 *               the daemon's own capacity, independent of how fast this generator can write.
 *   wide        one DAG run with a --wide-rows-way mapped task (1,024: Airflow's default
 *               max_map_length) created and run while the daemon is stopped, then the daemon
 *               started: one transaction of 1,025 rows and wave UPDATEs of 1,024 rows of one
 *               DAG, i.e. ~1 MB of events for a single Kafka partition back to back.
 *
 * Latency = time the bench's consumer receives the event - source.commit_time (PostgreSQL's
 * commit timestamp), on the same machine clock. The consumer's receipt comes after Kafka's
 * acknowledgement to the producer, so it is an upper bound of "commit to Kafka ack".
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync, appendFileSync, mkdirSync, existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { Worker } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { Kafka, logLevel } from "kafkajs";
import type { ConsumerMessage, ConsumerInit } from "./consumer.js";
import { Workload, airflowSchema, sqlFor, type Run, type Sql, type Tx } from "./workload.ts";
import { servicesEnv } from "../scripts/services-env.ts";
import { freePort } from "../scripts/free-port.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS_DIR = path.join(ROOT, "bench", "results");

// ------------------------------------------------------------------------------------ options

interface Options {
  transitions: number;
  rate: number;
  latencySeconds: number;
  /** The paced-max phase's rate, as a share of the throughput phase's live maximum. */
  maxFraction: number;
  major: "2" | "3";
  dags: number;
  connections: number;
  heartbeats: number;
  failRate: number;
  wideRows: number;
  phases: Set<string>;
  quick: boolean;
  cpuProf: boolean;
  memProbe: boolean;
  asyncCommit: boolean;
  strict: boolean;
  seed: number;
  /** Seconds between scrapes of the daemon's /metrics; 0: the endpoint off (EVENTSTREAM_HTTP_PORT=0). */
  scrapeSeconds: number;
}

const PHASES = ["latency", "throughput", "paced-max", "drain", "wide"];

const USAGE = `npm run bench -- [options]      (or: node bench/bench.ts [options] after npm run build)

  --quick                 smoke run (~30 s): 30k transitions, 8 s latency phase
  --transitions N         events of the throughput and drain phases      [BENCH_TRANSITIONS, 300000]
  --rate R                events/s of the paced latency phase            [BENCH_RATE, 1000]
  --latency-seconds S     length of the latency and paced-max phases     [BENCH_LATENCY_SECONDS, 20]
  --max-fraction F        paced-max's rate as a share of the throughput
                          phase's live maximum                           [BENCH_MAX_FRACTION, 0.8]
  --major 2|3             Airflow schema (test/fixtures/airflow)         [BENCH_AIRFLOW_MAJOR, 3]
  --dags N                distinct DAGs                                  [BENCH_DAGS, 200]
  --connections N         generator connections to PostgreSQL            [BENCH_CONNECTIONS, 8]
  --heartbeats N          heartbeat (churn) updates per task try         [BENCH_HEARTBEATS, 1]
  --fail-rate F           share of tasks failing once and retried        [BENCH_FAIL_RATE, 0.02]
  --wide-rows N           mapped task instances of the wide phase's run  [BENCH_WIDE_ROWS, 1024]
  --phases a,b            of latency,throughput,paced-max,drain,wide     [BENCH_PHASES, all]
  --async-commit          throughput phase with synchronous_commit=off (generator faster than fsync allows)
  --cpu-prof              run the daemon with --cpu-prof (bench/results/profiles/)
  --mem-probe             preload bench/mem-probe.ts into the daemon: heap/external breakdown at peak RSS
  --strict                exit 1 when a bar is missed (a correctness failure always exits 1)
  --seed N                workload random seed                           [BENCH_SEED, 1]
  --scrape S              scrape the daemon's /metrics every S s as Prometheus would;
                          0 turns the endpoint off (EVENTSTREAM_HTTP_PORT=0)  [BENCH_SCRAPE_SECONDS, 15]

PostgreSQL and Kafka: PGHOST PGPORT PGUSER PGPASSWORD KAFKA_BROKERS, else \`bash scripts/services.sh env\`.
EVENTSTREAM_* and MALLOC_* (glibc) variables in the environment are passed to the daemon (slot, publication
and topic excepted);
BENCH_DAEMON_NODE_ARGS="--max-semi-space-size=8 ..." adds Node flags to the daemon's command line.`;

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): Options {
  const flags = new Map<string, string>();
  const bools = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--help" || a === "-h") {
      console.log(USAGE);
      process.exit(0);
    }
    if (a === "--quick" || a === "--cpu-prof" || a === "--mem-probe" || a === "--async-commit" || a === "--strict") {
      bools.add(a.slice(2));
      continue;
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument "${a}"\n\n${USAGE}`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new Error(`--${m[1]} needs a value`);
    flags.set(m[1]!, value);
  }
  const known = [
    "transitions",
    "rate",
    "latency-seconds",
    "max-fraction",
    "major",
    "dags",
    "connections",
    "heartbeats",
    "fail-rate",
    "wide-rows",
    "phases",
    "seed",
    "scrape",
  ];
  for (const k of flags.keys()) if (!known.includes(k)) throw new Error(`unknown option --${k}\n\n${USAGE}`);
  const quick = bools.has("quick") || env.BENCH_QUICK === "1" || env.BENCH_QUICK === "true";
  const get = (flag: string, envName: string, dflt: number): number => {
    const raw = flags.get(flag) ?? env[envName];
    if (raw === undefined || raw === "") return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${flag} / ${envName}: expected a number, got "${raw}"`);
    return n;
  };
  const major = flags.get("major") ?? env.BENCH_AIRFLOW_MAJOR ?? "3";
  if (major !== "2" && major !== "3") throw new Error(`--major: 2 or 3, got "${major}"`);
  const phases = new Set(
    (flags.get("phases") ?? env.BENCH_PHASES ?? PHASES.join(","))
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== ""),
  );
  for (const p of phases) if (!PHASES.includes(p)) throw new Error(`--phases: unknown phase "${p}"`);
  // Its rate is a share of the throughput phase's, measured in the same run.
  if (phases.has("paced-max") && !phases.has("throughput")) throw new Error("--phases: paced-max needs the throughput phase before it");
  const maxFraction = get("max-fraction", "BENCH_MAX_FRACTION", 0.8);
  if (maxFraction <= 0 || maxFraction > 1) throw new Error(`--max-fraction: a share in (0, 1], got ${maxFraction}`);
  return {
    transitions: Math.round(get("transitions", "BENCH_TRANSITIONS", quick ? 30_000 : 300_000)),
    rate: get("rate", "BENCH_RATE", 1000),
    latencySeconds: get("latency-seconds", "BENCH_LATENCY_SECONDS", quick ? 8 : 20),
    maxFraction,
    major,
    dags: Math.max(1, Math.round(get("dags", "BENCH_DAGS", 200))),
    connections: Math.max(1, Math.round(get("connections", "BENCH_CONNECTIONS", 8))),
    heartbeats: Math.round(get("heartbeats", "BENCH_HEARTBEATS", 1)),
    failRate: get("fail-rate", "BENCH_FAIL_RATE", 0.02),
    wideRows: Math.max(1, Math.round(get("wide-rows", "BENCH_WIDE_ROWS", 1024))),
    phases,
    quick,
    cpuProf: bools.has("cpu-prof") || env.BENCH_CPU_PROF === "1",
    memProbe: bools.has("mem-probe") || env.BENCH_MEM_PROBE === "1",
    asyncCommit: bools.has("async-commit") || env.BENCH_ASYNC_COMMIT === "1",
    strict: bools.has("strict") || env.BENCH_STRICT === "1",
    seed: Math.round(get("seed", "BENCH_SEED", 1)),
    scrapeSeconds: get("scrape", "BENCH_SCRAPE_SECONDS", 15),
  };
}

// ----------------------------------------------------------------------------------- services

interface Services {
  pg: { host: string; port: number; user: string; password: string };
  brokers: string[];
  from: string;
}

function resolveServices(env: NodeJS.ProcessEnv): Services {
  let e: Record<string, string | undefined> = env;
  let from = "environment";
  if (!env.PGHOST || !env.KAFKA_BROKERS) {
    // The project's own services (scripts/services.sh), as `eval "$(bash scripts/services.sh env)"` would give.
    try {
      e = servicesEnv(ROOT);
    } catch (err) {
      throw new Error(
        `PGHOST/KAFKA_BROKERS are not set and \`bash scripts/services.sh env\` failed (${(err as Error).message.split("\n")[0]}).\n` +
          `Start the services: npm run services:up && eval "$(bash scripts/services.sh env)"`,
      );
    }
    from = "scripts/services.sh env";
  }
  if (!e.PGHOST || !e.KAFKA_BROKERS) throw new Error("PGHOST and KAFKA_BROKERS are required");
  return {
    pg: { host: e.PGHOST, port: Number(e.PGPORT ?? 5432), user: e.PGUSER ?? "postgres", password: e.PGPASSWORD ?? "" },
    brokers: e.KAFKA_BROKERS.split(",")
      .map((b) => b.trim())
      .filter((b) => b !== ""),
    from,
  };
}

// ------------------------------------------------------------------------------------ helpers

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function nowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

// ---------------------------------------------------------------------------------- generator

interface GenResult {
  txs: number;
  events: number;
  startUs: number;
  endUs: number;
  /** Per statement: transactions, events, and the smallest/largest number of events in one. */
  shapes: Record<string, { txs: number; events: number; min: number; max: number }>;
}

/**
 * Runs `runs` on the pool: each connection takes the next run and commits its transactions in
 * order, so runs interleave in the WAL the way concurrent schedulers/workers make them. With
 * `rate`, transitions are paced to that many events/s (heartbeats are not paced: they come between).
 */
async function generate(
  pool: pg.Client[],
  runs: Run[],
  makeTxs: (run: Run) => Tx[],
  rate: number | null,
  onResult?: (run: Run, res: pg.QueryResult) => void,
): Promise<GenResult> {
  let next = 0;
  let txs = 0;
  let events = 0;
  let reserved = 0;
  const shapes: GenResult["shapes"] = {};
  const t0 = performance.now();
  const startUs = nowUs();
  await Promise.all(
    pool.map(async (client) => {
      for (;;) {
        const run = runs[next++];
        if (run === undefined) return;
        for (const tx of makeTxs(run)) {
          if (rate !== null && tx.events > 0) {
            const due = t0 + (reserved / rate) * 1000;
            reserved += tx.events;
            const wait = due - performance.now();
            if (wait > 1) await sleep(wait);
          }
          const res = await client.query({ name: tx.name, text: tx.text, values: tx.values });
          onResult?.(run, res);
          txs++;
          events += tx.events;
          const shape = (shapes[tx.name] ??= { txs: 0, events: 0, min: tx.events, max: tx.events });
          shape.txs++;
          shape.events += tx.events;
          if (tx.events < shape.min) shape.min = tx.events;
          if (tx.events > shape.max) shape.max = tx.events;
        }
      }
    }),
  );
  return { txs, events, startUs, endUs: nowUs(), shapes };
}

// ------------------------------------------------------------------------------- measurements

const CLK_TCK = 100;

interface ProcSample {
  rssKb: number;
  /** RSS split: anonymous memory (heap, malloc) vs file-backed pages (mostly the node binary's code). */
  anonKb: number;
  fileKb: number;
  hwmKb: number;
  cpuTicks: number;
}

function readProc(pid: number): ProcSample | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const rss = /VmRSS:\s+(\d+)/.exec(status);
    const hwm = /VmHWM:\s+(\d+)/.exec(status);
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    const cpuTicks = Number(fields[11]) + Number(fields[12]);
    const anon = /RssAnon:\s+(\d+)/.exec(status);
    const file = /RssFile:\s+(\d+)/.exec(status);
    return {
      rssKb: Number(rss?.[1] ?? 0),
      anonKb: Number(anon?.[1] ?? 0),
      fileKb: Number(file?.[1] ?? 0),
      hwmKb: Number(hwm?.[1] ?? 0),
      cpuTicks,
    };
  } catch {
    return null;
  }
}

/** Machine-wide CPU: [busy, total] jiffies from /proc/stat. */
function machineTicks(): [number, number] {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return [total - idle, total];
}

class DaemonProcess {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly output: string[] = [];
  readonly exited: Promise<number | null>;
  exitCode: number | null | undefined = undefined;
  peakRssKb = 0;
  hwmKb = 0;
  last: ProcSample | null = null;
  /** The sample with the highest RSS. */
  atPeak: ProcSample | null = null;
  /** Session restarts logged by the daemon's supervisor, and why. */
  restarts = 0;
  readonly restartReasons = new Map<string, number>();
  /** With --mem-probe: the daemon's own memory breakdown at its peak RSS. */
  memAtPeak: Record<string, unknown> | null = null;
  private readonly timer: NodeJS.Timeout;
  private windowPeakKb = 0;
  /** Duration of each successful /metrics scrape, ms; failed scrapes counted apart. */
  readonly scrapeMs: number[] = [];
  scrapeFailures = 0;
  private scraper: NodeJS.Timeout | null = null;

  constructor(env: Record<string, string>, nodeArgs: string[], logFile: string) {
    // The launcher operators use, so its memory defaults are what is measured; node flags of
    // the bench's own (--mem-probe, BENCH_DAEMON_NODE_ARGS) go after them in NODE_OPTIONS.
    const nodeOptions = [process.env.NODE_OPTIONS ?? "", ...nodeArgs].filter((a) => a !== "").join(" ");
    this.proc = spawn(path.join(ROOT, "bin/airflow-eventstream"), ["run"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", NODE: process.execPath, ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}), ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.pid = this.proc.pid!;
    writeFileSync(logFile, "");
    const onData = (chunk: Buffer) => {
      appendFileSync(logFile, chunk);
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line === "") continue;
        if (line.startsWith("MEMPROBE ")) {
          try {
            this.memAtPeak = JSON.parse(line.slice(9)) as Record<string, unknown>;
          } catch {
            /* a line split across chunks: the next peak writes another */
          }
          continue;
        }
        this.output.push(line);
        if (this.output.length > 500) this.output.splice(0, 100);
        // Session restarts (the supervisor's warning) say why events may come twice.
        if (line.includes("session ended; restarting")) {
          this.restarts++;
          const err = /"err":"((?:[^"\\]|\\.){0,300})/.exec(line)?.[1] ?? line.slice(0, 300);
          this.restartReasons.set(err, (this.restartReasons.get(err) ?? 0) + 1);
        }
      }
    };
    this.proc.stdout!.on("data", onData);
    this.proc.stderr!.on("data", onData);
    this.exited = new Promise((resolve) =>
      this.proc.on("exit", (code) => {
        this.exitCode = code;
        clearInterval(this.timer);
        resolve(code);
      }),
    );
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
  }

  sample(): ProcSample | null {
    const s = readProc(this.pid);
    if (s) {
      this.last = s;
      if (s.rssKb > this.peakRssKb) this.atPeak = s;
      this.peakRssKb = Math.max(this.peakRssKb, s.rssKb);
      this.windowPeakKb = Math.max(this.windowPeakKb, s.rssKb);
      this.hwmKb = Math.max(this.hwmKb, s.hwmKb);
    }
    return s;
  }

  /**
   * Fetches /metrics every `seconds`, as a Prometheus would, so the endpoint's cost (the scrape's
   * serialisation on the daemon's thread) is part of what the phases measure.
   */
  scrape(port: number, seconds: number): void {
    const once = async () => {
      const t0 = performance.now();
      try {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) });
        await res.text();
        if (res.ok) this.scrapeMs.push(performance.now() - t0);
        else this.scrapeFailures++;
      } catch {
        this.scrapeFailures++;
      }
    };
    this.scraper = setInterval(() => void once(), seconds * 1000);
    this.scraper.unref();
    void this.exited.then(() => clearInterval(this.scraper!));
  }

  /** Peak RSS since the last call (for per-phase figures). */
  takeWindowPeak(): number {
    this.sample();
    const p = this.windowPeakKb;
    this.windowPeakKb = this.last?.rssKb ?? 0;
    return p;
  }

  tail(n = 20): string {
    return this.output.slice(-n).join("\n");
  }

  /** SIGTERM (the daemon flushes Kafka and acknowledges), then SIGKILL if it hangs. */
  async stop(timeoutMs = 40_000): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    this.sample();
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }
}

interface PhaseStats {
  name: string;
  description: string;
  expected: number;
  consumed: number;
  taskInstance: number;
  dagRun: number;
  churnLeaks: number;
  duplicates: number;
  orderViolations: number;
  badKeys: number;
  bytes: number;
  maxBytes: number;
  byState: Record<string, number>;
  samples: string[];
  firstRecvUs: number;
  lastRecvUs: number;
  minCommitUs: number;
  latChunks: Float64Array[];
  /** Events received per second since originUs. */
  bins: number[];
  gen: GenResult | null;
  /** For the drain phase: when the daemon was spawned. */
  daemonStartUs: number | null;
  /** Start of the phase (drain: the daemon's spawn): origin of `bins`. */
  originUs: number;
  daemonPeakRssKb: number;
  daemonCpuSeconds: number;
  machineBusyPct: number;
  wallSeconds: number;
  /** Session restarts of the daemon during the phase, and why. */
  restarts: number;
  restartReasons: Record<string, number>;
  ok: boolean;
}

function newPhase(name: string, description: string): PhaseStats {
  return {
    name,
    description,
    expected: 0,
    consumed: 0,
    taskInstance: 0,
    dagRun: 0,
    churnLeaks: 0,
    duplicates: 0,
    orderViolations: 0,
    badKeys: 0,
    bytes: 0,
    maxBytes: 0,
    byState: {},
    samples: [],
    firstRecvUs: Number.POSITIVE_INFINITY,
    lastRecvUs: 0,
    minCommitUs: Number.POSITIVE_INFINITY,
    latChunks: [],
    bins: [],
    gen: null,
    daemonStartUs: null,
    originUs: nowUs(),
    daemonPeakRssKb: 0,
    daemonCpuSeconds: 0,
    machineBusyPct: 0,
    wallSeconds: 0,
    restarts: 0,
    restartReasons: {},
    ok: false,
  };
}

function percentiles(chunks: Float64Array[]): { p50: number; p95: number; p99: number; max: number; n: number } | null {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  if (n === 0) return null;
  const all = new Float64Array(n);
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  all.sort();
  const at = (p: number) => all[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))]!;
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: all[n - 1]!, n };
}

// ------------------------------------------------------------------------------------- bench

class Bench {
  readonly opts: Options;
  readonly svc: Services;
  readonly name = `bench_${randomBytes(4).toString("hex")}`;
  readonly topic: string;
  readonly groupId: string;
  readonly sql: Sql;
  readonly workload: Workload;
  readonly daemonEnv: Record<string, string>;
  readonly passthrough: Record<string, string> = {};
  pool: pg.Client[] = [];
  admin: pg.Client | null = null;
  daemons: DaemonProcess[] = [];
  daemon: DaemonProcess | null = null;
  worker: Worker | null = null;
  joined = false;
  consumerError: string | null = null;
  current: PhaseStats | null = null;
  phases: PhaseStats[] = [];
  /** The paced-max phase's rate and the live maximum it is a share of; null: not run. */
  pacedMax: { fraction: number; liveMax: number; rate: number } | null = null;
  consumedTotal = 0;
  expectedTotal = 0;
  dbCreated = false;
  pgVersion = "";
  private cleaning: Promise<void> | null = null;

  constructor(opts: Options, svc: Services) {
    this.opts = opts;
    this.svc = svc;
    this.topic = `${this.name}.events`;
    this.groupId = `${this.name}_consumer`;
    this.sql = sqlFor(opts.major);
    this.workload = new Workload(opts.dags, opts.seed, opts.failRate, opts.heartbeats);
    for (const [k, v] of Object.entries(process.env)) {
      if (v === undefined || v === "") continue;
      const ours = ["EVENTSTREAM_SLOT", "EVENTSTREAM_PUBLICATION", "EVENTSTREAM_TOPIC", "EVENTSTREAM_TOPIC_TEMPLATE"];
      if (
        (k.startsWith("EVENTSTREAM_") && !k.startsWith("EVENTSTREAM_TEST_") && !ours.includes(k)) ||
        k.startsWith("MALLOC_") ||
        k.startsWith("MEMPROBE_") ||
        k === "KAFKA_CLIENT_ID" ||
        k === "LOG_LEVEL"
      ) {
        this.passthrough[k] = v;
      }
    }
    this.daemonEnv = {
      PGHOST: svc.pg.host,
      PGPORT: String(svc.pg.port),
      PGUSER: svc.pg.user,
      PGPASSWORD: svc.pg.password,
      PGDATABASE: this.name,
      KAFKA_BROKERS: svc.brokers.join(","),
      EVENTSTREAM_SLOT: this.name,
      EVENTSTREAM_PUBLICATION: this.name,
      EVENTSTREAM_TOPIC: this.topic,
      LOG_LEVEL: "warn",
      ...(opts.scrapeSeconds === 0 ? { EVENTSTREAM_HTTP_PORT: "0" } : {}),
      ...this.passthrough,
    };
  }

  pgClient(database: string): pg.Client {
    const c = new pg.Client({ ...this.svc.pg, database, application_name: "eventstream-bench" });
    c.on("error", () => undefined);
    return c;
  }

  async setup(): Promise<void> {
    const { major } = this.opts;
    const { version, sql: schema } = airflowSchema(ROOT, major);
    this.admin = this.pgClient("postgres");
    await this.admin.connect();
    this.pgVersion = (await this.admin.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
    await this.admin.query(`CREATE DATABASE ${this.name}`);
    this.dbCreated = true;
    const c = this.pgClient(this.name);
    await c.connect();
    await c.query(schema);
    await c.end();
    log(`database ${this.name}: Airflow ${version} schema (PostgreSQL ${this.pgVersion})`);
    for (let i = 0; i < this.opts.connections; i++) {
      const client = this.pgClient(this.name);
      await client.connect();
      this.pool.push(client);
    }
  }

  async startDaemon(): Promise<DaemonProcess> {
    // Node flags for the daemon only, e.g. BENCH_DAEMON_NODE_ARGS="--max-semi-space-size=4".
    const args = (process.env.BENCH_DAEMON_NODE_ARGS ?? "").split(/\s+/).filter((a) => a !== "");
    if (this.opts.memProbe) args.push("--import", path.join(ROOT, "bench/mem-probe.ts"));
    if (this.opts.cpuProf) {
      const dir = path.join(RESULTS_DIR, "profiles");
      mkdirSync(dir, { recursive: true });
      args.push("--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=daemon-${this.name}-${this.daemons.length + 1}.cpuprofile`);
    }
    mkdirSync(RESULTS_DIR, { recursive: true });
    // A port of its own for the endpoint unless one is set (EVENTSTREAM_HTTP_PORT passed through).
    const env = { ...this.daemonEnv };
    if (this.opts.scrapeSeconds > 0 && this.passthrough.EVENTSTREAM_HTTP_PORT === undefined) {
      env.EVENTSTREAM_HTTP_PORT = String(await freePort());
      env.EVENTSTREAM_HTTP_HOST = "127.0.0.1";
    }
    const d = new DaemonProcess(env, args, path.join(RESULTS_DIR, `daemon-${this.daemons.length + 1}.log`));
    if (this.opts.scrapeSeconds > 0) d.scrape(Number(env.EVENTSTREAM_HTTP_PORT), this.opts.scrapeSeconds);
    this.daemons.push(d);
    this.daemon = d;
    // Ready once the slot is active: the daemon connects Kafka (and creates the topic) before it starts replication.
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (d.exitCode !== undefined) throw new Error(`daemon exited with ${d.exitCode} before streaming:\n${d.tail()}`);
      const { rows } = await this.admin!.query<{ active: boolean }>("SELECT active FROM pg_replication_slots WHERE slot_name = $1", [
        this.name,
      ]);
      if (rows[0]?.active) break;
      if (Date.now() > deadline) throw new Error(`daemon not streaming after 60 s:\n${d.tail()}`);
      await sleep(50);
    }
    return d;
  }

  async startConsumer(): Promise<void> {
    const init: ConsumerInit = { brokers: this.svc.brokers, topic: this.topic, groupId: this.groupId };
    const worker = (this.worker = new Worker(new URL("./consumer.ts", import.meta.url), { workerData: init }));
    worker.on("message", (m: ConsumerMessage) => this.onConsumer(m));
    worker.on("error", (e) => {
      this.consumerError = e.stack ?? e.message;
    });
    const deadline = Date.now() + 60_000;
    while (!this.joined) {
      if (this.consumerError) throw new Error(`consumer failed: ${this.consumerError}`);
      if (Date.now() > deadline) throw new Error("consumer did not join its group within 60 s");
      await sleep(20);
    }
  }

  onConsumer(m: ConsumerMessage): void {
    if (m.type === "joined") this.joined = true;
    else if (m.type === "error") this.consumerError = m.message;
    else if (m.type === "batch") {
      this.consumedTotal += m.count;
      const p = this.current;
      if (!p) return;
      p.consumed += m.count;
      p.taskInstance += m.taskInstance;
      p.dagRun += m.dagRun;
      p.churnLeaks += m.churnLeaks;
      p.duplicates += m.duplicates;
      p.orderViolations += m.orderViolations;
      p.badKeys += m.badKeys;
      p.bytes += m.bytes;
      if (m.maxBytes > p.maxBytes) p.maxBytes = m.maxBytes;
      for (const [k, v] of Object.entries(m.byState)) p.byState[k] = (p.byState[k] ?? 0) + v;
      for (const s of m.samples) if (p.samples.length < 10) p.samples.push(s);
      if (m.recvUs < p.firstRecvUs) p.firstRecvUs = m.recvUs;
      if (m.recvUs > p.lastRecvUs) p.lastRecvUs = m.recvUs;
      if (m.minCommitUs < p.minCommitUs) p.minCommitUs = m.minCommitUs;
      p.latChunks.push(m.latMs);
      const bin = Math.max(0, Math.floor((m.recvUs - p.originUs) / 1e6));
      while (p.bins.length <= bin) p.bins.push(0);
      p.bins[bin]! += m.count;
    }
  }

  /**
   * Runs one phase: `write` produces the load; then waits until every event the phase owes has
   * been consumed, and a little longer, to catch extra (churn, duplicate) events.
   */
  async phase(name: string, description: string, expected: number, write: (p: PhaseStats) => Promise<void>): Promise<PhaseStats> {
    const p = newPhase(name, description);
    p.expected = expected;
    this.phases.push(p);
    this.current = p;
    this.expectedTotal += expected;
    log(`phase ${name}: ${description} (${expected.toLocaleString("en-US")} events expected)`);
    const t0 = performance.now();
    const m0 = machineTicks();
    const cpu0 = this.daemon?.sample()?.cpuTicks ?? 0;
    const daemonBefore = this.daemon;
    this.daemon?.takeWindowPeak();
    const restarts0 = this.daemon?.restarts ?? 0;
    const reasons0 = new Map(this.daemon?.restartReasons ?? []);
    await write(p);
    // Wait for the rest; give up after 30 s without a single new event.
    let seen = this.consumedTotal;
    let progressAt = Date.now();
    while (this.consumedTotal < this.expectedTotal) {
      if (this.consumerError) throw new Error(`consumer failed: ${this.consumerError}`);
      if (this.daemon && this.daemon.exitCode !== undefined)
        throw new Error(`daemon exited with ${this.daemon.exitCode} during ${name}:\n${this.daemon.tail()}`);
      if (this.consumedTotal !== seen) {
        seen = this.consumedTotal;
        progressAt = Date.now();
      } else if (Date.now() - progressAt > 30_000) {
        log(`phase ${name}: no event for 30 s; ${this.expectedTotal - this.consumedTotal} missing`);
        break;
      }
      await sleep(10);
    }
    const done = performance.now();
    const d = this.daemon;
    const cpu1 = d?.sample()?.cpuTicks ?? 0;
    const m1 = machineTicks();
    p.wallSeconds = (done - t0) / 1000;
    p.daemonCpuSeconds = d === daemonBefore ? (cpu1 - cpu0) / CLK_TCK : cpu1 / CLK_TCK;
    p.machineBusyPct = ((m1[0] - m0[0]) / Math.max(1, m1[1] - m0[1])) * 100;
    p.daemonPeakRssKb = d?.takeWindowPeak() ?? 0;
    // Extra events would arrive now: churn that leaked, duplicates.
    await sleep(1500);
    if (d) {
      const same = d === daemonBefore;
      p.restarts = d.restarts - (same ? restarts0 : 0);
      for (const [k, v] of d.restartReasons) {
        const n = v - (same ? (reasons0.get(k) ?? 0) : 0);
        if (n > 0) p.restartReasons[k] = n;
      }
    }
    p.ok = p.consumed === p.expected && p.churnLeaks === 0 && p.duplicates === 0 && p.orderViolations === 0 && p.badKeys === 0;
    const verdict = p.ok ? "ok" : "MISMATCH";
    log(
      `phase ${name}: consumed ${p.consumed.toLocaleString("en-US")} / ${p.expected.toLocaleString("en-US")} events in ${p.wallSeconds.toFixed(1)} s -- ${verdict}`,
    );
    if (!p.ok && this.daemon) log(`daemon output (last lines):\n${this.daemon.tail() || "(none)"}`);
    this.current = null;
    return p;
  }

  /** Runs `fn` with the generator's connections committing asynchronously when `async` (synchronous_commit=off), then back on. */
  private async committing<T>(async: boolean, fn: () => Promise<T>): Promise<T> {
    if (!async) return fn();
    for (const c of this.pool) await c.query("SET synchronous_commit = off");
    const out = await fn();
    for (const c of this.pool) await c.query("SET synchronous_commit = on");
    return out;
  }

  /** A seed phase: each run's dag_run and task_instance INSERTs, one transaction per run, counted as events. */
  private async seed(name: string, runs: Run[]): Promise<void> {
    const events = runs.reduce((a, r) => a + 1 + r.tis.length, 0);
    await this.phase(name, "dag_run + task_instance INSERTs, one transaction per run", events, async (p) => {
      p.gen = await generate(
        this.pool,
        runs,
        (run) => [this.sql.seed(run)],
        null,
        (run, res) => {
          run.dagRunId = (res.rows[0] as { id: number }).id;
        },
      );
    });
  }

  async run(): Promise<void> {
    const o = this.opts;
    await this.setup();
    await this.startDaemon();
    await this.startConsumer();
    log(`daemon pid ${this.daemon!.pid} streaming; consumer joined; topic ${this.topic}`);

    const w = this.workload;
    const latencyRuns = o.phases.has("latency") ? w.plan(o.rate * o.latencySeconds) : [];
    const liveRuns = o.phases.has("throughput") ? w.plan(o.transitions) : [];
    const drainRuns = o.phases.has("drain") ? w.plan(o.transitions) : [];
    const allRuns = [...latencyRuns, ...liveRuns, ...drainRuns];
    const sum = (runs: Run[]) => runs.reduce((a, r) => a + r.events, 0);

    await this.seed("seed", allRuns);

    if (latencyRuns.length > 0) {
      await this.phase("latency", `paced at ${o.rate} events/s for ~${o.latencySeconds} s`, sum(latencyRuns), async (p) => {
        p.gen = await generate(this.pool, latencyRuns, (run) => w.script(run, this.sql), o.rate);
      });
    }
    if (liveRuns.length > 0) {
      const mode = o.asyncCommit ? "synchronous_commit=off" : "synchronous_commit=on";
      await this.phase("throughput", `as fast as ${o.connections} connections commit (${mode}), live`, sum(liveRuns), async (p) => {
        p.gen = await this.committing(o.asyncCommit, () => generate(this.pool, liveRuns, (run) => w.script(run, this.sql), null));
      });
    }
    if (o.phases.has("paced-max")) {
      const live = report(this.phases.find((p) => p.name === "throughput")!);
      // The live maximum: what the generator committed, unless the daemon delivered less (it fell behind).
      const max = Math.min(live.generator?.events_per_s ?? 0, live.events_per_s ?? Infinity);
      const rate = Math.max(1, Math.round(o.maxFraction * max));
      const runs = w.plan(rate * o.latencySeconds);
      await this.seed("seed-max", runs);
      const desc = `paced at ${rate} events/s (${o.maxFraction} x the live maximum ${Math.round(max)}) for ~${o.latencySeconds} s`;
      await this.phase("paced-max", desc, sum(runs), async (p) => {
        p.gen = await this.committing(o.asyncCommit, () => generate(this.pool, runs, (run) => w.script(run, this.sql), rate));
      });
      this.pacedMax = { fraction: o.maxFraction, liveMax: max, rate };
    }
    if (drainRuns.length > 0) {
      log("stopping the daemon (SIGTERM) for the drain phase");
      const code = await this.daemon!.stop();
      if (code !== 0) throw new Error(`daemon exited with ${code} on SIGTERM:\n${this.daemon!.tail()}`);
      this.daemon = null;
      // Written while no daemon reads; asynchronous commit only to write the backlog sooner (the WAL is the same).
      const backlog = await this.committing(true, () => generate(this.pool, drainRuns, (run) => w.script(run, this.sql), null));
      log(
        `backlog written: ${backlog.events.toLocaleString("en-US")} events in ${backlog.txs.toLocaleString("en-US")} transactions, ${((backlog.endUs - backlog.startUs) / 1e6).toFixed(1)} s`,
      );
      await this.phase("drain", "backlog written while stopped, then the daemon restarted", sum(drainRuns), async (p) => {
        p.daemonStartUs = p.originUs = nowUs();
        await this.startDaemon();
        p.gen = backlog;
      });
    }
    if (o.phases.has("wide")) {
      const wide = w.planWide(o.wideRows);
      log(`stopping the daemon (SIGTERM) for the wide phase`);
      const code = await this.daemon!.stop();
      if (code !== 0) throw new Error(`daemon exited with ${code} on SIGTERM:\n${this.daemon!.tail()}`);
      this.daemon = null;
      const client = this.pool[0]!;
      const seeded = await generate(
        [client],
        [wide],
        (run) => [this.sql.seed(run)],
        null,
        (run, res) => {
          run.dagRunId = (res.rows[0] as { id: number }).id;
        },
      );
      const lifecycle = await generate([client], [wide], (run) => w.script(run, this.sql), null);
      const written: GenResult = {
        txs: seeded.txs + lifecycle.txs,
        events: seeded.events + lifecycle.events,
        startUs: seeded.startUs,
        endUs: lifecycle.endUs,
        shapes: { ...seeded.shapes, ...lifecycle.shapes },
      };
      await this.phase(
        "wide",
        `one run of a ${o.wideRows}-way mapped task, written while stopped, then the daemon restarted`,
        written.events,
        async (p) => {
          p.daemonStartUs = p.originUs = nowUs();
          await this.startDaemon();
          p.gen = written;
        },
      );
    }
    // HWM of the running daemon before it stops.
    this.daemon?.sample();
  }

  /** Idempotent: a second caller (the signal handler and main) waits for the same cleanup. */
  cleanup(): Promise<void> {
    this.cleaning ??= this.doCleanup();
    return this.cleaning;
  }

  private async doCleanup(): Promise<void> {
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        log(`cleanup: ${what} failed: ${(e as Error).message}`);
      }
    };
    for (const d of this.daemons) {
      await step("stopping the daemon", async () => {
        const code = await d.stop();
        if (code !== 0 && code !== null) log(`daemon pid ${d.pid} exited with ${code}:\n${d.tail()}`);
      });
    }
    if (this.worker) {
      const w = this.worker;
      await step("stopping the consumer", async () => {
        const stopped = new Promise<void>((resolve) => w.on("message", (m: ConsumerMessage) => m.type === "stopped" && resolve()));
        w.postMessage({ type: "stop" });
        await Promise.race([stopped, sleep(10_000)]);
        await w.terminate();
      });
    }
    for (const c of this.pool) await step("closing a connection", () => c.end());
    const admin = this.admin;
    if (admin && this.dbCreated) {
      await step("dropping the database and slot", async () => {
        for (let i = 0; i < 100; i++) {
          const { rows } = await admin.query<{ slot_name: string; active_pid: number | null }>(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1",
            [this.name],
          );
          if (rows.length === 0) break;
          for (const r of rows) {
            if (r.active_pid !== null) await admin.query("SELECT pg_terminate_backend($1)", [r.active_pid]);
            else await admin.query("SELECT pg_drop_replication_slot($1)", [r.slot_name]).catch(() => undefined);
          }
          await sleep(100);
        }
        await admin.query(`DROP PUBLICATION IF EXISTS ${this.name}`).catch(() => undefined);
        await admin.query(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
      });
    }
    if (admin) await step("closing the admin connection", () => admin.end());
    await step("deleting the topic and consumer group", async () => {
      const kadmin = new Kafka({ clientId: "eventstream-bench-admin", brokers: this.svc.brokers, logLevel: logLevel.NOTHING }).admin();
      await kadmin.connect();
      try {
        const topics = await kadmin.listTopics();
        if (topics.includes(this.topic)) await kadmin.deleteTopics({ topics: [this.topic], timeout: 10_000 });
        await kadmin.deleteGroups([this.groupId]).catch(() => undefined);
      } finally {
        await kadmin.disconnect();
      }
    });
  }
}

// ------------------------------------------------------------------------------------ report

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);
}

interface PhaseReport {
  phase: string;
  description: string;
  events_expected: number;
  events_consumed: number;
  task_instance_events: number;
  dag_run_events: number;
  event_bytes_avg: number | null;
  event_bytes_max: number;
  correct: boolean;
  problems: string[];
  seconds: number | null;
  events_per_s: number | null;
  events_per_s_basis: string;
  steady_events_per_s: number | null;
  generator: {
    transactions: number;
    events: number;
    seconds: number;
    transactions_per_s: number;
    events_per_s: number;
    statements: GenResult["shapes"];
  } | null;
  latency_ms: { p50: number; p95: number; p99: number; max: number } | null;
  daemon_peak_rss_mb: number;
  daemon_cpu_pct: number;
  /** Daemon CPU seconds (user + system, from /proc) per 100,000 events consumed: the figure that holds under load. */
  daemon_cpu_s_per_100k: number | null;
  machine_cpu_busy_pct: number;
  by_state: Record<string, number>;
  daemon_session_restarts: number;
  daemon_restart_reasons: Record<string, number>;
}

function report(p: PhaseStats): PhaseReport {
  const gen = p.gen
    ? (() => {
        const s = (p.gen.endUs - p.gen.startUs) / 1e6;
        return {
          transactions: p.gen.txs,
          events: p.gen.events,
          seconds: s,
          transactions_per_s: p.gen.txs / s,
          events_per_s: p.gen.events / s,
          statements: p.gen.shapes,
        };
      })()
    : null;
  let seconds: number | null = null;
  let basis = "";
  if (p.consumed > 0) {
    if (p.name === "drain" || p.name === "wide") {
      seconds = (p.lastRecvUs - p.firstRecvUs) / 1e6;
      basis = "first to last event received (backlog; excludes daemon start-up)";
    } else {
      seconds = (p.lastRecvUs - p.minCommitUs) / 1e6;
      basis = "first commit to last event received";
    }
  }
  // Steady state: the median of the full one-second windows, first and last second left out.
  const inner = p.bins.slice(1, -1).filter((n) => n > 0);
  const steady = inner.length >= 3 ? [...inner].sort((a, b) => a - b)[Math.floor(inner.length / 2)]! : null;
  const lat = p.name === "drain" || p.name === "wide" ? null : percentiles(p.latChunks);
  const problems: string[] = [];
  if (p.consumed !== p.expected)
    problems.push(
      `consumed ${p.consumed} events, expected ${p.expected} (${p.consumed - p.expected > 0 ? "+" : ""}${p.consumed - p.expected})`,
    );
  if (p.churnLeaks > 0) problems.push(`${p.churnLeaks} events without a transition (churn leaked)`);
  if (p.duplicates > 0) problems.push(`${p.duplicates} duplicate positions`);
  if (p.orderViolations > 0) problems.push(`${p.orderViolations} positions out of order within a partition`);
  if (p.badKeys > 0) problems.push(`${p.badKeys} events whose Kafka key is not their dag_id`);
  if (p.restarts > 0) {
    problems.push(
      `the daemon restarted its session ${p.restarts} time(s) (re-delivering from the slot: duplicates are expected after that):`,
    );
    for (const [why, n] of Object.entries(p.restartReasons)) problems.push(`  ${n} x ${why}`);
  }
  problems.push(...p.samples);
  return {
    phase: p.name,
    description: p.description,
    events_expected: p.expected,
    events_consumed: p.consumed,
    task_instance_events: p.taskInstance,
    dag_run_events: p.dagRun,
    event_bytes_avg: p.consumed > 0 ? p.bytes / p.consumed : null,
    event_bytes_max: p.maxBytes,
    correct: p.ok,
    problems,
    seconds,
    events_per_s: seconds && seconds > 0 ? p.consumed / seconds : null,
    events_per_s_basis: basis,
    steady_events_per_s: steady,
    generator: gen,
    latency_ms: lat ? { p50: lat.p50, p95: lat.p95, p99: lat.p99, max: lat.max } : null,
    daemon_peak_rss_mb: p.daemonPeakRssKb / 1024,
    daemon_cpu_pct: (p.daemonCpuSeconds / Math.max(0.001, p.wallSeconds)) * 100,
    daemon_cpu_s_per_100k: p.consumed > 0 ? (p.daemonCpuSeconds / p.consumed) * 100_000 : null,
    machine_cpu_busy_pct: p.machineBusyPct,
    by_state: p.byState,
    daemon_session_restarts: p.restarts,
    daemon_restart_reasons: p.restartReasons,
  };
}

function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "-";
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(rows[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)].join("\n");
}

// -------------------------------------------------------------------------------------- main

/** kafkajs 2.2.4 sets a negative timer in its request queue (harmless; Node >= 23 warns about it). */
function quietKafkajsTimerWarning(): void {
  process.removeAllListeners("warning");
  process.on("warning", (w) => {
    if (w.name !== "TimeoutNegativeWarning") process.stderr.write(`${w.name}: ${w.message}\n`);
  });
}

async function main(): Promise<number> {
  quietKafkajsTimerWarning();
  const opts = parseOptions(process.argv.slice(2), process.env);
  if (!existsSync(path.join(ROOT, "dist/cli.js")))
    throw new Error("dist/cli.js is missing: run `npm run build` first (npm run bench does)");
  const svc = resolveServices(process.env);
  const bench = new Bench(opts, svc);
  const envShown = Object.entries(bench.passthrough).map(([k, v]) => `${k}=${v}`);
  if (process.env.BENCH_DAEMON_NODE_ARGS) envShown.push(`BENCH_DAEMON_NODE_ARGS="${process.env.BENCH_DAEMON_NODE_ARGS}"`);
  const args = process.argv.slice(2).join(" ");
  const command = `${envShown.length > 0 ? `${envShown.join(" ")} ` : ""}npm run bench${args !== "" ? ` -- ${args}` : ""}`;
  log(command);
  log(`PostgreSQL ${svc.pg.host}:${svc.pg.port}, Kafka ${svc.brokers.join(",")} (from ${svc.from})`);

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log("interrupted: cleaning up (again to exit at once)");
    bench.cleanup().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  // Everything shares the machine: say so when something else is already busy on it.
  const m0 = machineTicks();
  await sleep(1000);
  const m1 = machineTicks();
  const busyBefore = ((m1[0] - m0[0]) / Math.max(1, m1[1] - m0[1])) * 100;
  const loadBefore = os.loadavg();
  const quiet = busyBefore < 25;
  log(
    `machine before the run: ${fmt(busyBefore)}% CPU busy, load average ${loadBefore.map((l) => l.toFixed(2)).join(" ")}${quiet ? "" : " -- NOT IDLE: figures will be pessimistic"}`,
  );

  let failure: Error | null = null;
  try {
    await bench.run();
  } catch (e) {
    failure = e as Error;
  }
  const daemons = bench.daemons.map((d) => {
    d.sample();
    return {
      pid: d.pid,
      peak_rss_mb: d.peakRssKb / 1024,
      peak_rss_anon_mb: (d.atPeak?.anonKb ?? 0) / 1024,
      peak_rss_file_mb: (d.atPeak?.fileKb ?? 0) / 1024,
      vm_hwm_mb: d.hwmKb / 1024,
      memory_at_peak: d.memAtPeak,
      scrapes: d.scrapeMs.length,
      scrape_failures: d.scrapeFailures,
      scrape_ms_p50: d.scrapeMs.length > 0 ? [...d.scrapeMs].sort((a, b) => a - b)[Math.floor(d.scrapeMs.length / 2)]! : null,
      scrape_ms_max: d.scrapeMs.length > 0 ? Math.max(...d.scrapeMs) : null,
    };
  });
  await bench.cleanup();
  if (interrupted) return 130;

  const phases = bench.phases.map(report);
  const peakRssMb = Math.max(0, ...daemons.map((d) => Math.max(d.peak_rss_mb, d.vm_hwm_mb)));
  const byName = new Map(phases.map((p) => [p.phase, p]));
  const latency = byName.get("latency");
  const live = byName.get("throughput");
  const drain = byName.get("drain");
  const pacedMax = byName.get("paced-max");

  const rows: string[][] = [
    [
      "phase",
      "events",
      "seconds",
      "events/s",
      "steady ev/s",
      "gen tx/s",
      "gen ev/s",
      "p50 ms",
      "p95 ms",
      "p99 ms",
      "max ms",
      "RSS MB",
      "daemon CPU",
      "CPU s/100k",
      "machine CPU",
      "check",
    ],
  ];
  for (const p of phases) {
    rows.push([
      p.phase,
      fmt(p.events_consumed),
      fmt(p.seconds, 2),
      fmt(p.events_per_s),
      fmt(p.steady_events_per_s),
      fmt(p.generator?.transactions_per_s),
      fmt(p.generator?.events_per_s),
      fmt(p.latency_ms?.p50, 1),
      fmt(p.latency_ms?.p95, 1),
      fmt(p.latency_ms?.p99, 1),
      fmt(p.latency_ms?.max, 1),
      fmt(p.daemon_peak_rss_mb, 1),
      `${fmt(p.daemon_cpu_pct)}%`,
      fmt(p.daemon_cpu_s_per_100k, 2),
      `${fmt(p.machine_cpu_busy_pct)}%`,
      p.correct ? "ok" : "MISMATCH",
    ]);
  }

  // The bars: >= 20,000 events/s sustained; p99 < 50 ms at 1,000 events/s and < 250 ms at 80% of the live
  // maximum (issue 14); RSS < 200 MB.
  const capacity = Math.max(live?.events_per_s ?? 0, drain?.events_per_s ?? 0);
  const liveGenBound = live?.generator ? (live.events_per_s ?? 0) >= 0.85 * live.generator.events_per_s : false;
  const bars = {
    throughput: {
      bar: ">= 20000 events/s",
      live_events_per_s: live?.events_per_s ?? null,
      live_generator_events_per_s: live?.generator?.events_per_s ?? null,
      live_generator_bound: live ? liveGenBound : null,
      drain_events_per_s: drain?.events_per_s ?? null,
      measured: capacity || null,
      met: capacity >= 20_000,
    },
    latency: {
      bar: `p99 < 50 ms at 1000 events/s`,
      rate: opts.rate,
      p99_ms: latency?.latency_ms?.p99 ?? null,
      met: latency?.latency_ms ? latency.latency_ms.p99 < 50 && opts.rate >= 1000 : false,
    },
    latency_near_max: {
      bar: `p99 < 250 ms at 0.8 x the live maximum`,
      fraction: bench.pacedMax?.fraction ?? null,
      live_max_events_per_s: bench.pacedMax?.liveMax ?? null,
      rate: bench.pacedMax?.rate ?? null,
      achieved_events_per_s: pacedMax?.generator?.events_per_s ?? null,
      p99_ms: pacedMax?.latency_ms?.p99 ?? null,
      met: pacedMax?.latency_ms ? pacedMax.latency_ms.p99 < 250 && (bench.pacedMax?.fraction ?? 0) >= 0.8 : false,
    },
    rss: { bar: "< 200 MB", peak_mb: peakRssMb, met: peakRssMb > 0 && peakRssMb < 200 },
  };
  const correct = failure === null && phases.length > 0 && phases.every((p) => p.correct);

  const out: string[] = [];
  out.push("");
  out.push(
    `airflow-eventstream benchmark -- Airflow ${opts.major}.x schema, ${opts.dags} DAGs, ${opts.connections} generator connections, ${os.cpus().length} CPUs, PostgreSQL ${bench.pgVersion}, Node ${process.version}`,
  );
  out.push(`command: ${command}`);
  out.push(
    `daemon settings: ${
      Object.keys(bench.passthrough).length > 0
        ? Object.entries(bench.passthrough)
            .map(([k, v]) => `${k}=${v}`)
            .join(" ")
        : "defaults"
    } (LOG_LEVEL=${bench.daemonEnv.LOG_LEVEL})${process.env.BENCH_DAEMON_NODE_ARGS ? `, node ${process.env.BENCH_DAEMON_NODE_ARGS}` : ""}`,
  );
  if (!quiet)
    out.push(
      `!! the machine was ${fmt(busyBefore)}% busy before the run (load average ${loadBefore[0]!.toFixed(2)}): other work competed for the CPUs`,
    );
  const tp =
    phases.find((p) => p.phase === "throughput") ?? phases.find((p) => p.phase === "drain") ?? phases.find((p) => p.phase === "latency");
  if (tp?.generator) {
    const st = tp.generator.statements;
    const kind = (names: string[]) => names.map((n) => st[n]).filter((x) => x !== undefined);
    const sumOf = (xs: { txs: number; events: number; min: number; max: number }[]) => ({
      txs: xs.reduce((a, x) => a + x.txs, 0),
      events: xs.reduce((a, x) => a + x.events, 0),
      min: Math.min(...xs.map((x) => x.min)),
      max: Math.max(...xs.map((x) => x.max)),
    });
    const m = opts.major;
    const wave = sumOf(kind([`sched_first${m}`, `sched${m}`, `queue${m}`]));
    const worker = sumOf(kind([`run${m}`, `ok${m}`, `fail${m}`]));
    const hb = sumOf(kind([`hb${m}`]));
    out.push(
      `workload (${tp.phase} phase): ${fmt(tp.generator.transactions)} transactions, ${fmt(tp.generator.events / tp.generator.transactions, 2)} events each on average; ` +
        `scheduler waves ${fmt(wave.txs)} tx of ${wave.min}-${wave.max} rows (avg ${fmt(wave.events / Math.max(1, wave.txs), 1)}); ` +
        `worker single-row ${fmt(worker.txs)} tx; heartbeats ${fmt(hb.txs)} tx (no event); dag_run success ${fmt(st.run_success?.txs ?? 0)} tx; ` +
        `event size avg ${fmt(tp.event_bytes_avg)} B, max ${fmt(tp.event_bytes_max)} B`,
    );
  }
  out.push("");
  out.push(table(rows));
  out.push("");
  out.push(
    "events/s: events / (first commit -> last event received); drain, wide: first -> last event received of a backlog written while the daemon was stopped.",
  );
  out.push("steady ev/s: median of full one-second windows. gen: what the load generator committed (its own rate).");
  out.push("latency: consumer receipt - source.commit_time (same clock): an upper bound of commit -> Kafka acknowledgement.");
  out.push("RSS: daemon process alone (/proc/<pid>/status every 100 ms), peak within the phase. CPU: % of one core.");
  out.push(
    `daemon peak RSS over the run: ${daemons.map((d) => `pid ${d.pid} VmRSS peak ${fmt(d.peak_rss_mb, 1)} MB (anon ${fmt(d.peak_rss_anon_mb, 1)} + file ${fmt(d.peak_rss_file_mb, 1)}), VmHWM ${fmt(d.vm_hwm_mb, 1)} MB`).join("; ")}`,
  );
  out.push(
    opts.scrapeSeconds === 0
      ? "metrics endpoint: off (--scrape 0: EVENTSTREAM_HTTP_PORT=0)"
      : `metrics endpoint: on, /metrics scraped every ${opts.scrapeSeconds} s: ${daemons
          .map(
            (d) =>
              `pid ${d.pid} ${d.scrapes} scrapes (p50 ${fmt(d.scrape_ms_p50, 1)} ms, max ${fmt(d.scrape_ms_max, 1)} ms, ${d.scrape_failures} failed)`,
          )
          .join("; ")}`,
  );
  for (const d of daemons) if (d.memory_at_peak) out.push(`  pid ${d.pid} at peak RSS (mem-probe): ${JSON.stringify(d.memory_at_peak)}`);
  out.push("");
  const mark = (ok: boolean) => (ok ? "MET " : "MISSED");
  out.push(
    `bar throughput >= 20,000 events/s: ${mark(bars.throughput.met)}  live ${fmt(live?.events_per_s)} ev/s${live ? (liveGenBound ? ` (generator-bound: it committed ${fmt(live.generator?.events_per_s)} ev/s)` : ` (generator committed ${fmt(live.generator?.events_per_s)} ev/s)`) : ""}; drain (daemon capacity) ${fmt(drain?.events_per_s)} ev/s`,
  );
  out.push(
    `bar p99 < 50 ms at ${fmt(opts.rate)} events/s:      ${mark(bars.latency.met)}  p99 ${fmt(latency?.latency_ms?.p99, 1)} ms (p50 ${fmt(latency?.latency_ms?.p50, 1)} ms)`,
  );
  if (bench.pacedMax)
    out.push(
      `bar p99 < 250 ms at 0.8 x live max: ${mark(bars.latency_near_max.met)}  p99 ${fmt(pacedMax?.latency_ms?.p99, 1)} ms (p50 ${fmt(pacedMax?.latency_ms?.p50, 1)} ms) at ${fmt(pacedMax?.generator?.events_per_s)} ev/s committed, paced at ${bench.pacedMax.fraction} x ${fmt(bench.pacedMax.liveMax)}`,
    );
  out.push(`bar daemon RSS < 200 MB:             ${mark(bars.rss.met)}  peak ${fmt(peakRssMb, 1)} MB`);
  out.push(`correctness (count, no churn events, no duplicates, order per partition, key = dag_id): ${correct ? "ok" : "FAILED"}`);
  for (const p of phases) for (const pr of p.problems) out.push(`  !! ${p.phase}: ${pr}`);
  if (failure) out.push(`  !! bench failed: ${failure.stack ?? failure.message}`);
  console.log(out.join("\n"));

  mkdirSync(RESULTS_DIR, { recursive: true });
  const json = {
    when: new Date().toISOString(),
    command,
    options: { ...opts, phases: [...opts.phases] },
    daemon_env: bench.passthrough,
    machine: {
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model ?? "",
      memory_mb: Math.round(os.totalmem() / 1048576),
      node: process.version,
      postgresql: bench.pgVersion,
      busy_pct_before: busyBefore,
      load_average_before: loadBefore,
      load_average_after: os.loadavg(),
    },
    daemon_node_args: process.env.BENCH_DAEMON_NODE_ARGS ?? "",
    phases,
    daemons,
    bars,
    correct,
    error: failure ? (failure.stack ?? failure.message) : null,
  };
  writeFileSync(path.join(RESULTS_DIR, "latest.json"), `${JSON.stringify(json, null, 2)}\n`);
  log(`results written to bench/results/latest.json`);
  if (!correct) {
    console.log("\n!!!!!!!! CORRECTNESS FAILURE: see the lines marked !! above !!!!!!!!");
    return 1;
  }
  const nearMaxMissed = bench.pacedMax !== null && !bars.latency_near_max.met;
  if (opts.strict && !(bars.throughput.met && bars.latency.met && bars.rss.met && !nearMaxMissed)) return 1;
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  },
);
