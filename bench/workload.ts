/**
 * The benchmarks' Airflow workload: DAGs, runs and the transactions Airflow's scheduler and workers
 * commit for them, as SQL against the real 2.x or 3.x schema. Shared by bench.ts (throughput and
 * latency) and wal-cost.ts (WAL volume of REPLICA IDENTITY DEFAULT vs FULL), so both measure the
 * same write pattern. Erasable TypeScript only: run directly by Node's type stripping.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";

/** The real Airflow schema of a major (test/fixtures/airflow, the version versions.json pins) and that version. */
export function airflowSchema(root: string, major: "2" | "3"): { version: string; sql: string } {
  const dir = path.join(root, "test/fixtures/airflow");
  const versions = JSON.parse(readFileSync(path.join(dir, "versions.json"), "utf8")) as Record<string, string>;
  const version = versions[major]!;
  return { version, sql: readFileSync(path.join(dir, `airflow-${version}.sql`), "utf8") };
}

/** mulberry32: a small seeded PRNG, so the workload (and the expected event count) is reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ----------------------------------------------------------------------------------- workload

export interface Task {
  taskId: string;
  mapIndex: number;
  operator: string;
  maxTries: number;
  prio: number;
}

export interface Dag {
  dagId: string;
  tasks: Task[];
  /** Sizes of the scheduling waves (dependency layers), summing to tasks.length. */
  waves: number[];
  runs: number;
}

export interface Ti {
  task: Task;
  /** 3.x task_instance.id (a new one per try); unused on 2.x. */
  id: string;
  fails: boolean;
}

export interface Run {
  dag: Dag;
  runId: string;
  logicalDate: string;
  tis: Ti[];
  dagRunId: number;
  /** Events of the run's lifecycle (not counting the seed inserts). */
  events: number;
}

const DOMAINS = ["finance", "marketing", "sales", "ml", "ops", "platform", "growth", "risk", "supply", "hr", "billing", "search"];
const PURPOSES = [
  "daily_rollup",
  "hourly_ingest",
  "feature_build",
  "report",
  "sync",
  "backfill_guard",
  "quality_checks",
  "export",
  "model_train",
  "snapshot",
];
const VERBS = [
  "extract",
  "load",
  "transform",
  "validate",
  "aggregate",
  "publish",
  "notify",
  "wait_for",
  "compute",
  "dedupe",
  "partition",
  "score",
];
const NOUNS = [
  "orders",
  "customers",
  "events",
  "sessions",
  "invoices",
  "features",
  "inventory",
  "clicks",
  "payments",
  "accounts",
  "metrics",
  "logs",
];
const OPERATORS = [
  "PythonOperator",
  "BashOperator",
  "SQLExecuteQueryOperator",
  "KubernetesPodOperator",
  "S3ToSnowflakeOperator",
  "ExternalTaskSensor",
  "EmptyOperator",
  "HttpOperator",
];
const HOSTS = Array.from({ length: 24 }, (_, i) => `airflow-worker-${i}.airflow-worker.airflow.svc.cluster.local`);

export class Workload {
  readonly dags: Dag[] = [];
  private readonly rnd: () => number;
  private readonly failRate: number;
  private readonly heartbeats: number;
  private readonly decisions: number;

  /**
   * `decisions`: dag_run UPDATEs of last_scheduling_decision alone per wave (Airflow's scheduler
   * loop touches every running run about once a second): churn, no event. bench.ts leaves it at 0.
   */
  constructor(nDags: number, seed: number, failRate: number, heartbeats: number, decisions = 0) {
    this.rnd = prng(seed);
    this.failRate = failRate;
    this.heartbeats = heartbeats;
    this.decisions = decisions;
    for (let d = 0; d < nDags; d++) {
      const dagId = `${this.pick(DOMAINS)}_${this.pick(PURPOSES)}_${String(d).padStart(3, "0")}`;
      // 5..50 task instances per run; one DAG in ten expands a mapped task (map_index 0..n-1).
      const size = this.int(5, 50);
      const tasks: Task[] = [];
      const mapped = this.rnd() < 0.1 ? this.int(3, Math.min(16, size - 1)) : 0;
      for (let t = 0; tasks.length < size - mapped; t++) {
        tasks.push({
          taskId: `${this.pick(VERBS)}_${this.pick(NOUNS)}_${t}`,
          mapIndex: -1,
          operator: this.pick(OPERATORS),
          maxTries: this.int(0, 3),
          prio: this.int(1, 10),
        });
      }
      for (let m = 0; m < mapped; m++)
        tasks.push({ taskId: "process_partition", mapIndex: m, operator: "PythonOperator", maxTries: 2, prio: 1 });
      // Dependency layers: waves of roughly 10..30 tasks (so scheduler transactions touch 5-50 rows).
      const nWaves = Math.max(1, Math.round(size / this.int(10, 30)));
      const waves: number[] = [];
      for (let w = 0; w < nWaves; w++) waves.push(Math.floor(size / nWaves) + (w < size % nWaves ? 1 : 0));
      this.dags.push({ dagId, tasks, waves, runs: 0 });
    }
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)]!;
  }

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rnd() * (hi - lo + 1));
  }

  /** New runs (random DAGs) until their lifecycles add up to at least `events` events. */
  plan(events: number): Run[] {
    const runs: Run[] = [];
    let total = 0;
    while (total < events) {
      const dag = this.pick(this.dags);
      const n = dag.runs++;
      const logical = new Date(Date.UTC(2025, 0, 1) + n * 3_600_000).toISOString().replace(".000Z", "+00:00");
      const tis = dag.tasks.map((task) => ({ task, id: randomUUID(), fails: this.rnd() < this.failRate && task.maxTries > 0 }));
      let ev = 2; // dag_run queued -> running -> success
      // scheduled, queued, running, success; a failing try: scheduled, queued, running, up_for_retry, then the retry's four.
      for (const ti of tis) ev += ti.fails ? 8 : 4;
      runs.push({ dag, runId: `scheduled__${logical}`, logicalDate: logical, tis, dagRunId: 0, events: ev });
      total += ev;
    }
    return runs;
  }

  /** One run of a DAG whose single task is mapped `width` ways: every event has the same key. */
  planWide(width: number): Run {
    const tasks: Task[] = Array.from({ length: width }, (_, m) => ({
      taskId: "process_partition",
      mapIndex: m,
      operator: "PythonOperator",
      maxTries: 0,
      prio: 1,
    }));
    const dag: Dag = { dagId: "bulk_fanout_partitions", tasks, waves: [width], runs: 0 };
    this.dags.push(dag);
    const logical = "2025-06-01T00:00:00+00:00";
    const tis = tasks.map((task) => ({ task, id: randomUUID(), fails: false }));
    return { dag, runId: `manual__${logical}`, logicalDate: logical, tis, dagRunId: 0, events: 2 + 4 * width };
  }

  /** The run's transactions, in the order Airflow would commit them. */
  script(run: Run, sql: Sql): Tx[] {
    const txs: Tx[] = [];
    let offset = 0;
    const rnd = this.rnd;
    const host = () => HOSTS[Math.floor(rnd() * HOSTS.length)]!;
    const lifecycle = (wave: Ti[], first: boolean, retry: boolean) => {
      txs.push(first ? sql.scheduleFirst(run, wave) : sql.schedule(run, wave));
      txs.push(sql.queue(run, wave, 1000 + Math.floor(rnd() * 50)));
      for (const ti of wave) txs.push(sql.run(run, ti, host(), 1000 + Math.floor(rnd() * 60_000)));
      for (let h = 0; h < this.heartbeats; h++) for (const ti of wave) txs.push(sql.heartbeat(run, ti));
      for (let d = 0; d < this.decisions; d++) txs.push(sql.decision(run));
      for (const ti of wave) {
        if (ti.fails && !retry) {
          const newId = randomUUID();
          txs.push(sql.fail(run, ti, newId));
          ti.id = newId;
        } else txs.push(sql.succeed(run, ti));
      }
    };
    run.dag.waves.forEach((size, w) => {
      lifecycle(run.tis.slice(offset, offset + size), w === 0, false);
      offset += size;
    });
    const failed = run.tis.filter((t) => t.fails);
    if (failed.length > 0) lifecycle(failed, false, true);
    txs.push(sql.runSuccess(run));
    return txs;
  }
}

// ------------------------------------------------------------------------------------- SQL

export interface Tx {
  name: string;
  text: string;
  values: unknown[];
  /** Events the daemon must publish for this transaction. */
  events: number;
}

export interface Sql {
  seed(run: Run): Tx;
  scheduleFirst(run: Run, wave: Ti[]): Tx;
  schedule(run: Run, wave: Ti[]): Tx;
  queue(run: Run, wave: Ti[], jobId: number): Tx;
  run(run: Run, ti: Ti, hostname: string, pid: number): Tx;
  heartbeat(run: Run, ti: Ti): Tx;
  succeed(run: Run, ti: Ti): Tx;
  fail(run: Run, ti: Ti, newId: string): Tx;
  runSuccess(run: Run): Tx;
  /** The scheduler's loop passing over a running run: last_scheduling_decision only (churn). */
  decision(run: Run): Tx;
}

const EXECUTOR_CONFIG = Buffer.from("80057d942e", "hex"); // pickle of {} as Airflow stores it

/**
 * The statements, one transaction each (autocommit), shaped like Airflow's: the scheduler updates
 * a wave of task instances in one statement, workers update their own row. Airflow 3.x addresses
 * task instances by id (a new UUID per try), 2.x by (dag_id, task_id, run_id, map_index).
 * Heartbeats are churn: 3.x sets last_heartbeat_at, 2.x updated_at; neither may become an event.
 */
export function sqlFor(major: "2" | "3"): Sql {
  const DR_RUNNING = `UPDATE dag_run SET state = 'running', start_date = now(), last_scheduling_decision = now(), updated_at = now() WHERE id = $1 RETURNING id`;
  const runSuccess = (run: Run): Tx => ({
    name: "run_success",
    text: `UPDATE dag_run SET state = 'success', end_date = now(), last_scheduling_decision = now(), updated_at = now() WHERE id = $1`,
    values: [run.dagRunId],
    events: 1,
  });
  const decision = (run: Run): Tx => ({
    name: "run_decision",
    text: `UPDATE dag_run SET last_scheduling_decision = now() WHERE id = $1`,
    values: [run.dagRunId],
    events: 0,
  });
  if (major === "3") {
    const SCHED = `UPDATE task_instance SET state = 'scheduled', try_number = try_number + 1, scheduled_dttm = now(), updated_at = now() WHERE id = ANY($2::uuid[])`;
    const ids = (wave: Ti[]) => wave.map((t) => t.id);
    return {
      seed: (run) => ({
        name: "seed3",
        text: `WITH r AS (
                 INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, queued_at, data_interval_start, data_interval_end,
                                      state, run_type, triggered_by, clear_number, span_status, created_at, updated_at, conf)
                 VALUES ($1, $2, $3::timestamptz, $3::timestamptz, now(), $3::timestamptz - interval '1 hour', $3::timestamptz,
                         'queued', 'scheduled', 'timetable', 0, 'not_started', now(), now(), '{}'::jsonb)
                 RETURNING id),
               t AS (
                 INSERT INTO task_instance (id, dag_id, task_id, run_id, map_index, state, try_number, max_tries, pool, pool_slots,
                                            queue, priority_weight, operator, executor_config, span_status, task_display_name, updated_at)
                 SELECT u.id, $1, u.task_id, $2, u.map_index, NULL, 0, u.max_tries, 'default_pool', 1,
                        'default', u.prio, u.operator, $9, 'not_started', u.task_id, now()
                   FROM unnest($4::uuid[], $5::text[], $6::int[], $7::int[], $8::int[], $10::text[]) AS u(id, task_id, map_index, max_tries, prio, operator))
               SELECT id FROM r`,
        values: [
          run.dag.dagId,
          run.runId,
          run.logicalDate,
          run.tis.map((t) => t.id),
          run.tis.map((t) => t.task.taskId),
          run.tis.map((t) => t.task.mapIndex),
          run.tis.map((t) => t.task.maxTries),
          run.tis.map((t) => t.task.prio),
          EXECUTOR_CONFIG,
          run.tis.map((t) => t.task.operator),
        ],
        events: 1 + run.tis.length,
      }),
      scheduleFirst: (run, wave) => ({
        name: "sched_first3",
        text: `WITH r AS (${DR_RUNNING}) ${SCHED}`,
        values: [run.dagRunId, ids(wave)],
        events: 1 + wave.length,
      }),
      schedule: (_run, wave) => ({ name: "sched3", text: SCHED.replace("$2", "$1"), values: [ids(wave)], events: wave.length }),
      queue: (_run, wave, jobId) => ({
        name: "queue3",
        text: `UPDATE task_instance SET state = 'queued', queued_dttm = now(), queued_by_job_id = $2, updated_at = now() WHERE id = ANY($1::uuid[])`,
        values: [ids(wave), jobId],
        events: wave.length,
      }),
      run: (_run, ti, hostname, pid) => ({
        name: "run3",
        text: `UPDATE task_instance SET state = 'running', hostname = $2, unixname = 'airflow', pid = $3, start_date = now(), last_heartbeat_at = now(), updated_at = now() WHERE id = $1`,
        values: [ti.id, hostname, pid],
        events: 1,
      }),
      heartbeat: (_run, ti) => ({
        name: "hb3",
        text: `UPDATE task_instance SET last_heartbeat_at = now() WHERE id = $1`,
        values: [ti.id],
        events: 0,
      }),
      succeed: (_run, ti) => ({
        name: "ok3",
        text: `UPDATE task_instance SET state = 'success', end_date = now(), duration = extract(epoch FROM now() - start_date), updated_at = now() WHERE id = $1`,
        values: [ti.id],
        events: 1,
      }),
      // Airflow 3 gives the next try a new id when a try fails: the WAL then carries the old key.
      fail: (_run, ti, newId) => ({
        name: "fail3",
        text: `UPDATE task_instance SET id = $2, state = 'up_for_retry', end_date = now(), duration = extract(epoch FROM now() - start_date), updated_at = now() WHERE id = $1`,
        values: [ti.id, newId],
        events: 1,
      }),
      runSuccess,
      decision,
    };
  }
  const WAVE = `dag_id = $1 AND run_id = $2 AND (task_id, map_index) IN (SELECT * FROM unnest($3::text[], $4::int[]))`;
  const ONE = `dag_id = $1 AND task_id = $2 AND run_id = $3 AND map_index = $4`;
  const SCHED = `UPDATE task_instance SET state = 'scheduled', try_number = try_number + 1, updated_at = now() WHERE ${WAVE}`;
  const waveKey = (run: Run, wave: Ti[]) => [run.dag.dagId, run.runId, wave.map((t) => t.task.taskId), wave.map((t) => t.task.mapIndex)];
  const oneKey = (run: Run, ti: Ti) => [run.dag.dagId, ti.task.taskId, run.runId, ti.task.mapIndex];
  return {
    seed: (run) => ({
      name: "seed2",
      text: `WITH r AS (
               INSERT INTO dag_run (dag_id, run_id, execution_date, queued_at, data_interval_start, data_interval_end,
                                    state, run_type, external_trigger, clear_number, updated_at)
               VALUES ($1, $2, $3::timestamptz, now(), $3::timestamptz - interval '1 hour', $3::timestamptz, 'queued', 'scheduled', false, 0, now())
               RETURNING id),
             t AS (
               INSERT INTO task_instance (dag_id, task_id, run_id, map_index, state, try_number, max_tries, pool, pool_slots,
                                          queue, priority_weight, operator, executor_config, updated_at)
               SELECT $1, u.task_id, $2, u.map_index, NULL, 0, u.max_tries, 'default_pool', 1, 'default', u.prio, u.operator, $8, now()
                 FROM unnest($4::text[], $5::int[], $6::int[], $7::int[], $9::text[]) AS u(task_id, map_index, max_tries, prio, operator))
             SELECT id FROM r`,
      values: [
        run.dag.dagId,
        run.runId,
        run.logicalDate,
        run.tis.map((t) => t.task.taskId),
        run.tis.map((t) => t.task.mapIndex),
        run.tis.map((t) => t.task.maxTries),
        run.tis.map((t) => t.task.prio),
        EXECUTOR_CONFIG,
        run.tis.map((t) => t.task.operator),
      ],
      events: 1 + run.tis.length,
    }),
    scheduleFirst: (run, wave) => ({
      name: "sched_first2",
      text: `WITH r AS (${DR_RUNNING.replace("$1", "$5")}) ${SCHED}`,
      values: [...waveKey(run, wave), run.dagRunId],
      events: 1 + wave.length,
    }),
    schedule: (run, wave) => ({ name: "sched2", text: SCHED, values: waveKey(run, wave), events: wave.length }),
    queue: (run, wave, jobId) => ({
      name: "queue2",
      text: `UPDATE task_instance SET state = 'queued', queued_dttm = now(), queued_by_job_id = $5, updated_at = now() WHERE ${WAVE}`,
      values: [...waveKey(run, wave), jobId],
      events: wave.length,
    }),
    run: (run, ti, hostname, pid) => ({
      name: "run2",
      text: `UPDATE task_instance SET state = 'running', hostname = $5, unixname = 'airflow', pid = $6, job_id = $6, start_date = now(), updated_at = now() WHERE ${ONE}`,
      values: [...oneKey(run, ti), hostname, pid],
      events: 1,
    }),
    heartbeat: (run, ti) => ({
      name: "hb2",
      text: `UPDATE task_instance SET updated_at = now() WHERE ${ONE}`,
      values: oneKey(run, ti),
      events: 0,
    }),
    succeed: (run, ti) => ({
      name: "ok2",
      text: `UPDATE task_instance SET state = 'success', end_date = now(), duration = extract(epoch FROM now() - start_date), updated_at = now() WHERE ${ONE}`,
      values: oneKey(run, ti),
      events: 1,
    }),
    fail: (run, ti) => ({
      name: "fail2",
      text: `UPDATE task_instance SET state = 'up_for_retry', end_date = now(), duration = extract(epoch FROM now() - start_date), updated_at = now() WHERE ${ONE}`,
      values: oneKey(run, ti),
      events: 1,
    }),
    runSuccess,
    decision,
  };
}
