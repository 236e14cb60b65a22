import { randomUUID } from "node:crypto";
import type pg from "pg";
import { pgClient, sleep, type AirflowMajor } from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";
import { Ledger, SENTINEL_RUN, prng, runKey, tiKey, type Entry } from "../support/load.js";

/**
 * A load generator that survives PostgreSQL going away. Every transaction also inserts its token into
 * a ledger table (not published); when a transaction fails with an unknown outcome (the connection
 * died around COMMIT), the worker reconnects and looks the token up: only what PostgreSQL committed
 * enters the test's ledger, and a transaction that did not commit is retried (with a new xid).
 */

type Change = Omit<Entry, "previous" | "xid">;

interface Ti {
  dagId: string;
  taskId: string;
  runId: string;
  key: string;
  steps: { state: string; tryNumber: number }[];
  next: number;
}

const LIFECYCLE = [
  { state: "scheduled", tryNumber: 1 },
  { state: "queued", tryNumber: 1 },
  { state: "running", tryNumber: 1 },
  { state: "success", tryNumber: 1 },
];

export class TolerantLoad {
  readonly ledger = new Ledger();
  private stopping = false;
  private done: Promise<void> | null = null;
  private readonly rand: () => number;
  private runCounter = 0;
  /** Transactions whose COMMIT outcome was unknown and resolved via the ledger table. */
  ambiguous = { committed: 0, notCommitted: 0 };
  retries = 0;

  constructor(
    private readonly o: {
      db: string;
      major: AirflowMajor;
      dags: string[];
      workers: number;
      tasksPerRun: number;
      maxRowsPerTx: number;
      txDelayMs: number;
      seed: number;
    },
  ) {
    this.rand = prng(o.seed);
  }

  static async prepare(db: string): Promise<void> {
    const c = pgClient(db);
    await c.connect();
    try {
      await c.query("CREATE TABLE IF NOT EXISTS es_test_ledger (token uuid PRIMARY KEY)");
    } finally {
      await c.end();
    }
  }

  start(): void {
    this.done = Promise.all(Array.from({ length: this.o.workers }, (_, i) => this.worker(i))).then(() => undefined);
    this.done.catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
  }

  /** Runs `body` in one transaction until it is known to have committed (or `giveUp`). */
  private async commit(conn: { c: pg.Client | null }, body: (c: pg.Client) => Promise<Change[]>, always = false): Promise<boolean> {
    for (;;) {
      if (this.stopping && !always) return false;
      const token = randomUUID();
      let xid = 0;
      let changes: Change[] = [];
      let sentCommit = false;
      try {
        if (!conn.c) conn.c = await this.connect();
        const c = conn.c;
        await c.query("BEGIN");
        xid = Number((await c.query<{ xid: string }>("SELECT (txid_current() % 4294967296)::text AS xid")).rows[0]!.xid);
        changes = await body(c);
        await c.query("INSERT INTO es_test_ledger (token) VALUES ($1)", [token]);
        sentCommit = true;
        await c.query("COMMIT");
        this.ledger.add(xid, changes);
        return true;
      } catch {
        this.retries++;
        const old = conn.c;
        conn.c = null;
        if (old) await old.end().catch(() => undefined);
        if (!sentCommit) {
          await sleep(200);
          continue;
        }
        // Unknown outcome: ask PostgreSQL (after reconnecting) whether the token is there.
        const committed = await this.resolve(token);
        if (committed) {
          this.ambiguous.committed++;
          this.ledger.add(xid, changes);
          return true;
        }
        this.ambiguous.notCommitted++;
      }
    }
  }

  private async connect(): Promise<pg.Client> {
    for (;;) {
      const c = pgClient(this.o.db, { connectionTimeoutMillis: 2000 });
      c.on("error", () => undefined);
      try {
        await c.connect();
        return c;
      } catch {
        await c.end().catch(() => undefined);
        await sleep(250);
      }
    }
  }

  private async resolve(token: string): Promise<boolean> {
    for (;;) {
      try {
        const c = await this.connect();
        try {
          return (await c.query("SELECT 1 FROM es_test_ledger WHERE token = $1", [token])).rowCount === 1;
        } finally {
          await c.end().catch(() => undefined);
        }
      } catch {
        await sleep(250);
      }
    }
  }

  private async worker(index: number): Promise<void> {
    const o = this.o;
    const conn: { c: pg.Client | null } = { c: null };
    const active: Ti[] = [];
    try {
      while (!this.stopping) {
        if (active.length < 20) {
          const dagId = o.dags[this.runCounter++ % o.dags.length]!;
          const runId = `w${index}_r${this.runCounter}`;
          const tis: Ti[] = Array.from({ length: o.tasksPerRun }, (_, t) => {
            const taskId = `task_${t}`;
            return { dagId, taskId, runId, key: tiKey(dagId, taskId, runId, -1), steps: LIFECYCLE, next: 0 };
          });
          const ok = await this.commit(conn, async (c) => {
            await insertDagRun(c, o.major, dagId, runId, "running");
            for (const t of tis) await insertTi(c, o.major, { dag_id: dagId, task_id: t.taskId, run_id: runId });
            return [
              { kind: "run", key: runKey(dagId, runId), dagId, op: "insert", state: "running", tryNumber: null },
              ...tis.map((t) => ({ kind: "ti" as const, key: t.key, dagId, op: "insert" as const, state: null, tryNumber: 0 })),
            ];
          });
          if (ok) active.push(...tis);
        } else {
          const k = 1 + Math.floor(this.rand() * o.maxRowsPerTx);
          const picked = [...active].sort(() => this.rand() - 0.5).slice(0, k);
          const ok = await this.commit(conn, async (c) => {
            const changes: Change[] = [];
            for (const t of picked) {
              const step = t.steps[t.next]!;
              await updateTi(c, { dag_id: t.dagId, task_id: t.taskId, run_id: t.runId }, { state: step.state, try_number: step.tryNumber });
              changes.push({ kind: "ti", key: t.key, dagId: t.dagId, op: "update", state: step.state, tryNumber: step.tryNumber });
            }
            return changes;
          });
          if (ok) {
            for (const t of picked) t.next++;
            for (let i = active.length - 1; i >= 0; i--) if (active[i]!.next >= active[i]!.steps.length) active.splice(i, 1);
          }
        }
        await sleep(o.txDelayMs);
      }
    } finally {
      await conn.c?.end().catch(() => undefined);
    }
  }

  /** One last transaction: a sentinel run in every DAG (see untilSentinels). */
  async commitSentinels(): Promise<void> {
    const conn: { c: pg.Client | null } = { c: null };
    await this.commit(
      conn,
      async (c) => {
        const changes: Change[] = [];
        for (const dagId of this.o.dags) {
          await insertDagRun(c, this.o.major, dagId, SENTINEL_RUN, "queued");
          changes.push({ kind: "run", key: runKey(dagId, SENTINEL_RUN), dagId, op: "insert", state: "queued", tryNumber: null });
        }
        return changes;
      },
      true,
    );
    await conn.c?.end().catch(() => undefined);
  }
}
