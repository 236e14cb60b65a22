import { randomUUID } from "node:crypto";
import { execFile } from "node:child_process";
import { connect } from "node:net";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import type pg from "pg";
import { Kafka, logLevel } from "kafkajs";
import { AirflowEvent } from "../../src/airflow/events.js";
import { pgClient, services, sleep, type AirflowMajor, type Consumed } from "./harness.js";
import { TI_INSERT_COLUMNS } from "./airflow-rows.js";
import { prng } from "../../bench/workload.ts";

/**
 * A load generator for the integration tests, and the ledger it keeps: every row change it
 * committed to PostgreSQL, per task instance / DAG run, in commit order, with the transaction id.
 * The checks at the bottom compare what an independent consumer read from Kafka with the ledger.
 *
 * Task instances are owned by one connection each (the one that inserted them), so every TI's
 * changes are committed one after the other, in a known order; a DAG's TIs are spread over all the
 * connections, so a DAG's events come from concurrent transactions. Only real transitions are
 * written (state or try number changes, no heartbeat churn): after a daemon restart the first
 * update per TI is always emitted, which is only indistinguishable from churn when there is churn.
 */

// ------------------------------------------------------------------------------------- ledger

export type EntryKind = "ti" | "run";

export interface Entry {
  kind: EntryKind;
  key: string;
  dagId: string;
  op: "insert" | "update";
  state: string | null;
  /** try_number for task instances, null for DAG runs. */
  tryNumber: number | null;
  /** The state the ledger had before this change (null for inserts). */
  previous: string | null;
  /** 32-bit xid of the committing transaction, as events carry it. */
  xid: number;
}

export function tiKey(dagId: string, taskId: string, runId: string, mapIndex: number): string {
  return `ti\u0000${dagId}\u0000${taskId}\u0000${runId}\u0000${mapIndex}`;
}

export function runKey(dagId: string, runId: string): string {
  return `run\u0000${dagId}\u0000${runId}`;
}

export class Ledger {
  readonly byKey = new Map<string, Entry[]>();
  readonly dags = new Set<string>();
  count = 0;
  /** Transactions committed. */
  transactions = 0;
  /** Transactions that changed rows of more than one DAG. */
  multiDagTransactions = 0;

  add(xid: number, changes: Omit<Entry, "previous" | "xid">[]): void {
    this.transactions++;
    if (new Set(changes.map((c) => c.dagId)).size > 1) this.multiDagTransactions++;
    for (const c of changes) {
      let list = this.byKey.get(c.key);
      if (!list) this.byKey.set(c.key, (list = []));
      const previous = c.op === "insert" ? null : (list[list.length - 1]?.state ?? null);
      list.push({ ...c, previous, xid });
      this.dags.add(c.dagId);
      this.count++;
    }
  }
}

// ------------------------------------------------------------------------------------- PRNG

// mulberry32, shared with the benchmark's workload. LOAD_SEED=<seed from a test's output> replays
// the same choices; the connections' interleaving (and so who draws which number) still varies.
export { prng };

export function loadSeed(): number {
  const fromEnv = Number(process.env.LOAD_SEED);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : (Date.now() % 2_147_483_647) + 1;
}

// ------------------------------------------------------------------------------------- generator

interface Step {
  state: string | null;
  tryNumber: number;
  /** Airflow 3.x gives a task instance a new id when it goes up for retry. */
  newId: boolean;
}

interface TiPlan {
  dagId: string;
  taskId: string;
  runId: string;
  mapIndex: number;
  key: string;
  steps: Step[];
  next: number;
  run: RunPlan;
}

interface RunPlan {
  dagId: string;
  runId: string;
  id: number;
  key: string;
  tis: TiPlan[];
  finished: boolean;
}

export interface LoadOptions {
  db: string;
  major: AirflowMajor;
  dags: string[];
  /** Concurrent connections (at least 4 for the ordering tests). */
  workers: number;
  /** Task instances per DAG run (inserted in the run's own transaction, as the scheduler does). */
  tasksPerRun: number;
  /** A connection creates a new run when it has fewer unfinished TIs than this. */
  activePerWorker: number;
  /** Task instances advanced per transaction: 1..maxRowsPerTx, picked at random. */
  maxRowsPerTx: number;
  /** Finite mode: each connection creates this many runs, drives them to the end, then stops. */
  runsPerWorker?: number;
  /** Pause between transactions per connection, to bound the rate. */
  txDelayMs?: number;
  /** Share of transactions written as one multi-row UPDATE (the rest: one UPDATE per row). */
  multiRowShare?: number;
  seed: number;
  /** Where the load goes (a scratch cluster's primary); default the shared services' PostgreSQL. */
  connect?: (database: string) => pg.Client;
}

/**
 * Commits Airflow-like task-instance lifecycles from several connections until stopped (or, in
 * finite mode, until every run is finished). Each transaction advances several TIs of several
 * DAGs by one real transition each, as one multi-row UPDATE or as single-row UPDATEs, and finishes
 * the DAG runs whose TIs all ended. The ledger is written after each COMMIT returns.
 */
export class LoadGenerator {
  readonly ledger = new Ledger();
  private stopping = false;
  private runCounter = 0;
  private dagCursor = 0;
  /** Multi-row UPDATE statements executed. */
  multiRowStatements = 0;
  private readonly rand: () => number;
  private done: Promise<void> | null = null;
  startedAt = 0;
  stoppedAt = 0;

  constructor(private readonly o: LoadOptions) {
    this.rand = prng(o.seed);
  }

  start(): void {
    if (this.done) throw new Error("already started");
    this.startedAt = Date.now();
    const workers = Array.from({ length: this.o.workers }, (_, i) =>
      this.worker(i).catch((e: unknown) => {
        // One connection failed: the others stop too, and stop()/finished() reject with the error.
        this.stopping = true;
        throw e;
      }),
    );
    this.done = Promise.all(workers).then(() => {
      this.stoppedAt = Date.now();
    });
    // Surfaced by stop()/finished(); never an unhandled rejection meanwhile.
    this.done.catch(() => undefined);
  }

  /** Stops after each connection's current transaction; rejects if a connection failed. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
  }

  /** Finite mode: resolves when every connection is done. */
  async finished(): Promise<void> {
    await this.done;
  }

  /** Events (row changes) per second committed so far. */
  get rate(): number {
    const end = this.stoppedAt || Date.now();
    return this.ledger.count / Math.max(0.001, (end - this.startedAt) / 1000);
  }

  /**
   * One last transaction inserting a run named zz_sentinel into every DAG: once a consumer has
   * read all of them, it has read everything committed before (each DAG's events share a partition).
   */
  async commitSentinels(): Promise<void> {
    const c = this.client();
    await c.connect();
    try {
      await c.query("BEGIN");
      const xid = await currentXid(c);
      const changes: Omit<Entry, "previous" | "xid">[] = [];
      for (const dagId of this.o.dags) {
        await this.insertRun(c, dagId, SENTINEL_RUN, "queued");
        changes.push({ kind: "run", key: runKey(dagId, SENTINEL_RUN), dagId, op: "insert", state: "queued", tryNumber: null });
      }
      await c.query("COMMIT");
      this.ledger.add(xid, changes);
    } finally {
      await c.end();
    }
  }

  private async worker(index: number): Promise<void> {
    const o = this.o;
    const c = this.client();
    await c.connect();
    try {
      const active: TiPlan[] = [];
      const runs: RunPlan[] = [];
      let created = 0;
      for (;;) {
        if (this.stopping) return;
        const canCreate = o.runsPerWorker === undefined || created < o.runsPerWorker;
        const unfinishedRuns = runs.filter((r) => !r.finished);
        if (!canCreate && active.length === 0 && unfinishedRuns.length === 0) return;
        if (canCreate && active.length < o.activePerWorker) {
          const run = await this.createRun(c, index, created++);
          runs.push(run);
          active.push(...run.tis.filter((t) => t.next < t.steps.length));
        } else {
          await this.advance(c, active, unfinishedRuns);
          for (let i = active.length - 1; i >= 0; i--) if (active[i]!.next >= active[i]!.steps.length) active.splice(i, 1);
        }
        if (o.txDelayMs) await sleep(o.txDelayMs);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  private client(): pg.Client {
    return this.o.connect ? this.o.connect(this.o.db) : pgClient(this.o.db);
  }

  /** One transaction: a DAG run and its task instances, state NULL / try 0 (as the scheduler creates them). */
  private async createRun(c: pg.Client, worker: number, n: number): Promise<RunPlan> {
    const o = this.o;
    // Round robin, so that every DAG gets runs (and, with a per-DAG topic template, its topic).
    const dagId = o.dags[this.dagCursor++ % o.dags.length]!;
    const runId = `w${worker}_r${n}`;
    await c.query("BEGIN");
    const xid = await currentXid(c);
    const id = await this.insertRun(c, dagId, runId, "running");
    const run: RunPlan = { dagId, runId, id, key: runKey(dagId, runId), tis: [], finished: false };
    for (let t = 0; t < o.tasksPerRun; t++) {
      const taskId = `task_${String(t).padStart(2, "0")}`;
      run.tis.push({ dagId, taskId, runId, mapIndex: -1, key: tiKey(dagId, taskId, runId, -1), steps: this.lifecycle(), next: 0, run });
    }
    await insertTis(c, o.major, run.tis);
    await c.query("COMMIT");
    this.ledger.add(xid, [
      { kind: "run", key: run.key, dagId, op: "insert", state: "running", tryNumber: null },
      ...run.tis.map((t) => ({ kind: "ti" as const, key: t.key, dagId, op: "insert" as const, state: null, tryNumber: 0 })),
    ]);
    return run;
  }

  /** One transaction: several TIs (of several DAGs) one step further; runs whose TIs all ended finish. */
  private async advance(c: pg.Client, active: TiPlan[], runs: RunPlan[]): Promise<void> {
    const o = this.o;
    const k = Math.min(active.length, 1 + Math.floor(this.rand() * o.maxRowsPerTx));
    const picked = sample(active, k, this.rand);
    const ending = runs.filter((r) => r.tis.every((t) => t.next >= t.steps.length));
    if (picked.length === 0 && ending.length === 0) return;
    await c.query("BEGIN");
    const xid = await currentXid(c);
    const changes: Omit<Entry, "previous" | "xid">[] = [];
    const rows = picked.map((t) => ({ t, step: t.steps[t.next]! }));
    if (rows.length > 1 && this.rand() < (o.multiRowShare ?? 0.5)) {
      await updateTisMultiRow(c, o.major, rows);
      this.multiRowStatements++;
    } else {
      for (const { t, step } of rows) {
        const set: Record<string, unknown> = { state: step.state, try_number: step.tryNumber };
        if (o.major === "3" && step.newId) set.id = randomUUID();
        await updateOneTi(c, t, set);
      }
    }
    for (const { t, step } of rows)
      changes.push({ kind: "ti", key: t.key, dagId: t.dagId, op: "update", state: step.state, tryNumber: step.tryNumber });
    for (const r of ending) {
      const state = r.tis.some((t) => t.steps[t.steps.length - 1]!.state === "failed") ? "failed" : "success";
      await c.query("UPDATE dag_run SET state = $1, end_date = now() WHERE id = $2", [state, r.id]);
      changes.push({ kind: "run", key: r.key, dagId: r.dagId, op: "update", state, tryNumber: null });
    }
    await c.query("COMMIT");
    for (const { t } of rows) t.next++;
    for (const r of ending) r.finished = true;
    this.ledger.add(xid, changes);
  }

  /** A TI's transitions after its insert: real ones only (each changes the state or the try number). */
  private lifecycle(): Step[] {
    const r = this.rand();
    if (r < 0.05) return [{ state: "skipped", tryNumber: 0, newId: false }];
    if (r < 0.08) return [{ state: "upstream_failed", tryNumber: 0, newId: false }];
    const steps: Step[] = [];
    let t = 1;
    steps.push(
      { state: "scheduled", tryNumber: t, newId: false },
      { state: "queued", tryNumber: t, newId: false },
      { state: "running", tryNumber: t, newId: false },
    );
    while (t < 3 && this.rand() < 0.2) {
      steps.push({ state: "up_for_retry", tryNumber: t, newId: true });
      t++;
      steps.push(
        { state: "scheduled", tryNumber: t, newId: false },
        { state: "queued", tryNumber: t, newId: false },
        { state: "running", tryNumber: t, newId: false },
      );
    }
    steps.push({ state: this.rand() < 0.9 ? "success" : "failed", tryNumber: t, newId: false });
    return steps;
  }

  /** dag_run INSERT with a logical date unique per generator (both schemas have UNIQUE (dag_id, logical/execution date)). */
  private async insertRun(c: pg.Client, dagId: string, runId: string, state: string): Promise<number> {
    const n = this.runCounter++;
    const sql =
      this.o.major === "2"
        ? `INSERT INTO dag_run (dag_id, run_id, execution_date, state, run_type, clear_number)
           VALUES ($1, $2, timestamptz '2026-01-01T00:00:00Z' + $4 * interval '1 second', $3, 'manual', 0) RETURNING id`
        : `INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number, span_status)
           VALUES ($1, $2, timestamptz '2026-01-01T00:00:00Z' + $4 * interval '1 second', now(), $3, 'manual', 0, 'not_started') RETURNING id`;
    const { rows } = await c.query<{ id: number }>(sql, [dagId, runId, state, n]);
    return rows[0]!.id;
  }
}

export const SENTINEL_RUN = "zz_sentinel";

async function currentXid(c: pg.Client): Promise<number> {
  const { rows } = await c.query<{ xid: string }>("SELECT pg_current_xact_id()::text AS xid");
  return Number(BigInt(rows[0]!.xid) & 0xffffffffn);
}

function sample<T>(from: T[], k: number, rand: () => number): T[] {
  const copy = [...from];
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (copy.length - i));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, k);
}

/** The scheduler's INSERT of a run's task instances, as one multi-row statement. */
async function insertTis(c: pg.Client, major: AirflowMajor, tis: TiPlan[]): Promise<void> {
  const cols: string[] = [...TI_INSERT_COLUMNS];
  if (major === "3") cols.unshift("id");
  const vals: unknown[] = [];
  const tuples: string[] = [];
  for (const t of tis) {
    const row: unknown[] = [t.dagId, t.taskId, t.runId, t.mapIndex, null, 0, 2, "default_pool", 1, "default", "PythonOperator", 1];
    if (major === "3") row.unshift(randomUUID());
    tuples.push(`(${row.map((_, i) => `$${vals.length + i + 1}`).join(", ")})`);
    vals.push(...row);
  }
  await c.query(`INSERT INTO task_instance (${cols.join(", ")}) VALUES ${tuples.join(", ")}`, vals);
}

async function updateOneTi(c: pg.Client, t: TiPlan, set: Record<string, unknown>): Promise<void> {
  const names = Object.keys(set);
  const assignments = names.map((n, i) => `${n} = $${i + 1}`).join(", ");
  const b = names.length;
  const r = await c.query(
    `UPDATE task_instance SET ${assignments} WHERE dag_id = $${b + 1} AND task_id = $${b + 2} AND run_id = $${b + 3} AND map_index = $${b + 4}`,
    [...names.map((n) => set[n]), t.dagId, t.taskId, t.runId, t.mapIndex],
  );
  if (r.rowCount !== 1) throw new Error(`UPDATE of ${t.dagId}/${t.taskId}/${t.runId} changed ${r.rowCount} rows`);
}

/** Several TIs, each to its own next state, in one UPDATE ... FROM (VALUES ...). */
async function updateTisMultiRow(c: pg.Client, major: AirflowMajor, rows: { t: TiPlan; step: Step }[]): Promise<void> {
  const vals: unknown[] = [];
  const tuples = rows.map(({ t, step }) => {
    const base = vals.length;
    vals.push(t.dagId, t.taskId, t.runId, t.mapIndex, step.state, step.tryNumber, step.newId);
    return `($${base + 1}::text, $${base + 2}::text, $${base + 3}::text, $${base + 4}::int, $${base + 5}::text, $${base + 6}::int, $${base + 7}::bool)`;
  });
  const idSet = major === "3" ? ", id = CASE WHEN v.new_id THEN gen_random_uuid() ELSE t.id END" : "";
  const r = await c.query(
    `UPDATE task_instance t SET state = v.state, try_number = v.try_number${idSet}
       FROM (VALUES ${tuples.join(", ")}) AS v(dag_id, task_id, run_id, map_index, state, try_number, new_id)
      WHERE t.dag_id = v.dag_id AND t.task_id = v.task_id AND t.run_id = v.run_id AND t.map_index = v.map_index`,
    vals,
  );
  if (r.rowCount !== rows.length) throw new Error(`multi-row UPDATE changed ${r.rowCount} rows, expected ${rows.length}`);
}

// ------------------------------------------------------------------------------------- checks

/** Predicate for `consume`: true once the sentinel run of every DAG has been read. O(1) per message. */
export function untilSentinels(dags: Iterable<string>): (all: Consumed[]) => boolean {
  const want = new Set(dags);
  const seen = new Set<string>();
  let i = 0;
  return (all) => {
    for (; i < all.length; i++) {
      const e = all[i]!.event;
      if (e.type === "dag_run" && e.run_id === SENTINEL_RUN && want.has(e.dag_id)) seen.add(e.dag_id);
    }
    return seen.size >= want.size;
  };
}

export interface CheckOptions {
  /** true: every change exactly once (no restart happened). false: at least once, duplicates allowed. */
  exactlyOnce: boolean;
  /** Commit order of xids as PostgreSQL itself reports it (a test_decoding witness slot), if any. */
  commitRank?: Map<number, number>;
}

export interface CheckResult {
  problems: string[];
  consumed: number;
  unique: number;
  duplicates: number;
  /** xids of the transactions whose events were delivered more than once. */
  duplicateXids: Set<number>;
  partitions: number;
}

/** The fields of an event that a re-delivery must repeat exactly (previous_* depends on the daemon's memory). */
function stable(e: AirflowEvent): string {
  const copy: Record<string, unknown> = { ...e };
  delete copy.previous_state;
  delete copy.previous_state_known;
  delete copy.previous_try_number;
  return JSON.stringify(copy);
}

function keyOf(e: AirflowEvent): string {
  return e.type === "task_instance"
    ? tiKey(e.dag_id ?? "", e.task_id ?? "", e.run_id ?? "", e.map_index ?? -1)
    : runKey(e.dag_id, e.run_id);
}

/**
 * Compares what was read from Kafka with the ledger:
 * - every event parses as the published contract, its Kafka key is its dag_id;
 * - per DAG, in partition order: a position seen before is a duplicate and must repeat its original
 *   (same position, same content apart from previous_*); any other position must be greater than
 *   every position before it (commit order); with `commitRank`, its xid's commit rank too;
 * - per TI / DAG run, the de-duplicated events are exactly the ledger's changes: op, state, try
 *   number, xid, and previous_state wherever the daemon claims to know it;
 * - exactly-once: no duplicates at all, and previous_state always known.
 */
export function checkAgainstLedger(consumed: Consumed[], ledger: Ledger, opts: CheckOptions): CheckResult {
  const problems: string[] = [];
  const sorted = [...consumed].sort((a, b) =>
    a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)),
  );
  const perDag = new Map<string, { last: string; lastRank: number; seen: Map<string, string>; partition: string }>();
  const perKey = new Map<string, AirflowEvent[]>();
  let duplicates = 0;
  const duplicateXids = new Set<number>();
  let unique = 0;
  for (const m of sorted) {
    const parsed = AirflowEvent.safeParse(m.event);
    if (!parsed.success) {
      problems.push(`${m.topic}/${m.partition}@${m.offset}: does not match the event schema: ${parsed.error.message.slice(0, 200)}`);
      continue;
    }
    const e = parsed.data;
    if (m.key !== e.dag_id) problems.push(`${m.topic}/${m.partition}@${m.offset}: Kafka key ${m.key} but dag_id ${e.dag_id}`);
    const dag = e.dag_id ?? "";
    let d = perDag.get(dag);
    const where = `${m.topic}/${m.partition}`;
    if (!d) perDag.set(dag, (d = { last: "", lastRank: -1, seen: new Map(), partition: where }));
    if (d.partition !== where) problems.push(`DAG ${dag} is on ${d.partition} and ${where}`);
    const pos = e.source.position;
    const original = d.seen.get(pos);
    if (original !== undefined) {
      duplicates++;
      duplicateXids.add(e.source.xid);
      if (original !== stable(e))
        problems.push(`${where}@${m.offset}: duplicate of position ${pos} differs from the original:\n  ${original}\n  ${stable(e)}`);
      continue;
    }
    if (pos <= d.last) problems.push(`${where}@${m.offset}: DAG ${dag}: position ${pos} after ${d.last} (not commit order)`);
    if (opts.commitRank) {
      const rank = opts.commitRank.get(e.source.xid);
      if (rank === undefined) problems.push(`${where}@${m.offset}: xid ${e.source.xid} not committed according to PostgreSQL`);
      else if (rank < d.lastRank)
        problems.push(`${where}@${m.offset}: DAG ${dag}: xid ${e.source.xid} committed before the previous event's transaction`);
      else d.lastRank = rank;
    }
    d.last = pos;
    d.seen.set(pos, stable(e));
    unique++;
    const k = keyOf(e);
    let list = perKey.get(k);
    if (!list) perKey.set(k, (list = []));
    list.push(e);
  }
  if (opts.exactlyOnce && duplicates > 0) problems.push(`${duplicates} duplicate events, expected none`);

  for (const [key, expected] of ledger.byKey) {
    const got = perKey.get(key) ?? [];
    perKey.delete(key);
    const name = key.replaceAll("\u0000", "/");
    const n = Math.max(expected.length, got.length);
    for (let i = 0; i < n; i++) {
      const want = expected[i];
      const e = got[i];
      if (!want) {
        problems.push(`${name}: unexpected event #${i}: ${e!.op} ${e!.state} (xid ${e!.source.xid})`);
        continue;
      }
      if (!e) {
        problems.push(`${name}: missing #${i}: ${want.op} ${want.state} try ${want.tryNumber} (xid ${want.xid})`);
        continue;
      }
      const tryNumber = e.type === "task_instance" ? e.try_number : null;
      if (e.op !== want.op || e.state !== want.state || tryNumber !== want.tryNumber || e.source.xid !== want.xid) {
        problems.push(
          `${name} #${i}: got ${e.op} ${e.state} try ${tryNumber} xid ${e.source.xid}, committed ${want.op} ${want.state} try ${want.tryNumber} xid ${want.xid}`,
        );
      }
      if (e.previous_state_known && e.previous_state !== want.previous) {
        problems.push(`${name} #${i}: previous_state ${e.previous_state} claimed known, committed previous was ${want.previous}`);
      }
      if (opts.exactlyOnce && !e.previous_state_known) problems.push(`${name} #${i}: previous_state_known=false without a restart`);
    }
  }
  for (const [key, got] of perKey) problems.push(`${key.replaceAll("\u0000", "/")}: ${got.length} events for a row the test never wrote`);
  return {
    problems,
    consumed: consumed.length,
    unique,
    duplicates,
    duplicateXids,
    partitions: new Set(sorted.map((m) => `${m.topic}/${m.partition}`)).size,
  };
}

/** The problems, capped so that a failure message stays readable. */
export function summary(problems: string[], max = 25): string[] {
  return problems.length <= max ? problems : [...problems.slice(0, max), `... and ${problems.length - max} more`];
}

// ------------------------------------------------------------------------------------- observation

/** VmRSS and VmHWM (peak) of a process, in MiB, from /proc. */
export function memoryOf(pid: number): { rssMb: number; hwmMb: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    return { rssMb: kb("VmRSS") / 1024, hwmMb: kb("VmHWM") / 1024 };
  } catch {
    return null;
  }
}

export function parseLsnText(text: string): bigint {
  const [hi, lo] = text.split("/");
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

/** The LSN part of an event position ("<16 hex LSN>-<8 hex index>"). */
export function positionLsn(position: string): bigint {
  return BigInt(`0x${position.slice(0, 16)}`);
}

/** Highest offset + 1 per partition of a topic (what a reader would find there right now). */
export async function endOffsets(topic: string): Promise<Map<number, bigint>> {
  const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
  } finally {
    await admin.disconnect();
  }
}

/** Whether the first broker accepts TCP connections (to notice a Kafka started by someone else). */
export function brokerReachable(): Promise<boolean> {
  const [host, port] = services().kafkaBrokers[0]!.split(":");
  return new Promise((resolve) => {
    const socket = connect({ host: host!, port: Number(port) });
    const done = (up: boolean) => {
      socket.destroy();
      resolve(up);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

const run = promisify(execFile);

/** scripts/services.sh kafka-stop / kafka-start (both wait until done). */
export async function kafka(action: "kafka-stop" | "kafka-start"): Promise<void> {
  await run("bash", ["scripts/services.sh", action], { timeout: 180_000 });
}

/**
 * A test_decoding slot created before the load: PostgreSQL's own account of the commit order,
 * independent of the daemon's decoder. Returns xid -> rank among the commits it saw.
 */
export async function witnessCommitOrder(c: pg.Client, slot: string): Promise<Map<number, number>> {
  const { rows } = await c.query<{ xid: string }>(
    `SELECT xid::text AS xid FROM pg_logical_slot_get_changes($1, NULL, NULL, 'skip-empty-xacts', '1') WITH ORDINALITY AS t(lsn, xid, data, n)
      WHERE data LIKE 'COMMIT%' ORDER BY n`,
    [slot],
  );
  return new Map(rows.map((r, i) => [Number(r.xid), i]));
}
