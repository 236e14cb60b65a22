import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
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
 * schemathesis against `serve`'s own OpenAPI document, with a real daemon, PostgreSQL and Kafka
 * behind it and a few runs in the view (so generated ids sometimes hit, mostly miss): no 5xx, every
 * answer in its declared status, content type and schema. Then serve must still answer.
 */

const db = uniqueName("serve_fuzz");
const DAG = "fuzz_dag";
/** Per operation: enough for the coverage phase's boundary cases plus some random ones, within ~30 s on a busy machine. */
const MAX_EXAMPLES = 30;
const SEED = 20261203;
let daemon: DaemonProcess;
let serve: DaemonProcess;
let base = "";
let work = "";

beforeAll(async () => {
  await createDatabase(db, "3");
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = daemonEnv(db, { EVENTSTREAM_SERVE_PORT: String(port), EVENTSTREAM_SERVE_HOST: "127.0.0.1", LOG_LEVEL: "warn" });
  daemon = spawnDaemon(env);
  await waitFor(
    "the daemon's slot",
    async () =>
      (await withPg(
        db,
        async (c) => (await c.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active", [db])).rowCount,
      )) === 1 || null,
    60_000,
  );
  await withPg(db, async (c) => {
    const done = await insertDagRun(c, "3", DAG, "done", "running");
    const key = { dag_id: DAG, task_id: "extract", run_id: "done" };
    await insertTi(c, "3", key);
    await updateTi(c, key, { state: "failed", try_number: 1 });
    await updateDagRun(c, done, { state: "failed", end_date: new Date() });
    await insertDagRun(c, "3", DAG, "active", "running");
    await insertTi(c, "3", { dag_id: DAG, task_id: "extract", run_id: "active" });
  });
  serve = spawnDaemon(env, ["serve"]);
  await waitFor("serve's /readyz", async () => ((await fetch(`${base}/readyz`).catch(() => null))?.status === 200 ? true : null), 60_000);
  await waitFor(
    "both runs in the view",
    async () => ((await (await fetch(`${base}/dags/${DAG}/runs`)).json()) as unknown[]).length === 2 || null,
    20_000,
  );
  work = mkdtempSync(path.join(os.tmpdir(), "serve-fuzz-"));
}, 120_000);

afterAll(async () => {
  serve?.proc.kill("SIGKILL");
  daemon?.proc.kill("SIGTERM");
  await daemon?.exited;
  await dropDatabase(db);
  if (work !== "") rmSync(work, { recursive: true, force: true });
});

/** Runs `st` to its end; its output is kept for the failure message. */
function runSchemathesis(st: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const proc = spawn(st, args, {
      cwd: work,
      env: { ...process.env, NO_COLOR: "1", SCHEMATHESIS_HOOKS: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    proc.stdout.on("data", (b: Buffer) => (output += b.toString("utf8")));
    proc.stderr.on("data", (b: Buffer) => (output += b.toString("utf8")));
    proc.on("exit", (code) => resolve({ code, output }));
  });
}

describe("serve under schemathesis", () => {
  it("finds no server error and no answer outside the OpenAPI document, and serve is healthy afterwards", async () => {
    const st = execFileSync("bash", ["scripts/schemathesis.sh"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
    // ready's wait= is a long poll of up to 300 s on a run that never turns ready: fixed at 0 so each
    // case answers at once (long polls are tested in serve.test.ts). /events is a stream that never ends.
    writeFileSync(
      path.join(work, "schemathesis.toml"),
      ["[[operations]]", 'include-path-regex = "/ready$"', 'parameters = { "query.wait" = 0 }', ""].join("\n"),
    );
    const started = performance.now();
    const { code, output } = await runSchemathesis(st, [
      "--config-file",
      path.join(work, "schemathesis.toml"),
      "run",
      `${base}/openapi.json`,
      "--checks",
      "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
      "--max-examples",
      String(MAX_EXAMPLES),
      "--seed",
      String(SEED),
      "--generation-database",
      "none",
      "--exclude-path",
      "/events",
      "--request-timeout",
      "10",
      "--workers",
      "2",
      "--no-color",
    ]);
    const seconds = (performance.now() - started) / 1000;
    // A failing case's curl line can be 100 KB of percent-encoding: lines are cut for the message.
    const shown = output
      .split("\n")
      .map((l) => (l.length > 300 ? `${l.slice(0, 300)}... (${l.length} characters)` : l))
      .join("\n");
    process.stdout.write(`serve-fuzz: schemathesis ran ${seconds.toFixed(1)} s\n${shown.split("\n").slice(-22).join("\n")}\n`);
    expect(code, shown).toBe(0);
    // It did test: every operation, and cases in the hundreds (a schema it could not load would test none).
    expect(output).toMatch(/Tested: 7\b/);
    expect(Number(/(\d+) generated/.exec(output)?.[1] ?? 0)).toBeGreaterThan(300);

    const serverErrors = serve.output.filter((l) => /"msg":"request failed"/.test(l));
    expect(serverErrors, serverErrors.join("\n")).toEqual([]);
    expect(serve.proc.exitCode).toBeNull();
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const run = (await (await fetch(`${base}/dags/${DAG}/runs/done`)).json()) as {
      complete: boolean;
      summary: { counts: Record<string, number> };
    };
    expect(run).toMatchObject({ complete: true, summary: { counts: { failed: 1 } } });
  }, 150_000);
});
