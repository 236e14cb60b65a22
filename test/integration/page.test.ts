import { mkdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import { freePort } from "../../scripts/free-port.js";
import { insertDagRun, insertTi, updateDagRun, updateTi } from "../support/airflow-rows.js";
import { launchChromium, type Browser } from "../support/browser.js";
import {
  createDatabase,
  daemonEnv,
  dropDatabase,
  pgClient,
  spawnDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  type DaemonProcess,
} from "../support/harness.js";

/**
 * The live page (src/serve/page/, docs/serve-page.md) in Debian's Chromium, against the real chain:
 * rows written as Airflow writes them -> the daemon -> Kafka -> `airflow-eventstream serve` -> SSE ->
 * the page. The cells must change state without a reload, a task left queued past its threshold must
 * be marked stuck, and a finished run must show its summary.
 *
 * UPDATE_SCREENSHOTS=1 writes the screenshots the docs show (docs/img/); without it nothing in the
 * checkout changes.
 */

const DB = uniqueName("page");
const DAG = "nightly_etl";
const WIDE = "wide_dag";
const TASKS = ["extract", "transform", "load"];
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === "1";
// A queued task is stuck after this many seconds here (600 s by default).
const QUEUED_THRESHOLD_S = 3;

let daemon: DaemonProcess;
let serve: DaemonProcess;
let base: string;
let browser: Browser;
const db = pgClient(DB);

beforeAll(async () => {
  await createDatabase(DB, "3");
  await db.connect();
  const env = daemonEnv(DB);
  daemon = spawnDaemon(env);
  await waitForStreaming(DB);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  serve = spawnDaemon(
    {
      ...env,
      EVENTSTREAM_SERVE_PORT: String(port),
      EVENTSTREAM_SERVE_HOST: "127.0.0.1",
      EVENTSTREAM_SERVE_STUCK_SECONDS: `queued=${QUEUED_THRESHOLD_S}`,
    },
    ["serve"],
  );
  await waitFor(`serve ready on ${base}`, async () => (await fetch(`${base}/readyz`)).ok, 60_000, 250);
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  serve?.proc.kill("SIGTERM");
  daemon?.proc.kill("SIGTERM");
  await Promise.all([serve?.exited, daemon?.exited]);
  await db.end();
  await dropDatabase(DB);
});

/** A run with its task instances inserted as the scheduler does (state None); returns dag_run.id. */
async function triggerRun(dagId: string, runId: string, tasks: string[]): Promise<number> {
  await db.query("BEGIN");
  const id = await insertDagRun(db, "3", dagId, runId, "queued");
  for (const task_id of tasks) await insertTi(db, "3", { dag_id: dagId, task_id, run_id: runId });
  await db.query("COMMIT");
  return id;
}

async function moveTi(runId: string, taskId: string, state: string): Promise<void> {
  const set: Record<string, unknown> = { state };
  if (state === "running") Object.assign(set, { try_number: 1, start_date: new Date() });
  if (state === "success" || state === "failed") Object.assign(set, { end_date: new Date(), duration: 1.5 });
  await updateTi(db, { dag_id: DAG, task_id: taskId, run_id: runId }, set);
}

// The page's SSE stream is open (app.js sets it on EventSource's open).
const LIVE = `document.getElementById("connection").dataset.state === "live"`;

/** Until serve's GET /dags lists `dagId`. */
async function waitForListed(dagId: string): Promise<void> {
  await waitFor(
    `${dagId} in GET /dags`,
    async () => ((await (await fetch(`${base}/dags`)).json()) as { dag_id: string }[]).some((d) => d.dag_id === dagId),
    30_000,
    250,
  );
}

const cell = (page: Page, runId: string, taskId: string) => page.locator(`#grid td[data-run-id="${runId}"][data-task-id="${taskId}"]`);

async function expectCellState(page: Page, runId: string, taskId: string, state: string): Promise<void> {
  const c = cell(page, runId, taskId);
  await c.waitFor({ timeout: 20_000 });
  await expect.poll(() => c.getAttribute("data-state"), { timeout: 20_000, interval: 100 }).toBe(state);
  // Not by colour alone: the state is in the cell's words too.
  expect(await c.getAttribute("aria-label")).toContain(state);
}

/** The page from the top down to the bottom of `until` (default: all of it). */
async function screenshot(page: Page, name: string, until?: string): Promise<void> {
  if (!SCREENSHOTS) return;
  mkdirSync("docs/img", { recursive: true });
  const box = until ? await page.locator(until).boundingBox() : null;
  const width = page.viewportSize()!.width;
  await page.screenshot({
    path: `docs/img/${name}`,
    fullPage: true,
    ...(box ? { clip: { x: 0, y: 0, width, height: box.y + box.height + 16 } } : {}),
  });
}

describe("the live page", () => {
  it("follows a run live: cells change state without a reload, a queued task is stuck, the finished run shows its summary", async () => {
    // A first run, finished before the page opens: the DAG is then in /dags, and its summary is there from the start.
    const r1 = "scheduled__2026-12-01T00:00:00+00:00";
    const r1Id = await triggerRun(DAG, r1, TASKS);
    await updateDagRun(db, r1Id, { state: "running", start_date: new Date(Date.now() - 5000) });
    for (const t of TASKS) await moveTi(r1, t, "success");
    await updateDagRun(db, r1Id, { state: "success", end_date: new Date() });
    await waitForListed(DAG);

    const page = await browser.context.newPage();
    // Small enough that the screenshots show the grid and not mostly white space.
    await page.setViewportSize({ width: 900, height: 480 });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    let navigations = 0;
    page.on("framenavigated", (f) => {
      if (f === page.mainFrame()) navigations++;
    });
    await page.goto(`${base}/?stuck_poll_ms=500`);
    // The keyboard only: "/" to the search, type, Enter opens the first match.
    await page.keyboard.press("/");
    await page.keyboard.type(DAG.slice(0, 7));
    await page.keyboard.press("Enter");
    await expectCellState(page, r1, "load", "success");
    const summary1 = page.locator(`.run-summary[data-run-id="${r1}"]`);
    await summary1.waitFor({ timeout: 20_000 });
    expect(await summary1.locator('[data-field="tasks"]').textContent()).toBe("3 success");
    await page.waitForFunction(LIVE, null, { timeout: 20_000 });
    const navigationsBefore = navigations;

    const r2 = "manual__2026-12-02T00:00:00+00:00";
    const r2Id = await triggerRun(DAG, r2, TASKS);
    for (const t of TASKS) await expectCellState(page, r2, t, "none");
    await updateDagRun(db, r2Id, { state: "running", start_date: new Date() });
    for (const s of ["scheduled", "queued", "running", "success"]) {
      await moveTi(r2, "extract", s);
      await expectCellState(page, r2, "extract", s);
    }
    await moveTi(r2, "transform", "scheduled");
    await moveTi(r2, "transform", "queued");
    await expectCellState(page, r2, "transform", "queued");
    // Left queued past its threshold: marked on the grid and listed, in words.
    await cell(page, r2, "transform").and(page.locator('[data-stuck="true"]')).waitFor({ timeout: 30_000 });
    expect(await cell(page, r2, "transform").getAttribute("title")).toMatch(/stuck: .*queued/);
    expect(await page.locator(`#stuck-list li[data-run-id="${r2}"][data-task-id="transform"]`).count()).toBe(1);
    await screenshot(page, "serve-grid.png");

    for (const s of ["running", "success"]) {
      await moveTi(r2, "transform", s);
      await expectCellState(page, r2, "transform", s);
    }
    await expect.poll(() => cell(page, r2, "transform").getAttribute("data-stuck"), { timeout: 20_000 }).toBeNull();
    await moveTi(r2, "load", "queued");
    await moveTi(r2, "load", "running");
    await moveTi(r2, "load", "failed");
    await expectCellState(page, r2, "load", "failed");
    await updateDagRun(db, r2Id, { state: "failed", end_date: new Date() });
    const summary2 = page.locator(`.run-summary[data-run-id="${r2}"]`);
    await summary2.waitFor({ timeout: 20_000 });
    expect(await summary2.getAttribute("data-run-state")).toBe("failed");
    expect(await summary2.locator('[data-field="tasks"]').textContent()).toBe("2 success, 1 failed");
    expect(await summary2.locator('[data-field="failed"]').textContent()).toBe("load");
    expect(await page.locator(`#grid button.run[data-run-id="${r2}"]`).getAttribute("data-state")).toBe("failed");
    await screenshot(page, "serve-summary.png");

    expect(navigations, "the page reloaded or navigated while following the run").toBe(navigationsBefore);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("Enter typed before the DAG list has loaded opens the first match once it has", async () => {
    const dag = "late_list_dag";
    const run = "manual__2026-12-03T00:00:00+00:00";
    await triggerRun(dag, run, ["only"]);
    await waitForListed(dag);
    const page = await browser.context.newPage();
    // The page's first GET /dags held back until after Enter: the search has nothing to match yet.
    let held = 0;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    await page.route(/\/dags$/, async (route) => {
      if (held++ === 0) await released;
      await route.continue();
    });
    await page.goto(`${base}/`);
    await page.keyboard.press("/");
    await page.keyboard.type(dag.slice(0, 9));
    await page.keyboard.press("Enter");
    await expect.poll(() => held, { timeout: 10_000 }).toBe(1);
    expect(await page.locator("#grid td").count(), "nothing opened before the list came").toBe(0);
    release();
    await expectCellState(page, run, "only", "none");
    expect(page.url()).toContain(`#dag=${dag}`);
    await page.close();
  });

  it("renders 50 runs x 50 tasks and applies a transaction of 50 changes in a few frames, not one per event", async () => {
    const tasks = Array.from({ length: 50 }, (_, i) => `task_${String(i).padStart(2, "0")}`);
    const runs = Array.from(
      { length: 50 },
      (_, i) => `scheduled__2026-10-${String(1 + (i % 28)).padStart(2, "0")}T${String(Math.floor(i / 28)).padStart(2, "0")}:00:00`,
    );
    const ids: number[] = [];
    for (const r of runs) ids.push(await triggerRun(WIDE, r, tasks));
    await waitFor(
      `${WIDE}'s 50 runs in GET /dags`,
      async () =>
        ((await (await fetch(`${base}/dags`)).json()) as { dag_id: string; active_runs: number }[]).some(
          (d) => d.dag_id === WIDE && d.active_runs === 50,
        ),
      60_000,
      250,
    );
    // A history as a grid shows one: 48 finished runs with a few failures, retries and skips, one in
    // progress, and the newest not started; the page then opens on every state colour at once.
    const done = runs.slice(0, 48);
    await db.query(
      `UPDATE task_instance SET state = CASE
         WHEN abs(hashtext(run_id || task_id)) % 331 = 0 THEN 'failed'
         WHEN abs(hashtext(run_id || task_id)) % 317 = 0 THEN 'upstream_failed'
         WHEN abs(hashtext(run_id || task_id)) % 23 = 0 THEN 'skipped'
         ELSE 'success' END
       WHERE dag_id = $1 AND run_id = ANY($2)`,
      [WIDE, done],
    );
    await db.query(
      `UPDATE dag_run d SET state = CASE WHEN EXISTS (SELECT 1 FROM task_instance t WHERE t.dag_id = d.dag_id AND t.run_id = d.run_id
         AND t.state IN ('failed', 'upstream_failed')) THEN 'failed' ELSE 'success' END,
         start_date = now() - interval '2 hours', end_date = now() - interval '1 hour' + (abs(hashtext(run_id)) % 900) * interval '1 second'
       WHERE dag_id = $1 AND run_id = ANY($2)`,
      [WIDE, done],
    );
    await db.query(
      `UPDATE task_instance SET state = CASE WHEN task_id < 'task_30' THEN 'success' WHEN task_id < 'task_34' THEN 'running'
         WHEN task_id < 'task_36' THEN 'up_for_retry' WHEN task_id < 'task_40' THEN 'queued' WHEN task_id < 'task_45' THEN 'scheduled' END
       WHERE dag_id = $1 AND run_id = $2`,
      [WIDE, runs[48]],
    );
    await updateDagRun(db, ids[48]!, { state: "running", start_date: new Date() });
    await waitFor(
      `${WIDE}'s run ${runs[48]} in progress in serve`,
      async () => {
        const res = await fetch(`${base}/dags/${WIDE}/runs/${encodeURIComponent(runs[48]!)}`);
        const run = res.ok ? ((await res.json()) as { state: string; tasks: { state: string | null }[] }) : null;
        return run?.state === "running" && run.tasks.filter((t) => t.state === "queued").length === 4;
      },
      60_000,
      250,
    );
    const page = await browser.context.newPage();
    await page.goto(`${base}/#dag=${WIDE}`);
    await expect.poll(() => page.locator("#grid td").count(), { timeout: 30_000 }).toBe(2500);
    await page.waitForFunction(LIVE, null, { timeout: 20_000 });
    const last = runs.at(-1)!;
    await db.query(`UPDATE task_instance SET state = 'running' WHERE dag_id = $1 AND run_id = $2`, [WIDE, last]);
    await expect.poll(() => page.locator(`#grid td[data-run-id="${last}"][data-state="running"]`).count(), { timeout: 30_000 }).toBe(50);
    const frames = await page.evaluate<{ ms: number; events: number; rebuilt: boolean }[]>(
      `performance.getEntriesByName("eventstream:frame").map((e) => ({ ms: e.duration, ...e.detail }))`,
    );
    await screenshot(page, "serve-grid-50x50.png", "#stuck-list");
    const rebuild = frames.filter((f) => f.rebuilt).map((f) => f.ms);
    const batches = frames.filter((f) => !f.rebuilt && f.events > 0);
    console.log(
      `50x50 grid: full build ${Math.max(...rebuild).toFixed(1)} ms; batches ${JSON.stringify(batches.map((b) => [b.events, +b.ms.toFixed(1)]))}`,
    );
    // 50 changes of one transaction come as one SSE burst: a handful of frames at most, not one per event.
    expect(batches.reduce((n, b) => n + b.events, 0)).toBeGreaterThanOrEqual(50);
    expect(batches.length).toBeLessThan(25);
    await page.close();
  });
});
