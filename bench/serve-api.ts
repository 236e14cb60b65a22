/**
 * The query API under load with the stream running: a daemon publishing a steady Airflow workload
 * (bench/workload.ts, paced), `serve` following it, and an open-loop client issuing SERVE_BENCH_RATE
 * requests/s (default 500) for SERVE_BENCH_SECONDS (default 30) over a mix of the read endpoints.
 * Prints per-endpoint p50/p95/p99/max and errors. Run: `npm run bench:serve` (builds first);
 * services from the environment or `bash scripts/services.sh env`.
 *
 * Open loop: request i is due at t0 + i/rate whatever the answers before it did, and its latency is
 * counted from when it was due, not from when it was sent, so a stalled server shows in the
 * percentiles instead of slowing the client down (coordinated omission).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { Kafka, logLevel } from "kafkajs";
import { Workload, sqlFor, type Run } from "./workload.ts";
import { servicesEnv } from "../scripts/services-env.ts";
import { freePort } from "../scripts/free-port.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const RATE = Number(process.env.SERVE_BENCH_RATE ?? 500);
const SECONDS = Number(process.env.SERVE_BENCH_SECONDS ?? 30);
/** Events/s the daemon publishes during the measurement (Airflow transitions, paced). */
const STREAM_RATE = Number(process.env.SERVE_BENCH_STREAM_RATE ?? 300);
const SEED_RUNS = Number(process.env.SERVE_BENCH_RUNS ?? 400);

const log = (msg: string) => process.stderr.write(`[serve-bench] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function services(): Record<string, string> {
  const e = process.env.PGHOST && process.env.KAFKA_BROKERS ? (process.env as Record<string, string>) : servicesEnv(ROOT);
  return { PGHOST: e.PGHOST!, PGPORT: e.PGPORT ?? "5432", PGUSER: e.PGUSER ?? "postgres", PGPASSWORD: e.PGPASSWORD ?? "", KAFKA_BROKERS: e.KAFKA_BROKERS! };
}

function launch(args: string[], env: Record<string, string>): { proc: ChildProcess; lines: string[] } {
  const proc = spawn(path.join(ROOT, "bin/airflow-eventstream"), args, { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  const keep = (b: Buffer) => lines.push(...b.toString("utf8").split("\n").filter((l) => l !== ""));
  proc.stdout!.on("data", keep);
  proc.stderr!.on("data", keep);
  return { proc, lines };
}

async function until(what: string, ms: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** Commits the runs' transactions on `pool`, paced at `rate` events/s; stops early when `stop()` says so. */
async function stream(pool: pg.Client[], runs: Run[], w: Workload, sql: ReturnType<typeof sqlFor>, rate: number, stop: () => boolean): Promise<number> {
  let next = 0;
  let reserved = 0;
  const t0 = performance.now();
  await Promise.all(
    pool.map(async (c) => {
      for (let run = runs[next++]; run !== undefined && !stop(); run = runs[next++])
        for (const tx of w.script(run, sql)) {
          if (stop()) return;
          const wait = t0 + (reserved / rate) * 1000 - performance.now();
          reserved += tx.events;
          if (wait > 1) await sleep(wait);
          await c.query({ name: tx.name, text: tx.text, values: tx.values });
        }
    }),
  );
  return reserved;
}

type Endpoint = "run" | "ready" | "stuck" | "dags" | "runs" | "history";
const MIX: [Endpoint, number][] = [
  ["run", 30],
  ["ready", 20],
  ["history", 15],
  ["runs", 15],
  ["stuck", 10],
  ["dags", 10],
];

function pathFor(kind: Endpoint, run: Run): string {
  const dag = encodeURIComponent(run.dag.dagId);
  const id = encodeURIComponent(run.runId);
  const task = encodeURIComponent(run.tis[0]!.task.taskId);
  switch (kind) {
    case "run":
      return `/dags/${dag}/runs/${id}`;
    case "ready":
      return `/dags/${dag}/runs/${id}/ready?task=${task}`;
    case "history":
      return `/dags/${dag}/runs/${id}/history`;
    case "runs":
      return `/dags/${dag}/runs?limit=20`;
    case "stuck":
      return "/stuck";
    case "dags":
      return "/dags";
  }
}

interface Sample {
  ms: number[];
  errors: number;
  statuses: Record<string, number>;
}

/** The open-loop client: RATE requests/s for SECONDS, each endpoint drawn from MIX. */
async function load(base: string, runs: Run[]): Promise<Map<Endpoint, Sample>> {
  const out = new Map<Endpoint, Sample>(MIX.map(([k]) => [k, { ms: [], errors: 0, statuses: {} }]));
  const total = MIX.reduce((a, [, w]) => a + w, 0);
  const n = Math.round(RATE * SECONDS);
  const t0 = performance.now() + 50;
  const pending: Promise<void>[] = [];
  let rnd = 0x9e3779b9;
  const next = () => ((rnd = (Math.imul(rnd ^ (rnd >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
  for (let i = 0; i < n; i++) {
    let pick = next() * total;
    const kind = MIX.find(([, w]) => (pick -= w) < 0)?.[0] ?? "run";
    const url = base + pathFor(kind, runs[Math.floor(next() * runs.length)]!);
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const s = out.get(kind)!;
    pending.push(
      fetch(url, { signal: AbortSignal.timeout(10_000) })
        .then(async (r) => {
          await r.arrayBuffer();
          s.statuses[r.status] = (s.statuses[r.status] ?? 0) + 1;
          if (r.status >= 500 || (r.status !== 200 && r.status !== 404)) s.errors++;
          s.ms.push(performance.now() - due);
        })
        .catch(() => {
          s.errors++;
          s.statuses.network = (s.statuses.network ?? 0) + 1;
        }),
    );
  }
  await Promise.all(pending);
  return out;
}

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function report(results: Map<Endpoint, Sample>, elapsedS: number, streamed: number, meta: string[]): void {
  const rows = [["endpoint", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "statuses"]];
  const all: number[] = [];
  let errors = 0;
  for (const [kind, s] of results) {
    const ms = [...s.ms].sort((a, b) => a - b);
    all.push(...ms);
    errors += s.errors;
    rows.push([kind, String(ms.length + s.errors), String(s.errors), ...[50, 95, 99].map((p) => pct(ms, p).toFixed(1)), (ms.at(-1) ?? NaN).toFixed(1), JSON.stringify(s.statuses)]);
  }
  all.sort((a, b) => a - b);
  rows.push(["all", String(all.length + errors), String(errors), ...[50, 95, 99].map((p) => pct(all, p).toFixed(1)), (all.at(-1) ?? NaN).toFixed(1), ""]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i === 0 || i === 7 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "));
  process.stdout.write(
    [
      "",
      ...meta,
      `requests: ${all.length + errors} in ${elapsedS.toFixed(1)} s (${((all.length + errors) / elapsedS).toFixed(0)}/s offered at ${RATE}/s, open loop); ${streamed} events streamed meanwhile`,
      ...lines,
      "",
    ].join("\n"),
  );
}

async function main(): Promise<number> {
  const svc = services();
  const name = `serve_bench_${randomBytes(4).toString("hex")}`;
  const versions = JSON.parse(readFileSync(path.join(ROOT, "test/fixtures/airflow/versions.json"), "utf8")) as Record<string, string>;
  const schema = readFileSync(path.join(ROOT, `test/fixtures/airflow/airflow-${versions["3"]}.sql`), "utf8");
  const pgOpts = { host: svc.PGHOST, port: Number(svc.PGPORT), user: svc.PGUSER, password: svc.PGPASSWORD };
  const admin = new pg.Client({ ...pgOpts, database: "postgres" });
  await admin.connect();
  const pool: pg.Client[] = [];
  const procs: ChildProcess[] = [];
  const kafka = new Kafka({ clientId: "serve-bench", brokers: svc.KAFKA_BROKERS!.split(","), logLevel: logLevel.NOTHING });
  const env = {
    ...svc,
    PGDATABASE: name,
    EVENTSTREAM_SLOT: name,
    EVENTSTREAM_PUBLICATION: name,
    EVENTSTREAM_TOPIC: `${name}.events`,
    EVENTSTREAM_CHECKPOINT_TOPIC: `${name}.checkpoints`,
    EVENTSTREAM_STATE_TOPIC: `${name}.state`,
    EVENTSTREAM_SERVE_INSIGHTS_TOPIC: `${name}.insights`,
    EVENTSTREAM_SERVE_INSIGHTS_GROUP: `${name}.insights`,
    EVENTSTREAM_HTTP_PORT: "0",
    LOG_LEVEL: "warn",
  };
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    for (let i = 0; i < 4; i++) {
      const c = new pg.Client({ ...pgOpts, database: name });
      c.on("error", () => undefined);
      await c.connect();
      pool.push(c);
    }
    await pool[0]!.query(schema);
    const daemon = launch(["run"], env);
    procs.push(daemon.proc);
    await until("the daemon's slot", 60_000, async () => (await admin.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active", [name])).rowCount === 1);
    const w = new Workload(40, 42, 0.05, 0);
    const sql = sqlFor("3");
    // Runs seeded and half of them played through before serve starts: it has active and complete runs to answer about.
    const runs = w.plan(Math.max(SEED_RUNS * 60, STREAM_RATE * SECONDS * 2));
    for (const run of runs) run.dagRunId = ((await pool[0]!.query({ name: "seed", text: sql.seed(run).text, values: sql.seed(run).values })).rows[0] as { id: number }).id;
    const warm = runs.slice(0, Math.floor(runs.length / 4));
    const live = runs.slice(warm.length);
    log(`${name}: ${runs.length} runs of ${w.dags.length} DAGs seeded; playing ${warm.length} through`);
    await stream(pool, warm, w, sql, 5_000, () => false);
    const port = await freePort();
    const serve = launch(["serve"], { ...env, EVENTSTREAM_SERVE_PORT: String(port), EVENTSTREAM_SERVE_HOST: "127.0.0.1" });
    procs.push(serve.proc);
    const base = `http://127.0.0.1:${port}`;
    await until("serve's /readyz", 120_000, async () => (await fetch(`${base}/readyz`).catch(() => null))?.status === 200);
    log(`serve following; ${RATE} requests/s for ${SECONDS} s with the stream at ${STREAM_RATE} events/s`);
    let done = false;
    const streaming = stream(pool, live, w, sql, STREAM_RATE, () => done);
    const started = performance.now();
    const results = await load(base, runs);
    const elapsed = (performance.now() - started) / 1000;
    done = true;
    const streamed = await streaming;
    const cpus = os.cpus().length;
    report(results, elapsed, streamed, [
      `serve API benchmark -- ${new Date().toISOString()}, ${cpus} CPUs, load average ${os.loadavg()[0]!.toFixed(2)}, Node ${process.version}`,
      `command: SERVE_BENCH_RATE=${RATE} SERVE_BENCH_SECONDS=${SECONDS} SERVE_BENCH_STREAM_RATE=${STREAM_RATE} npm run bench:serve`,
      `view: ${runs.length} runs known (${warm.length} played through before serve started), 40 DAGs of 5..50 task instances`,
    ]);
    const ok = [...results.values()].every((s) => s.errors === 0);
    return ok ? 0 : 1;
  } finally {
    for (const p of procs.reverse()) {
      p.kill("SIGTERM");
      await new Promise((r) => (p.exitCode !== null ? r(null) : p.once("exit", r)));
    }
    for (const c of pool) await c.end().catch(() => undefined);
    await admin.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [name]).catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    const ka = kafka.admin();
    await ka.connect();
    const topics = (await ka.listTopics()).filter((t) => t.startsWith(`${name}.`));
    await ka.deleteTopics({ topics }).catch(() => undefined);
    await ka.deleteGroups([`${name}.insights`]).catch(() => undefined);
    await ka.disconnect();
  }
}

process.exitCode = await main();
