import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../scripts/free-port.js";
import {
  createDatabase,
  daemonEnv,
  dropDatabase,
  spawnDaemon,
  uniqueName,
  waitFor,
  withPg,
  type DaemonProcess,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateDagRun, updateTi } from "../support/airflow-rows.js";

/**
 * `airflow-eventstream serve` against a real daemon, PostgreSQL and Kafka: Airflow rows written to
 * the database, the daemon publishing them, serve (its own process) answering from the topics.
 */

const STREAMING = /"msg":"streaming"/;
const db = uniqueName("serve");
const DAG = "etl";
let daemon: DaemonProcess;
let serve: DaemonProcess;
let base = "";
let env: Record<string, string>;
const ids = new Map<string, number>();

async function startServe(): Promise<void> {
  serve = spawnDaemon(env, ["serve"]);
  await waitFor(
    "serve's /readyz",
    async () => {
      const r = await fetch(`${base}/readyz`).catch(() => null);
      return r?.status === 200 ? true : null;
    },
    60_000,
  );
}

async function stopServe(): Promise<void> {
  serve.proc.kill("SIGTERM");
  expect(await serve.exited).toBe(0);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are checked field by field below
async function get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const r = await fetch(`${base}${path}`, { headers });
  return { status: r.status, body: await r.json() };
}

const ti = (task: string, run: string) => ({ dag_id: DAG, task_id: task, run_id: run });

beforeAll(async () => {
  await createDatabase(db, "3");
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  env = daemonEnv(db, {
    EVENTSTREAM_SERVE_PORT: String(port),
    EVENTSTREAM_SERVE_HOST: "127.0.0.1",
    NODE_OPTIONS: "--max-old-space-size=256",
  });
  daemon = spawnDaemon(env);
  await daemon.waitForLog(STREAMING, 60_000);
  // Written before serve starts: it learns r1 from the current-state topic.
  await withPg(db, async (c) => {
    ids.set("r1", await insertDagRun(c, "3", DAG, "r1", "queued"));
    for (const t of ["a", "b"]) await insertTi(c, "3", ti(t, "r1"));
    await updateDagRun(c, ids.get("r1")!, { state: "running", start_date: new Date() });
  });
  await startServe();
});

afterAll(async () => {
  serve?.proc.kill("SIGKILL");
  daemon?.proc.kill("SIGTERM");
  await daemon?.exited;
  await dropDatabase(db);
});

describe("serve", () => {
  it("answers a run through its states, ready?wait= the moment the task succeeds, then complete with counts and history", async () => {
    await waitFor("r1 in the view", async () => ((await get(`/dags/${DAG}/runs/r1`)).body.tasks?.length === 2 ? true : null), 20_000);
    const waiting = get(`/dags/${DAG}/runs/r1/ready?task=a&wait=30`);
    let committed = 0;
    await withPg(db, async (c) => {
      await updateTi(c, ti("a", "r1"), { state: "running", try_number: 1 });
      await new Promise((r) => setTimeout(r, 300));
      await updateTi(c, ti("a", "r1"), { state: "success" });
      committed = Date.now();
    });
    const answer = await waiting;
    const latencyMs = Date.now() - committed;
    process.stdout.write(`serve: ready?wait= answered ${latencyMs} ms after the commit\n`);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ ready: true, run_state: "running", tasks: [{ task_id: "a", states: ["success"], ready: true }] });
    expect(answer.body.waited_seconds).toBeGreaterThan(0.2);
    expect(latencyMs).toBeLessThan(5_000);

    await withPg(db, async (c) => {
      await updateTi(c, ti("b", "r1"), { state: "running", try_number: 1 });
      await updateTi(c, ti("b", "r1"), { state: "success" });
      await updateDagRun(c, ids.get("r1")!, { state: "success", end_date: new Date() });
    });
    const run = await waitFor(
      "r1 complete",
      async () => {
        const r = await get(`/dags/${DAG}/runs/r1`);
        return r.body.complete === true ? r.body : null;
      },
      20_000,
    );
    expect(run.state).toBe("success");
    expect(run.summary).toMatchObject({ state: "success", counts: { success: 2 }, retries: 0, failed_tasks: [] });
    expect((await get(`/dags/${DAG}/ready?logical_date=${encodeURIComponent(run.logical_date)}`)).body).toMatchObject({
      run_id: "r1",
      ready: true,
    });
    const history = (await get(`/dags/${DAG}/runs/r1/history`)).body as { kind: string; task_id: string | null; to: string | null }[];
    expect(history.filter((h) => h.task_id === "a").map((h) => `${h.kind}:${h.to}`)).toEqual([
      "task_try:running",
      "task_state:running",
      "task_state:success",
    ]);
    expect(history.at(-1)).toMatchObject({ kind: "run_state", to: "success" });
    const dags = (await get("/dags")).body;
    expect(dags).toEqual([expect.objectContaining({ dag_id: DAG, recent_runs: 1 })]);
  });

  it("404 for an unknown DAG or run, 400 naming a malformed parameter", async () => {
    expect(await get(`/dags/${DAG}/runs/nope`)).toMatchObject({ status: 404, body: { error: expect.stringContaining('"nope"') } });
    expect((await get(`/dags/nodag/runs`)).status).toBe(404);
    expect((await get(`/dags/${DAG}/runs/nope/history`)).status).toBe(404);
    expect(await get(`/dags/${DAG}/runs?limit=abc`)).toMatchObject({ status: 400, body: { parameter: "limit" } });
    expect(await get(`/dags/${DAG}/runs/r1/ready?wait=301`)).toMatchObject({ status: 400, body: { parameter: "wait" } });
    expect(await get(`/dags/${DAG}/ready?logical_date=yesterday`)).toMatchObject({ status: 400, body: { parameter: "logical_date" } });
    expect(await get(`/dags/${"x".repeat(300)}/runs`)).toMatchObject({ status: 400, body: { parameter: "dag_id" } });
    expect(await get(`/events`, { "last-event-id": "garbage" })).toMatchObject({ status: 400, body: { parameter: "Last-Event-ID" } });
    const doc = (await get("/openapi.json")).body;
    expect(Object.keys(doc.paths)).toContain("/dags/{dag_id}/runs/{run_id}/ready");
  });

  it("streams events as SSE and resumes after Last-Event-ID", async () => {
    const first = await sse(`/events?dag=${DAG}`, {}, 3, async () => {
      await withPg(db, async (c) => {
        ids.set("r2", await insertDagRun(c, "3", DAG, "r2", "queued"));
        await insertTi(c, "3", ti("a", "r2"));
        await updateTi(c, ti("a", "r2"), { state: "queued", try_number: 1 });
      });
    });
    expect(first.map((e) => e.event)).toEqual(["dag_run", "task_instance", "task_instance"]);
    for (const e of first) expect(JSON.parse(e.data).source.position).toBe(e.id);
    // Resume after the first: the two after it again, from the service's buffer.
    const resumed = await sse(`/events?dag=${DAG}`, { "last-event-id": first[0]!.id }, 2, async () => undefined);
    expect(resumed.map((e) => e.id)).toEqual([first[1]!.id, first[2]!.id]);
  });

  it("rebuilds the view from the current-state topic after a restart", async () => {
    await stopServe();
    await startServe();
    // Built from the state topic (not by reading the event topics from their beginning): its entries are the rows.
    const boot = JSON.parse(await serve.waitForLog(/view bootstrapped from the current-state topic/)) as { entries: number };
    expect(boot.entries).toBe(5);
    const run = (await get(`/dags/${DAG}/runs/r1`)).body;
    expect(run).toMatchObject({ state: "success", complete: true, summary: { counts: { success: 2 } } });
    expect((await get(`/dags/${DAG}/runs/r2`)).body.tasks).toEqual([expect.objectContaining({ task_id: "a", state: "queued" })]);
    await stopServe();
  });
});

interface SseEvent {
  id: string;
  event: string;
  data: string;
}

/** Opens the stream, runs `act`, and reads until `count` events came (or 20 s passed). */
async function sse(path: string, headers: Record<string, string>, count: number, act: () => Promise<void>): Promise<SseEvent[]> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), 20_000);
  const r = await fetch(`${base}${path}`, { headers, signal: ctrl.signal });
  expect(r.status).toBe(200);
  const reader = r.body!.getReader();
  const out: SseEvent[] = [];
  let text = "";
  await act();
  try {
    while (out.length < count) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
      let end;
      while ((end = text.indexOf("\n\n")) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        const f = Object.fromEntries(block.split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trimStart()]));
        if (f.id !== undefined) out.push({ id: f.id, event: f.event ?? "", data: f.data ?? "" });
      }
    }
  } finally {
    clearTimeout(timer);
    ctrl.abort();
  }
  return out;
}
