/**
 * What REPLICA IDENTITY FULL on task_instance and dag_run costs in WAL. A program, not a test:
 * `npm run bench:wal-cost`. Needs PostgreSQL only (wal_level=logical), no Kafka, no daemon.
 *
 * For each Airflow schema (3.x, then 2.x) and each identity (DEFAULT, then FULL) it creates a fresh
 * database with the real schema (test/fixtures/airflow), a publication and a pgoutput slot (as the
 * daemon would have), seeds the same DAG runs (bench/workload.ts, same seed) and drives their whole
 * lifecycle on one connection: scheduler waves, worker transitions, retries (3.x: a new id per try),
 * 3.x heartbeats, the scheduler's dag_run decisions. After every transaction it reads
 * pg_current_wal_insert_lsn(), so each transaction's WAL (its records, any full-page images, its
 * commit record) is attributed to its kind of write. Insert position, not pg_current_wal_lsn():
 * the session commits asynchronously (synchronous_commit=off changes when WAL is flushed, not what
 * is written), and the write position would lag behind.
 *
 * Fair comparison: a CHECKPOINT before each measured lifecycle, so both identities start with the
 * same pages needing a full-page image; autovacuum off on the two tables, so no vacuum WAL lands in
 * the middle. WAL is cluster-wide: run it on an otherwise idle server (the report shows how much WAL
 * the cluster writes in 2 s while this program idles, before each measured lifecycle).
 *
 *   npm run bench:wal-cost
 *   npm run bench:wal-cost -- --transitions 20000 --heartbeats 20 --major 3
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { Workload, sqlFor, type Run, type Tx } from "./workload.ts";
import { servicesEnv } from "../scripts/services-env.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const USAGE = `npm run bench:wal-cost -- [options]      (or: node bench/wal-cost.ts [options])

  --major 2|3|both        Airflow schema(s)                                   [both]
  --transitions N         task-instance/dag-run transitions to drive          [10000]
  --heartbeats N          3.x heartbeats (last_heartbeat_at UPDATEs) per try  [10]  (2.x: none, they go to the job table)
  --decisions N           dag_run last_scheduling_decision UPDATEs per wave   [5]
  --dags N                distinct DAGs                                       [200]
  --fail-rate F           share of tasks failing once and retried             [0.02]
  --seed N                workload random seed                                [1]

PostgreSQL: PGHOST PGPORT PGUSER PGPASSWORD (a superuser, or a role with CREATEDB, REPLICATION and
pg_checkpoint), else \`bash scripts/services.sh env\`.`;

interface Options {
  majors: ("2" | "3")[];
  transitions: number;
  heartbeats: number;
  decisions: number;
  dags: number;
  failRate: number;
  seed: number;
}

function parseOptions(argv: string[]): Options {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--help" || a === "-h") {
      console.log(USAGE);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument "${a}"\n\n${USAGE}`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new Error(`--${m[1]} needs a value`);
    flags.set(m[1]!, value);
  }
  for (const k of flags.keys())
    if (!["major", "transitions", "heartbeats", "decisions", "dags", "fail-rate", "seed"].includes(k))
      throw new Error(`unknown option --${k}\n\n${USAGE}`);
  const num = (flag: string, dflt: number): number => {
    const raw = flags.get(flag);
    if (raw === undefined) return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${flag}: expected a number, got "${raw}"`);
    return n;
  };
  const major = flags.get("major") ?? "both";
  if (!["2", "3", "both"].includes(major)) throw new Error(`--major: 2, 3 or both, got "${major}"`);
  return {
    majors: major === "both" ? ["3", "2"] : [major as "2" | "3"],
    transitions: Math.round(num("transitions", 10_000)),
    heartbeats: Math.round(num("heartbeats", 10)),
    decisions: Math.round(num("decisions", 5)),
    dags: Math.max(1, Math.round(num("dags", 200))),
    failRate: num("fail-rate", 0.02),
    seed: Math.round(num("seed", 1)),
  };
}

/** PGHOST and friends from the environment, else from the project's own services. */
function pgSettings(): pg.ClientConfig {
  let e: Record<string, string | undefined> = process.env;
  if (!e.PGHOST) {
    try {
      e = servicesEnv(ROOT);
    } catch (err) {
      throw new Error(
        `PGHOST is not set and \`bash scripts/services.sh env\` failed (${(err as Error).message.split("\n")[0]}). Start the services: npm run services:up`,
      );
    }
  }
  return { host: e.PGHOST, port: Number(e.PGPORT ?? 5432), user: e.PGUSER ?? "postgres", password: e.PGPASSWORD ?? "" };
}

function log(msg: string): void {
  process.stderr.write(`[wal-cost ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);
}

/** "16/B374D848" -> bytes. */
function lsn(text: string): bigint {
  const [hi, lo] = text.split("/");
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

// ------------------------------------------------------------------------------ measurement

/** What the report groups transactions by (bench/workload.ts statement names -> kind of write). */
const KINDS: [kind: string, names: string[]][] = [
  ["seed: INSERT run + task instances", ["seed3", "seed2"]],
  ["scheduler: scheduled, queued (waves)", ["sched_first3", "sched3", "queue3", "sched_first2", "sched2", "queue2"]],
  ["worker: running, success", ["run3", "ok3", "run2", "ok2"]],
  ["retry: up_for_retry (3.x: + new id)", ["fail3", "fail2"]],
  ["heartbeat: last_heartbeat_at only", ["hb3", "hb2"]],
  ["dag_run: scheduling decision only", ["run_decision"]],
  ["dag_run: success", ["run_success"]],
];
/** How long the program idles before each lifecycle to see what the rest of the cluster writes. */
const IDLE_PROBE_MS = 2000;

const kindOf = new Map(KINDS.flatMap(([kind, names]) => names.map((n) => [n, kind] as const)));

interface Tally {
  txs: number;
  rows: number;
  wal: bigint;
}

interface Measurement {
  identity: "DEFAULT" | "FULL";
  byKind: Map<string, Tally>;
  /** WAL the cluster wrote in IDLE_PROBE_MS with this program idle, just before the lifecycle: others' writes, background. */
  idleWal: bigint;
  stat: { records: bigint; fpi: bigint; bytes: bigint } | null;
  /** pgoutput bytes the slot would send for the lifecycle (what the daemon reads and decodes). */
  streamBytes: bigint;
  streamMessages: number;
  checkpoint: boolean;
}

async function measure(
  cfg: pg.ClientConfig,
  admin: pg.Client,
  major: "2" | "3",
  identity: "DEFAULT" | "FULL",
  o: Options,
): Promise<Measurement> {
  const name = `walcost_${major}_${identity.toLowerCase()}_${randomBytes(3).toString("hex")}`;
  const versions = JSON.parse(readFileSync(path.join(ROOT, "test/fixtures/airflow/versions.json"), "utf8")) as {
    files: Record<string, string>;
  };
  const schema = readFileSync(path.join(ROOT, "test/fixtures/airflow", versions.files[major]!), "utf8");
  await admin.query(`CREATE DATABASE ${name}`);
  let slot = false;
  try {
    const setup = new pg.Client({ ...cfg, database: name });
    await setup.connect();
    try {
      await setup.query(schema);
      for (const t of ["task_instance", "dag_run"]) {
        // Qualified: the schema dump leaves this session with an empty search_path.
        await setup.query(`ALTER TABLE public.${t} SET (autovacuum_enabled = false)`);
        if (identity === "FULL") await setup.query(`ALTER TABLE public.${t} REPLICA IDENTITY FULL`);
      }
      await setup.query(`CREATE PUBLICATION ${name} FOR TABLE public.task_instance, public.dag_run`);
      await setup.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [name]);
      slot = true;
    } finally {
      await setup.end();
    }

    // The same seed gives both identities the same runs, tasks, waves, hosts and failures.
    const workload = new Workload(o.dags, o.seed, o.failRate, major === "3" ? o.heartbeats : 0, o.decisions);
    const runs = workload.plan(o.transitions);
    const sql = sqlFor(major);
    const c = new pg.Client({ ...cfg, database: name, application_name: "eventstream-wal-cost" });
    await c.connect();
    const byKind = new Map<string, Tally>();
    let idleWal = 0n;
    let checkpoint = true;
    let stat: Measurement["stat"] = null;
    let lifecycleFrom = 0n;
    let ended = false;
    try {
      await c.query("SET synchronous_commit = off");
      const here = async () => lsn((await c.query<{ l: string }>("SELECT pg_current_wal_insert_lsn()::text AS l")).rows[0]!.l);
      let before = await here();
      const exec = async (tx: Tx, onRows?: (r: pg.QueryResult) => void) => {
        const res = await c.query({ name: tx.name, text: tx.text, values: tx.values });
        const after = await here();
        const kind = kindOf.get(tx.name) ?? tx.name;
        const t = byKind.get(kind) ?? { txs: 0, rows: 0, wal: 0n };
        t.txs++;
        // The seed statement SELECTs the run's id: its rows are the run and its task instances.
        t.rows += tx.name.startsWith("seed") ? tx.events : (res.rowCount ?? 0);
        t.wal += after - before;
        byKind.set(kind, t);
        before = after;
        onRows?.(res);
      };
      for (const run of runs) await exec(sql.seed(run), (res) => setRunId(run, res));

      try {
        await admin.query("CHECKPOINT");
      } catch (e) {
        checkpoint = false;
        log(`CHECKPOINT refused (${(e as Error).message}): full-page images may differ between the identities`);
      }
      // WAL is cluster-wide: what others write lands in this program's figures. Show how much that is.
      const idle0 = await here();
      await new Promise((r) => setTimeout(r, IDLE_PROBE_MS));
      idleWal = (await here()) - idle0;
      const stat0 = await walStat(admin);
      before = await here();
      lifecycleFrom = before;
      // Runs one after another: each run's transactions in the order Airflow commits them.
      for (const run of runs) for (const tx of workload.script(run, sql)) await exec(tx);
      ended = true;
      await c.end();
      // A backend's WAL statistics are flushed when it exits; give the stats system a moment.
      await new Promise((r) => setTimeout(r, 500));
      const stat1 = await walStat(admin);
      if (stat0 && stat1) stat = { records: stat1.records - stat0.records, fpi: stat1.fpi - stat0.fpi, bytes: stat1.bytes - stat0.bytes };
    } finally {
      if (!ended) await c.end().catch(() => undefined);
    }

    // What the daemon would receive for the lifecycle: the slot's pgoutput messages, peeked (not consumed).
    const peek = new pg.Client({ ...cfg, database: name });
    await peek.connect();
    let streamBytes = 0n;
    let streamMessages = 0;
    try {
      const { rows } = await peek.query<{ n: string; bytes: string | null }>(
        `SELECT count(*)::text AS n, sum(octet_length(data))::text AS bytes
           FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', $3)
          WHERE lsn >= $2::pg_lsn`,
        [name, `${(lifecycleFrom >> 32n).toString(16).toUpperCase()}/${(lifecycleFrom & 0xffffffffn).toString(16).toUpperCase()}`, name],
      );
      streamMessages = Number(rows[0]!.n);
      streamBytes = BigInt(rows[0]!.bytes ?? "0");
    } finally {
      await peek.end();
    }
    return { identity, byKind, idleWal, stat, streamBytes, streamMessages, checkpoint };
  } finally {
    if (slot) await admin.query("SELECT pg_drop_replication_slot($1)", [name]).catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
}

function setRunId(run: Run, res: pg.QueryResult): void {
  run.dagRunId = (res.rows[0] as { id: number }).id;
}

async function walStat(admin: pg.Client): Promise<{ records: bigint; fpi: bigint; bytes: bigint } | null> {
  try {
    const { rows } = await admin.query<{ r: string; f: string; b: string }>(
      "SELECT wal_records::text AS r, wal_fpi::text AS f, wal_bytes::text AS b FROM pg_stat_wal",
    );
    return { records: BigInt(rows[0]!.r), fpi: BigInt(rows[0]!.f), bytes: BigInt(rows[0]!.b) };
  } catch {
    return null; // before PostgreSQL 14
  }
}

// ----------------------------------------------------------------------------------- report

const n = (v: number | bigint) => Number(v).toLocaleString("en-US", { maximumFractionDigits: 0 });
const mb = (v: bigint) => `${(Number(v) / 1e6).toFixed(2)} MB`;

function table(header: string[], rows: string[][]): string {
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join("  ");
  return [line(header), width.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function report(major: "2" | "3", version: string, o: Options, d: Measurement, f: Measurement): string {
  const out: string[] = [];
  const hb = major === "3" ? `${o.heartbeats} heartbeats per try` : "no task_instance heartbeats (2.x writes them to job)";
  out.push(
    `Airflow ${version} schema: ${o.transitions.toLocaleString("en-US")} transitions planned, ${hb}, ${o.decisions} dag_run decisions per wave, fail rate ${o.failRate}, seed ${o.seed}`,
  );
  const ratio = (a: bigint, b: bigint) => (Number(a) > 0 ? (Number(b) / Number(a)).toFixed(2) : "-");
  const rows: string[][] = [];
  const total = { d: { txs: 0, rows: 0, wal: 0n }, f: { txs: 0, rows: 0, wal: 0n } };
  for (const [kind] of KINDS) {
    const a = d.byKind.get(kind);
    const b = f.byKind.get(kind);
    if (!a || !b) continue;
    if (a.rows !== b.rows) throw new Error(`${kind}: ${a.rows} rows under DEFAULT but ${b.rows} under FULL: the workloads differ`);
    if (!kind.startsWith("seed")) {
      total.d.txs += a.txs;
      total.d.rows += a.rows;
      total.d.wal += a.wal;
      total.f.wal += b.wal;
    }
    rows.push(row(kind, a.txs, a.rows, a.wal, b.wal));
  }
  rows.push(row("lifecycle total (after the seed)", total.d.txs, total.d.rows, total.d.wal, total.f.wal));
  out.push(
    table(
      ["workload", "transactions", "rows written", "WAL DEFAULT", "WAL FULL", "B/row DEFAULT", "B/row FULL", "+B/row", "FULL/DEFAULT"],
      rows,
    ),
  );
  out.push("");
  out.push(
    `pgoutput stream to the daemon (lifecycle): DEFAULT ${mb(d.streamBytes)} in ${n(d.streamMessages)} messages, FULL ${mb(f.streamBytes)} in ${n(f.streamMessages)} (x${ratio(d.streamBytes, f.streamBytes)})`,
  );
  if (d.stat && f.stat) {
    out.push(
      `pg_stat_wal over the lifecycle (statistics, flushed asynchronously: approximate): DEFAULT ${n(d.stat.records)} records, ${n(d.stat.fpi)} full-page images, ${mb(d.stat.bytes)}; FULL ${n(f.stat.records)} records, ${n(f.stat.fpi)} full-page images, ${mb(f.stat.bytes)}`,
    );
  }
  out.push(
    `background: the cluster wrote ${n(d.idleWal)} B (before DEFAULT) and ${n(f.idleWal)} B (before FULL) of WAL in ${IDLE_PROBE_MS / 1000} s with this program idle${d.checkpoint && f.checkpoint ? "" : "; CHECKPOINT was refused, so full-page images may differ"}`,
  );
  return out.join("\n");

  function row(kind: string, txs: number, rowsWritten: number, a: bigint, b: bigint): string[] {
    const per = (w: bigint) => (rowsWritten > 0 ? n(Number(w) / rowsWritten) : "-");
    return [kind, n(txs), n(rowsWritten), n(a), n(b), per(a), per(b), per(b - a), ratio(a, b)];
  }
}

// ------------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const cfg = pgSettings();
  const admin = new pg.Client({ ...cfg, database: "postgres", application_name: "eventstream-wal-cost" });
  await admin.connect();
  const interrupted = () => {
    log("interrupted: the walcost_* database being measured may remain; drop it with DROP DATABASE ... WITH (FORCE)");
    process.exit(130);
  };
  process.on("SIGINT", interrupted);
  try {
    const { rows } = await admin.query<{ v: string; level: string }>(
      "SELECT current_setting('server_version') AS v, current_setting('wal_level') AS level",
    );
    if (rows[0]!.level !== "logical")
      throw new Error(`wal_level is ${rows[0]!.level}: the comparison only means something at wal_level=logical`);
    log(`PostgreSQL ${rows[0]!.v} at ${cfg.host}:${cfg.port}`);
    const versions = JSON.parse(readFileSync(path.join(ROOT, "test/fixtures/airflow/versions.json"), "utf8")) as Record<string, string>;
    const reports: string[] = [];
    for (const major of o.majors) {
      const m: Measurement[] = [];
      for (const identity of ["DEFAULT", "FULL"] as const) {
        const t0 = Date.now();
        log(`Airflow ${versions[major]}, REPLICA IDENTITY ${identity}: seeding and driving the workload`);
        m.push(await measure(cfg, admin, major, identity, o));
        log(`  done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      }
      reports.push(report(major, versions[major]!, o, m[0]!, m[1]!));
    }
    console.log(
      `\nWAL written per kind of write, REPLICA IDENTITY DEFAULT vs FULL on task_instance and dag_run (PostgreSQL ${rows[0]!.v})`,
    );
    console.log(`command: npm run bench:wal-cost${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}\n`);
    console.log(reports.join("\n\n"));
    console.log("\nWAL: pg_current_wal_insert_lsn() after each transaction minus before it (records, full-page images, commit record).");
    console.log("rows written: rows the statement reports (a scheduler wave is one statement of many rows). B/row: WAL / rows written;");
    console.log("+B/row: what FULL adds per row written, about the size of the old row it logs.");
    return 0;
  } finally {
    await admin.end();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`wal-cost: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
