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
import http from "node:http";
import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { Kafka, logLevel } from "kafkajs";
import { Workload, airflowSchema, sqlFor, type Run } from "./workload.ts";
import { servicesEnv } from "../scripts/services-env.ts";
import { freePort } from "../scripts/free-port.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const RATE = Number(process.env.SERVE_BENCH_RATE ?? 500);
const SECONDS = Number(process.env.SERVE_BENCH_SECONDS ?? 30);
/** Events/s the daemon publishes during the measurement (Airflow transitions, paced). */
const STREAM_RATE = Number(process.env.SERVE_BENCH_STREAM_RATE ?? 300);

const log = (msg: string) => process.stderr.write(`[serve-bench] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function services(): Record<string, string> {
  const e = process.env.PGHOST && process.env.KAFKA_BROKERS ? (process.env as Record<string, string>) : servicesEnv(ROOT);
  return {
    PGHOST: e.PGHOST!,
    PGPORT: e.PGPORT ?? "5432",
    PGUSER: e.PGUSER ?? "postgres",
    PGPASSWORD: e.PGPASSWORD ?? "",
    KAFKA_BROKERS: e.KAFKA_BROKERS!,
  };
}

function launch(args: string[], env: Record<string, string>): { proc: ChildProcess; lines: string[] } {
  const proc = spawn(path.join(ROOT, "bin/airflow-eventstream"), args, {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const keep = (b: Buffer) =>
    lines.push(
      ...b
        .toString("utf8")
        .split("\n")
        .filter((l) => l !== ""),
    );
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
async function stream(
  pool: pg.Client[],
  runs: Run[],
  w: Workload,
  sql: ReturnType<typeof sqlFor>,
  rate: number,
  stop: () => boolean,
): Promise<number> {
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
/** A GET whose body is read and dropped: node:http with a keep-alive pool costs the client less CPU than fetch. */
function get(agent: http.Agent, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, timeout: 10_000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timed out after 10 s"), { name: "timeout" })));
    req.on("error", reject);
  });
}

interface LoadResult {
  samples: Map<Endpoint, Sample>;
  /** How late the client sent requests: high means the client, not serve, fell behind (a busy machine). */
  sendLagMs: { p50: number; p99: number; max: number };
}

async function load(base: string, runs: Run[]): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const lag: number[] = [];
  const out = new Map<Endpoint, Sample>(MIX.map(([k]) => [k, { ms: [], errors: 0, statuses: {} }]));
  const total = MIX.reduce((a, [, w]) => a + w, 0);
  const n = Math.round(RATE * SECONDS);
  const t0 = performance.now() + 50;
  const pending: Promise<void>[] = [];
  let rnd = 0x9e3779b9;
  const next = () => (rnd = (Math.imul(rnd ^ (rnd >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32;
  for (let i = 0; i < n; i++) {
    let pick = next() * total;
    const kind = MIX.find(([, w]) => (pick -= w) < 0)?.[0] ?? "run";
    const url = base + pathFor(kind, runs[Math.floor(next() * runs.length)]!);
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const s = out.get(kind)!;
    lag.push(performance.now() - due);
    pending.push(
      get(agent, url).then(
        (status) => {
          s.statuses[status] = (s.statuses[status] ?? 0) + 1;
          if (status !== 200 && status !== 404) s.errors++;
          else s.ms.push(performance.now() - due);
        },
        (e: Error) => {
          s.errors++;
          s.statuses[e.name] = (s.statuses[e.name] ?? 0) + 1;
        },
      ),
    );
  }
  await Promise.all(pending);
  agent.destroy();
  lag.sort((a, b) => a - b);
  return { samples: out, sendLagMs: { p50: pct(lag, 50), p99: pct(lag, 99), max: lag.at(-1) ?? NaN } };
}

/** User + system CPU seconds of a process (Linux /proc; clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function report(result: LoadResult, elapsedS: number, streamed: number, meta: string[]): void {
  const results = result.samples;
  const rows = [["endpoint", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "statuses"]];
  const all: number[] = [];
  let errors = 0;
  for (const [kind, s] of results) {
    const ms = [...s.ms].sort((a, b) => a - b);
    all.push(...ms);
    errors += s.errors;
    rows.push([
      kind,
      String(ms.length + s.errors),
      String(s.errors),
      ...[50, 95, 99].map((p) => pct(ms, p).toFixed(1)),
      (ms.at(-1) ?? NaN).toFixed(1),
      JSON.stringify(s.statuses),
    ]);
  }
  all.sort((a, b) => a - b);
  rows.push([
    "all",
    String(all.length + errors),
    String(errors),
    ...[50, 95, 99].map((p) => pct(all, p).toFixed(1)),
    (all.at(-1) ?? NaN).toFixed(1),
    "",
  ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i === 0 || i === 7 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "));
  process.stdout.write(
    [
      "",
      ...meta,
      `requests: ${all.length + errors} in ${elapsedS.toFixed(1)} s (${((all.length + errors) / elapsedS).toFixed(0)}/s offered at ${RATE}/s, open loop); ${streamed} events streamed meanwhile`,
      ...lines,
      `client send lag (due -> sent): p50 ${result.sendLagMs.p50.toFixed(1)} ms, p99 ${result.sendLagMs.p99.toFixed(1)} ms, max ${result.sendLagMs.max.toFixed(1)} ms`,
      "",
    ].join("\n"),
  );
}

async function main(): Promise<number> {
  const svc = services();
  const name = `serve_bench_${randomBytes(4).toString("hex")}`;
  const schema = airflowSchema(ROOT, "3").sql;
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
    // Its own session: the schema dump empties search_path for the session that loads it.
    const loader = new pg.Client({ ...pgOpts, database: name });
    await loader.connect();
    await loader.query(schema);
    await loader.end();
    for (let i = 0; i < 4; i++) {
      const c = new pg.Client({ ...pgOpts, database: name });
      c.on("error", () => undefined);
      await c.connect();
      pool.push(c);
    }
    const daemon = launch(["run"], env);
    procs.push(daemon.proc);
    await until(
      "the daemon's slot",
      60_000,
      async () => (await admin.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active", [name])).rowCount === 1,
    );
    const w = new Workload(40, 42, 0.05, 0);
    const sql = sqlFor("3");
    // Runs seeded and half of them played through before serve starts: it has active and complete runs to answer about.
    const runs = w.plan(Math.max(20_000, STREAM_RATE * SECONDS * 2));
    for (const run of runs)
      run.dagRunId = (
        (await pool[0]!.query({ name: "seed", text: sql.seed(run).text, values: sql.seed(run).values })).rows[0] as { id: number }
      ).id;
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
    const loadBefore = os.loadavg()[0]!;
    const cpu0 = cpuSeconds(serve.proc.pid!);
    let done = false;
    const streaming = stream(pool, live, w, sql, STREAM_RATE, () => done);
    const started = performance.now();
    const results = await load(base, runs);
    const elapsed = (performance.now() - started) / 1000;
    const cpuUsed = cpuSeconds(serve.proc.pid!) - cpu0;
    const serveCpu = (cpuUsed / elapsed) * 100;
    // CPU per answer holds however busy the machine is; latency does not (a starved serve queues).
    const served = [...results.samples.values()].reduce((a, s) => a + s.ms.length, 0);
    done = true;
    const streamed = await streaming;
    const cpus = os.cpus().length;
    report(results, elapsed, streamed, [
      `serve API benchmark -- ${new Date().toISOString()}, ${cpus} CPUs, load average ${loadBefore.toFixed(2)} before / ${os.loadavg()[0]!.toFixed(2)} after (other work on the machine competes), Node ${process.version}`,
      `command: SERVE_BENCH_RATE=${RATE} SERVE_BENCH_SECONDS=${SECONDS} SERVE_BENCH_STREAM_RATE=${STREAM_RATE} npm run bench:serve`,
      `serve: ${serveCpu.toFixed(0)}% of one CPU during the load, ${((cpuUsed * 1000) / Math.max(1, served)).toFixed(2)} ms of CPU per answer (following the stream included): one free CPU would answer ~${Math.round(served / Math.max(cpuUsed, 0.001))}/s`,
      `view: ${runs.length} runs known (${warm.length} played through before serve started), 40 DAGs of 5..50 task instances`,
    ]);
    const ok = [...results.samples.values()].every((s) => s.errors === 0);
    return ok ? 0 : 1;
  } finally {
    for (const p of procs.reverse()) {
      p.kill("SIGTERM");
      await new Promise((r) => (p.exitCode !== null ? r(null) : p.once("exit", r)));
    }
    for (const c of pool) await c.end().catch(() => undefined);
    await admin
      .query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [name])
      .catch(() => undefined);
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
