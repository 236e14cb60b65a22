import type pg from "pg";
import type { AirflowEvent } from "../../src/airflow/events.js";
import { insertDagRun, insertTi } from "./airflow-rows.js";
import { pgClient, sleep, type AirflowMajor, type Consumed } from "./harness.js";
import { prng } from "./load.js";

/** Rows that exist before the daemon's slot: the stream never carries them, only a snapshot can. */
export interface Preloaded {
  dags: string[];
  tis: { dag_id: string; task_id: string; run_id: string }[];
  runs: { id: number; dag_id: string; run_id: string }[];
}

export async function preload(db: string, major: AirflowMajor, dags: string[], runsPerDag: number, tisPerRun: number): Promise<Preloaded> {
  const c = pgClient(db);
  await c.connect();
  const out: Preloaded = { dags, tis: [], runs: [] };
  try {
    for (const dag of dags)
      for (let r = 0; r < runsPerDag; r++) {
        // A transaction per run: 3.x's insertDagRun takes now() as the logical date, unique per DAG.
        await c.query("BEGIN");
        const runId = `pre_${r}`;
        out.runs.push({ id: await insertDagRun(c, major, dag, runId, "running"), dag_id: dag, run_id: runId });
        for (let t = 0; t < tisPerRun; t++) {
          const key = { dag_id: dag, task_id: `pt_${String(t).padStart(3, "0")}`, run_id: runId };
          await insertTi(c, major, key, { state: "scheduled", try_number: 1 });
          out.tis.push(key);
        }
        await c.query("COMMIT");
      }
  } finally {
    await c.end();
  }
  return out;
}

const HOT_ROWS = 12;

const STATES = ["queued", "running", "success", "failed", "up_for_retry", "scheduled"];

/**
 * Changes preloaded rows at random while a snapshot reads them: state updates of task instances
 * and runs (several rows per transaction), heartbeats (churn), and on 2.x deletes. Until stopped.
 */
export class Churner {
  private stopping = false;
  private readonly done: Promise<void>;
  transactions = 0;

  constructor(db: string, major: AirflowMajor, pre: Preloaded, seed: number, workers = 2) {
    const rand = prng(seed ^ 0x5eed);
    const live = [...pre.tis];
    this.done = Promise.all(Array.from({ length: workers }, () => this.worker(db, major, pre, live, rand))).then(() => undefined);
    this.done.catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
  }

  private async worker(db: string, major: AirflowMajor, pre: Preloaded, live: Preloaded["tis"], rand: () => number): Promise<void> {
    const c = pgClient(db);
    await c.connect();
    try {
      while (!this.stopping) {
        await c.query("BEGIN");
        const n = 1 + Math.floor(rand() * 4);
        const picked = new Set<Preloaded["tis"][number]>();
        for (let i = 0; i < n && live.length > 0; i++) {
          // Half the changes go to a few hot rows (spread over the table, so over several chunks):
          // a chunk holding one is then likely to be read while it changes.
          const hot = Math.floor(rand() * HOT_ROWS) * Math.floor(live.length / HOT_ROWS);
          picked.add(live[rand() < 0.5 ? Math.min(hot, live.length - 1) : Math.floor(rand() * live.length)]!);
        }
        // Rows locked in one order by every worker: no deadlocks between them.
        for (const ti of [...picked].sort((a, b) => (name(a) < name(b) ? -1 : 1))) {
          const r = rand();
          if (r < 0.05 && major === "2") {
            const at = live.indexOf(ti);
            if (at >= 0) live.splice(at, 1);
            await c.query("DELETE FROM task_instance WHERE dag_id = $1 AND task_id = $2 AND run_id = $3", [
              ti.dag_id,
              ti.task_id,
              ti.run_id,
            ]);
          } else if (r < 0.25) {
            await c.query("UPDATE task_instance SET hostname = $4 WHERE dag_id = $1 AND task_id = $2 AND run_id = $3", [
              ti.dag_id,
              ti.task_id,
              ti.run_id,
              `h${Math.floor(rand() * 1000)}`,
            ]);
          } else {
            await setTiState(c, ti, STATES[Math.floor(rand() * STATES.length)]!);
          }
        }
        if (rand() < 0.2) {
          const run = pre.runs[Math.floor(rand() * pre.runs.length)]!;
          await c.query("UPDATE dag_run SET state = $2 WHERE id = $1", [run.id, rand() < 0.5 ? "running" : "success"]);
        }
        await c.query("COMMIT");
        this.transactions++;
        if (rand() < 0.3) await sleep(rand() * 3);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  }
}

function name(ti: Preloaded["tis"][number]): string {
  return `${ti.dag_id}/${ti.task_id}/${ti.run_id}`;
}

async function setTiState(c: pg.Client, ti: Preloaded["tis"][number], state: string): Promise<void> {
  await c.query("UPDATE task_instance SET state = $4 WHERE dag_id = $1 AND task_id = $2 AND run_id = $3", [
    ti.dag_id,
    ti.task_id,
    ti.run_id,
    state,
  ]);
}

/** Row identity -> state, as a consumer applying `events` in position order ends up (insert/update/snapshot set, delete removes). */
export function applyInPositionOrder(events: Consumed[]): { state: Map<string, string | null>; snapshots: number } {
  const byPosition = new Map<string, AirflowEvent>();
  for (const m of events)
    if (m.event.type === "task_instance" || m.event.type === "dag_run") byPosition.set(m.event.source.position, m.event);
  const state = new Map<string, string | null>();
  let snapshots = 0;
  for (const pos of [...byPosition.keys()].sort()) {
    const e = byPosition.get(pos)!;
    const key = e.type === "task_instance" ? tiName(e.dag_id, e.task_id, e.run_id, e.map_index) : runName(e.dag_id, e.run_id);
    if (e.op === "snapshot") snapshots++;
    if (e.op === "delete") state.delete(key);
    else state.set(key, e.state);
  }
  return { state, snapshots };
}

/**
 * Snapshot events that say something else than the events before them in position order: a
 * snapshot may only repeat a row's state, since every change of state between the row's previous
 * event and the snapshot would itself be an event between them. A violation is a stale value
 * overwriting a newer streamed transition, even when a later change hides it from the final state.
 */
export function staleSnapshots(events: Consumed[]): string[] {
  const byPosition = new Map<string, AirflowEvent>();
  for (const m of events)
    if (m.event.type === "task_instance" || m.event.type === "dag_run") byPosition.set(m.event.source.position, m.event);
  const last = new Map<string, string | null>();
  const out: string[] = [];
  for (const pos of [...byPosition.keys()].sort()) {
    const e = byPosition.get(pos)!;
    const key = e.type === "task_instance" ? tiName(e.dag_id, e.task_id, e.run_id, e.map_index) : runName(e.dag_id, e.run_id);
    if (e.op === "snapshot" && last.has(key) && last.get(key) !== e.state)
      out.push(`${key.replaceAll("\u0000", "/")} at ${pos}: snapshot says ${e.state} after an event saying ${last.get(key)}`);
    if (e.op === "delete") last.delete(key);
    else last.set(key, e.state);
  }
  return out;
}

/** Every task instance and run with its state, as the database holds them now. */
export async function databaseState(db: string): Promise<Map<string, string | null>> {
  const c = pgClient(db);
  await c.connect();
  try {
    const out = new Map<string, string | null>();
    const tis = await c.query<{ dag_id: string; task_id: string; run_id: string; map_index: number; state: string | null }>(
      "SELECT dag_id, task_id, run_id, map_index, state FROM task_instance",
    );
    for (const r of tis.rows) out.set(tiName(r.dag_id, r.task_id, r.run_id, r.map_index), r.state);
    const runs = await c.query<{ dag_id: string; run_id: string; state: string | null }>("SELECT dag_id, run_id, state FROM dag_run");
    for (const r of runs.rows) out.set(runName(r.dag_id, r.run_id), r.state);
    return out;
  } finally {
    await c.end();
  }
}

/** The differences between what a consumer applied and the database, at most `max`. */
export function differences(applied: Map<string, string | null>, db: Map<string, string | null>, max = 20): string[] {
  const out: string[] = [];
  for (const [k, s] of db) {
    if (!applied.has(k)) out.push(`${k.replaceAll("\u0000", "/")}: in the database (${s}), never in the events`);
    else if (applied.get(k) !== s) out.push(`${k.replaceAll("\u0000", "/")}: events end in ${applied.get(k)}, the database has ${s}`);
  }
  for (const k of applied.keys()) if (!db.has(k)) out.push(`${k.replaceAll("\u0000", "/")}: in the events, not in the database`);
  return out.slice(0, max);
}

function tiName(dag: string | null, task: string | null, run: string | null, mapIndex: number | null): string {
  return ["ti", dag, task, run, mapIndex].join("\u0000");
}

function runName(dag: string, run: string): string {
  return ["run", dag, run].join("\u0000");
}
