/**
 * What a snapshot costs Airflow, and how fast it reads. A program, not a test:
 * `npm run bench:snapshot` (builds dist/, then runs this with Node directly).
 *
 * Creates a database with the real Airflow 2.x schema (test/fixtures/airflow) and N task
 * instances, starts the daemon (bin/airflow-eventstream, as operators run it) on it, and runs an
 * Airflow-side probe on its own connections: the scheduler's kind of statements, a SELECT of a
 * run's task instances in some states and a single-row state UPDATE by primary key, back to back.
 * The probe's latencies are taken for PROBE_S seconds without a snapshot, then during a snapshot
 * at each rate limit asked for; the snapshot's rows/s is rows over the time from the request to
 * the daemon's "snapshot finished". Every figure is printed as one table.
 *
 *   npm run bench:snapshot
 *   npm run bench:snapshot -- --rows 100000 --rates 5000,50000,10000000
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { servicesEnv } from "../scripts/services-env.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PROBE_S = 8;

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const ROWS = Number(option("rows", "50000"));
const RATES = option("rates", "5000,10000000").split(",").map(Number);
const CHUNK = option("chunk", "1024");
const env = { ...servicesEnv(ROOT), ...process.env } as Record<string, string>;
const pgBase = { host: env.PGHOST, port: Number(env.PGPORT), user: env.PGUSER, password: env.PGPASSWORD };

async function withPg<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ ...pgBase, database });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function createWorld(db: string): Promise<void> {
  await withPg("postgres", (c) => c.query(`CREATE DATABASE ${db}`));
  const versions = JSON.parse(readFileSync(path.join(ROOT, "test/fixtures/airflow/versions.json"), "utf8")) as {
    files: Record<string, string>;
  };
  await withPg(db, async (c) => {
    await c.query(readFileSync(path.join(ROOT, "test/fixtures/airflow", versions.files["2"]!), "utf8"));
    await c.query("SET search_path = public");
    const runs = Math.ceil(ROWS / 50);
    await c.query(
      `INSERT INTO dag_run (dag_id, run_id, execution_date, state, run_type, clear_number)
       SELECT 'dag_' || (g % 20), 'run_' || g, timestamptz '2026-01-01' + g * interval '1 minute', 'running', 'scheduled', 0
         FROM generate_series(1, $1) g`,
      [runs],
    );
    await c.query(
      `INSERT INTO task_instance (dag_id, task_id, run_id, map_index, state, try_number, max_tries, pool, pool_slots, queue, operator, priority_weight)
       SELECT r.dag_id, 'task_' || t, r.run_id, -1, 'success', 1, 0, 'default_pool', 1, 'default', 'PythonOperator', 1
         FROM dag_run r, generate_series(1, 50) t`,
    );
    await c.query("ANALYZE");
  });
}

/** The scheduler-like statements, timed, on `n` connections until `until` resolves. */
async function probe(db: string, n: number, until: Promise<unknown>): Promise<number[]> {
  const lat: number[] = [];
  let done = false;
  void until.then(() => (done = true));
  await Promise.all(
    Array.from({ length: n }, (_, w) =>
      withPg(db, async (c) => {
        for (let i = 0; !done; i++) {
          const run = `run_${1 + ((i * 7 + w * 13) % Math.ceil(ROWS / 50))}`;
          const dag = `dag_${(i * 7 + w * 13 + 1) % 20}`;
          let t = performance.now();
          await c.query(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = $1 AND run_id = $2 AND state IN ('scheduled', 'queued', 'running', 'success')",
            [dag, run],
          );
          lat.push(performance.now() - t);
          t = performance.now();
          await c.query("UPDATE task_instance SET state = $4 WHERE dag_id = $1 AND task_id = $2 AND run_id = $3 AND map_index = -1", [
            dag,
            `task_${1 + (i % 50)}`,
            run,
            i % 2 ? "success" : "running",
          ]);
          lat.push(performance.now() - t);
        }
      }),
    ),
  );
  return lat;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

function spawnDaemon(db: string, rate: number): { proc: ChildProcess; line(re: RegExp): Promise<string> } {
  const proc = spawn(path.join(ROOT, "bin/airflow-eventstream"), ["run"], {
    env: {
      ...env,
      PGDATABASE: db,
      EVENTSTREAM_SLOT: db,
      EVENTSTREAM_PUBLICATION: db,
      EVENTSTREAM_TOPIC: `${db}.events`,
      EVENTSTREAM_CHECKPOINT_TOPIC: `checkpoints.${db}`,
      EVENTSTREAM_SNAPSHOT_CHUNK_ROWS: CHUNK,
      EVENTSTREAM_SNAPSHOT_ROWS_PER_SECOND: String(rate),
      LOG_LEVEL: "info",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  proc.stdout!.on("data", (b: Buffer) => {
    for (const l of b.toString().split("\n")) {
      lines.push(l);
      for (const w of waiters.splice(0))
        if (w.re.test(l)) w.resolve(l);
        else waiters.push(w);
    }
  });
  return {
    proc,
    line: (re) => {
      const hit = lines.find((l) => re.test(l));
      return hit !== undefined ? Promise.resolve(hit) : new Promise((resolve) => waiters.push({ re, resolve }));
    },
  };
}

async function main(): Promise<void> {
  const db = `bench_snapshot_${randomBytes(3).toString("hex")}`;
  await createWorld(db);
  const rows: string[][] = [];
  try {
    const base = await probe(db, 2, new Promise((r) => setTimeout(r, PROBE_S * 1000)));
    rows.push(["no snapshot", "-", "-", String(base.length), pct(base, 50).toFixed(2), pct(base, 99).toFixed(2)]);
    for (const rate of RATES) {
      const d = spawnDaemon(db, rate);
      try {
        await d.line(/"streaming"/);
        const id = randomBytes(8).toString("hex");
        const spec = {
          id,
          tables: ["dag_run", "task_instance"],
          dags: [],
          runs_since: null,
          active_only: false,
          requested_at: new Date().toISOString(),
        };
        const started = performance.now();
        const finished = d.line(new RegExp(`"job":"${id}".*"snapshot finished"`));
        await withPg(db, (c) =>
          c.query("SELECT pg_logical_emit_message(true, 'airflow-eventstream.snapshot', $1)", [JSON.stringify(spec)]),
        );
        const during = await probe(db, 2, finished);
        const s = (performance.now() - started) / 1000;
        const snapRows = (JSON.parse(await finished) as { rows: number }).rows;
        rows.push([
          `during, limit ${rate}/s`,
          String(snapRows),
          (snapRows / s).toFixed(0),
          String(during.length),
          pct(during, 50).toFixed(2),
          pct(during, 99).toFixed(2),
        ]);
      } finally {
        d.proc.kill("SIGTERM");
        await new Promise((r) => d.proc.once("exit", r));
      }
    }
  } finally {
    await withPg("postgres", (c) => c.query(`DROP DATABASE ${db} WITH (FORCE)`)).catch(() => undefined);
    await withPg("postgres", (c) =>
      c.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [db]),
    ).catch(() => undefined);
  }
  console.log(`${ROWS} task instances (Airflow 2.x schema), chunks of ${CHUNK}; probe: 2 connections, SELECT + UPDATE back to back; ms`);
  console.log(["", "snapshot rows", "rows/s", "probe statements", "p50", "p99"].join(" | "));
  for (const r of rows) console.log(r.join(" | "));
}

await main();
