import { rmSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { StreamEvent, TaskInstanceEvent } from "../../src/airflow/events.js";
import type { HistoryEntry, InsightEvent, ReadyAnswer, RunView, StuckItem } from "../../src/serve/schemas.js";
import { freePort } from "../../scripts/free-port.js";
import {
  confirmedFlush,
  daemonEnv,
  dropDatabase,
  sleep,
  spawnDaemon,
  uniqueName,
  waitFor,
  withPg,
  withTimeout,
  type Consumed,
  type DaemonProcess,
} from "../support/harness.js";
import {
  abort,
  airflowInstance,
  airflowOk,
  airflowVersions,
  ensureVenv,
  killOnExit,
  migrate,
  stopServices,
  type AirflowInstance,
} from "./support/airflow.js";
import {
  DAGS_SERVE_FOLDER,
  SERVE_DAGS,
  dbCounts,
  deleteTopics,
  getJson,
  readEvents,
  readInsights,
  startAirflow,
  waitForRunsFinished,
} from "./support/serve.js";

/**
 * Issue 12's "done when" on real Airflow 3.x: the DAGs of test/dags-serve run by the real scheduler
 * (api-server, dag-processor, scheduler, triggerer, LocalExecutor), the real daemon streams them, and
 * `airflow-eventstream serve` (a child process, its insights writer on) answers the four questions:
 * - Where are we stuck? es_serve_stuck's task runs 25 s, past this DAG's running threshold of 8 s:
 *   it shows in GET /stuck while it runs, and the insights topic gets task_stuck then task_unstuck.
 * - A final failure: es_serve_retry's task (retries=1) fails twice: one task_failed_final, for try 2.
 * - When can I start? ready?task=upstream&wait=240 on es_serve_ready, asked while upstream runs,
 *   answers ready=true once it succeeds: the latency from its success commit is measured and printed.
 * - Can I undo and rerun? `airflow tasks clear` of es_serve_clear shows in its history and yields run_cleared.
 * - Is it complete? Every run_completed's counts equal the database's task_instance states of the run.
 * The insights topic is read read_committed. ~3.5-4 min with a cached venv.
 */

const AF3 = airflowVersions().find((v) => v.major === "3")!;
const STUCK_RUNNING = 8;

interface ReadyResult {
  runId: string;
  upstreamStateWhenAsked: string | null;
  askedAt: number;
  answeredAt: number;
  answer: ReadyAnswer;
}

interface Observed {
  stuck: StuckItem[];
  ready: ReadyResult;
  history: HistoryEntry[];
  runs: Map<string, RunView>;
  insights: InsightEvent[];
  events: Consumed<StreamEvent>[];
  counts: Map<string, Record<string, number>>;
  runStates: Map<string, string>;
  clearedRunId: string;
}

describe(`Airflow ${AF3.version}: serve answers the four questions on a real scheduler`, () => {
  const db = uniqueName("e2eserve");
  const topic = `${db}.events`;
  const insightsTopic = `insights.${db}`;
  let af: AirflowInstance | undefined;
  let daemon: DaemonProcess | undefined;
  let serve: DaemonProcess | undefined;
  let obs: Observed;
  let failed = false;

  beforeAll(async () => {
    const t0 = Date.now();
    const venv = await ensureVenv(AF3.version);
    await withPg("postgres", (c) => c.query(`CREATE DATABASE ${db}`));
    af = await airflowInstance(AF3.version, "3", venv, db, "serve");
    af.env.AIRFLOW__CORE__DAGS_FOLDER = DAGS_SERVE_FOLDER;
    killOnExit(af);
    const tMigrate = await migrate(af);
    const env = daemonEnv(db, {
      EVENTSTREAM_SERVE_STUCK_DAGS: `es_serve_stuck:running=${STUCK_RUNNING}`,
      EVENTSTREAM_SERVE_INSIGHTS_SESSION_TIMEOUT_SECONDS: "6",
    });
    daemon = spawnDaemon(env);
    await daemon.waitForLog(/"msg":"streaming"/, 120_000);
    const port = await freePort();
    serve = spawnDaemon({ ...env, EVENTSTREAM_SERVE_PORT: String(port), EVENTSTREAM_SERVE_HOST: "127.0.0.1" }, ["serve"]);
    await serve.waitForLog(/serving the query API/, 120_000);
    // A group with no committed offset starts at the end of the events: the writer must own every
    // partition before Airflow writes anything (docs/insights.md).
    const owner = serve;
    await waitFor(
      "serve's insights writer to own every partition",
      async () =>
        owner.output.some(
          (l) => /insights: partitions taken/.test(l) && (JSON.parse(l) as { partitions: number[] }).partitions.length === 3,
        ),
      120_000,
      200,
    );
    obs = await scenario(af, `http://127.0.0.1:${port}`);
    console.log(
      `Airflow ${AF3.version} serve e2e: db migrate ${s(tMigrate)}, total ${s(Date.now() - t0)}; ` +
        `ready?wait= answered ${obs.ready.answeredAt - commitTimeOfUpstreamSuccess(obs)} ms after upstream's success commit ` +
        `(asked ${s(commitTimeOfUpstreamSuccess(obs) - obs.ready.askedAt)} before it)`,
    );
  });

  /** Airflow runs the DAGs; the test asks serve while they run, then reads everything back. */
  async function scenario(instance: AirflowInstance, base: string): Promise<Observed> {
    const { list, died } = await startAirflow(instance);
    const alive = <T>(p: Promise<T>) => Promise.race([p, died]);
    let stuck: StuckItem[];
    let ready: ReadyResult;
    let clearedRunId: string;
    try {
      await alive(airflowOk(instance, ["dags", "unpause", "--treat-dag-id-as-regex", "-y", "^es_serve_"], "unpause"));
      // es_serve_ready first: the ready question must be asked while its upstream still runs.
      await alive(airflowOk(instance, ["dags", "trigger", "es_serve_ready"], "trigger-es_serve_ready"));
      const triggers = Promise.all(
        SERVE_DAGS.filter((d) => d !== "es_serve_ready").map((d) => airflowOk(instance, ["dags", "trigger", d], `trigger-${d}`)),
      );
      // Both asked while the DAGs run: the ready answer may take long when Airflow retries upstream.
      [ready, stuck] = await alive(Promise.all([askReady(base), pollStuck(base), triggers]));
      await alive(waitForRunsFinished(instance.database, SERVE_DAGS, 0, 180_000));
      await alive(airflowOk(instance, ["tasks", "clear", "-y", "es_serve_clear"], "clear-es_serve_clear"));
      await alive(waitForRunsFinished(instance.database, ["es_serve_clear"], 1, 120_000));
      clearedRunId = await withPg(
        instance.database,
        async (c) => (await c.query<{ run_id: string }>("SELECT run_id FROM dag_run WHERE dag_id = 'es_serve_clear'")).rows[0]!.run_id,
      );
    } finally {
      await stopServices(instance, list);
    }
    return readBack(instance, base, stuck, ready, clearedRunId);
  }

  async function readBack(instance: AirflowInstance, base: string, stuck: StuckItem[], ready: ReadyResult, clearedRunId: string) {
    const lsn = await withPg(
      instance.database,
      async (c) => (await c.query<{ l: string }>("SELECT pg_current_wal_lsn()::text AS l")).rows[0]!.l,
    );
    const [hi, lo] = lsn.split("/");
    const end = (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
    await waitFor("the daemon to confirm the end of the runs", async () => ((await confirmedFlush(db, db)) ?? 0n) >= end, 60_000, 200);
    const runStates = new Map<string, string>();
    for (const r of (
      await withPg(db, (c) => c.query<{ dag_id: string; run_id: string; state: string }>("SELECT dag_id, run_id, state FROM dag_run"))
    ).rows)
      runStates.set(`${r.dag_id} ${r.run_id}`, r.state);
    // 4 runs completed, one of them twice (after its clear), 1 task_failed_final, task_stuck + task_unstuck, 1 run_cleared,
    // 2 task_cleared (the cleared run's two tasks).
    await waitFor("the insights (11 expected)", async () => (await readInsights(insightsTopic)).length >= 11, 60_000, 1_000).catch(
      () => undefined,
    );
    // Longer than a timer tick and a batch: a repeated or extra insight would be there by now.
    await sleep(4_000);
    const insights = await readInsights(insightsTopic);
    const runs = new Map<string, RunView>();
    for (const key of runStates.keys()) {
      const [dag, run] = key.split(" ") as [string, string];
      runs.set(key, await getJson<RunView>(base, `/dags/${dag}/runs/${encodeURIComponent(run)}`));
    }
    const history = await getJson<HistoryEntry[]>(base, `/dags/es_serve_clear/runs/${encodeURIComponent(clearedRunId)}/history`);
    return { stuck, ready, history, runs, insights, events: await readEvents(topic), counts: await dbCounts(db), runStates, clearedRunId };
  }

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failed = true;
  });

  afterAll(async () => {
    if (af) abort(af);
    for (const p of [serve, daemon]) {
      if (!p) continue;
      p.proc.kill("SIGTERM");
      await withTimeout(p.exited, 20_000);
    }
    await dropDatabase(db);
    if (failed || obs === undefined) {
      console.log(`Airflow ${AF3.version} serve e2e: Airflow home kept: ${af?.home}; topics ${topic}, ${insightsTopic}`);
      if (serve) console.log(`serve's log (last 40 lines):\n${serve.output.slice(-40).join("\n")}`);
    } else {
      if (af) rmSync(af.home, { recursive: true, force: true });
      await deleteTopics([topic, insightsTopic, `state.${db}`, `checkpoints.${db}`]);
    }
  }, 120_000);

  it("where are we stuck: the sleeping task shows in GET /stuck, and yields task_stuck then task_unstuck, once each", () => {
    const item = obs.stuck.find((i) => i.task_id === "sleepy")!;
    expect(item).toMatchObject({ kind: "task", dag_id: "es_serve_stuck", state: "running", threshold_seconds: STUCK_RUNNING });
    expect(item.for_seconds).toBeGreaterThanOrEqual(STUCK_RUNNING);
    const mine = obs.insights.filter((i) => i.dag_id === "es_serve_stuck" && (i.type === "task_stuck" || i.type === "task_unstuck"));
    expect(mine.map((i) => i.type)).toEqual(["task_stuck", "task_unstuck"]);
    const [stuck, unstuck] = mine;
    const sleepy = tiEvents(obs.events, "es_serve_stuck", "sleepy");
    // Try 1 unless Airflow lost a worker start under load and retried (the DAG has retries for that).
    const tryNumber = sleepy.find((e) => e.state === "success")!.try_number;
    expect(stuck).toMatchObject({ task_id: "sleepy", state: "running", threshold_seconds: STUCK_RUNNING, try_number: tryNumber });
    expect(unstuck).toMatchObject({ task_id: "sleepy", state: "success", try_number: tryNumber });
    expect(unstuck?.type === "task_unstuck" && unstuck.stuck_seconds).toBeGreaterThanOrEqual(STUCK_RUNNING);
    // task_stuck's cause is the event that put the task in running; task_unstuck's the one that took it out.
    expect(stuck!.caused_by.position).toBe(sleepy.filter((e) => e.state === "running").pop()!.source.position);
    expect(unstuck!.caused_by.position).toBe(sleepy.find((e) => e.state === "success")!.source.position);
  });

  it("a final failure: task_failed_final once, for the last try, none for the retried one (up_for_retry)", () => {
    const doomed = tiEvents(obs.events, "es_serve_retry", "doomed");
    const retried = doomed.find((e) => e.state === "up_for_retry");
    const final = doomed.filter((e) => e.state === "failed");
    expect(retried?.try_number, "the first try went up_for_retry").toBe(1);
    expect(
      final.map((e) => e.try_number),
      "one failed event, for try 2",
    ).toEqual([2]);
    const insights = obs.insights.filter((i) => i.type === "task_failed_final");
    expect(insights).toHaveLength(1);
    expect(insights[0]).toMatchObject({ dag_id: "es_serve_retry", task_id: "doomed", try_number: 2, max_tries: 1 });
    expect(insights[0]!.caused_by.position).toBe(final[0]!.source.position);
  });

  it("when can I start: ready?wait= asked before upstream succeeded answers ready=true right after its success commit", () => {
    const { ready } = obs;
    const committed = commitTimeOfUpstreamSuccess(obs);
    expect(ready.upstreamStateWhenAsked, "upstream had not succeeded when asked").not.toBe("success");
    expect(ready.askedAt, "asked before upstream's success committed").toBeLessThan(committed);
    expect(ready.answer).toMatchObject({ dag_id: "es_serve_ready", run_id: ready.runId, ready: true });
    expect(ready.answer.tasks).toEqual([{ task_id: "upstream", states: ["success"], ready: true }]);
    // Commit -> WAL -> daemon -> Kafka -> serve -> answer: seconds at most even on a loaded machine.
    expect(ready.answeredAt - committed).toBeLessThan(5_000);
  });

  it("can I undo and rerun: the clear shows in the run's history and yields run_cleared once, task_cleared per task", () => {
    const run = obs.clearedRunId;
    const cleared = obs.history.filter((h) => h.kind === "run_cleared");
    expect(cleared.map((h) => h.clear_number)).toEqual([1]);
    const after = obs.history.slice(obs.history.indexOf(cleared[0]!));
    for (const task of ["first", "second"]) {
      expect(
        after.some((h) => h.kind === "task_cleared" && h.task_id === task) || after.some((h) => h.task_id === task && h.to === null),
      ).toBe(true);
      expect(
        after.some((h) => h.task_id === task && h.to === "success"),
        `${task} ran again after the clear`,
      ).toBe(true);
    }
    const insights = obs.insights.filter((i) => i.type === "run_cleared");
    expect(insights).toHaveLength(1);
    expect(insights[0]).toMatchObject({ dag_id: "es_serve_clear", run_id: run, clear_number: 1, previous_state: "success" });
    const tasks = obs.insights.flatMap((i) =>
      i.type === "task_cleared" ? [`${i.dag_id} ${i.run_id} ${i.task_id} ${i.previous_state}`] : [],
    );
    expect(tasks.sort()).toEqual([`es_serve_clear ${run} first success`, `es_serve_clear ${run} second success`]);
    expect(obs.runs.get(`es_serve_clear ${run}`)).toMatchObject({ clear_number: 1, state: "success", complete: true });
    // The rerun, named alike by the run_completed after the clear and by the REST view.
    const completed = obs.insights.filter((i) => i.type === "run_completed" && i.run_id === run).pop();
    expect(completed?.type === "run_completed" && completed.summary.cleared).toEqual({ times: 1, rerun_tasks: ["first", "second"] });
    expect(obs.runs.get(`es_serve_clear ${run}`)?.summary?.cleared).toEqual({ times: 1, rerun_tasks: ["first", "second"] });
  });

  it("is it complete: one run_completed per run (two for the cleared one), each with the database's counts and state", () => {
    const completed = obs.insights.filter((i): i is Extract<InsightEvent, { type: "run_completed" }> => i.type === "run_completed");
    const perRun = new Map<string, number>();
    for (const i of completed) perRun.set(`${i.dag_id} ${i.run_id}`, (perRun.get(`${i.dag_id} ${i.run_id}`) ?? 0) + 1);
    const expected = new Map([...obs.runStates.keys()].map((k) => [k, k.startsWith("es_serve_clear ") ? 2 : 1]));
    expect(perRun).toEqual(expected);
    for (const [key, state] of obs.runStates) {
      const last = completed.filter((i) => `${i.dag_id} ${i.run_id}` === key).pop()!;
      expect(last.summary.state, key).toBe(state);
      expect(last.summary.counts, `${key}: summary counts vs task_instance`).toEqual(obs.counts.get(key));
      expect(obs.runs.get(key)?.summary?.counts, `${key}: GET run's summary counts vs task_instance`).toEqual(obs.counts.get(key));
    }
    expect(completed.find((i) => i.dag_id === "es_serve_retry")?.summary).toMatchObject({ failed_tasks: ["doomed"], retries: 1 });
    const ids = obs.insights.map((i) => i.insight_id);
    expect(new Set(ids).size, "insight ids unique").toBe(ids.length);
    expect(obs.insights).toHaveLength(11);
  });
});

/** Until GET /stuck lists es_serve_stuck's sleepy; what it listed then. */
async function pollStuck(base: string): Promise<StuckItem[]> {
  return waitFor(
    "es_serve_stuck's sleepy in GET /stuck",
    async () => {
      const items = await getJson<StuckItem[]>(base, "/stuck?dag=es_serve_stuck");
      return items.some((i) => i.task_id === "sleepy") && items;
    },
    180_000,
    500,
  );
}

/** Asks ready?task=upstream&wait=240 as soon as serve knows es_serve_ready's run. */
async function askReady(base: string): Promise<ReadyResult> {
  const run = await waitFor(
    "es_serve_ready's run in serve",
    async () => (await getJson<RunView[]>(base, "/dags/es_serve_ready/runs"))[0],
    120_000,
    100,
  );
  const view = await getJson<RunView>(base, `/dags/es_serve_ready/runs/${encodeURIComponent(run.run_id)}`);
  const upstreamStateWhenAsked = view.tasks.find((t) => t.task_id === "upstream")?.state ?? null;
  const askedAt = Date.now();
  const answer = await getJson<ReadyAnswer>(
    base,
    `/dags/es_serve_ready/runs/${encodeURIComponent(run.run_id)}/ready?task=upstream&wait=240`,
    250_000,
  );
  return { runId: run.run_id, upstreamStateWhenAsked, askedAt, answeredAt: Date.now(), answer };
}

function tiEvents(events: Consumed<StreamEvent>[], dag: string, task: string): TaskInstanceEvent[] {
  return events
    .map((m) => m.event)
    .filter((e): e is TaskInstanceEvent => e.type === "task_instance" && e.dag_id === dag && e.task_id === task);
}

function commitTimeOfUpstreamSuccess(o: Observed): number {
  const e = tiEvents(o.events, "es_serve_ready", "upstream").find((x) => x.state === "success");
  if (!e) throw new Error("no success event of es_serve_ready.upstream on the events topic");
  return Date.parse(e.source.commit_time);
}

function s(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
