import { spawn, execFile, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { services, sleep, waitFor, withPg, type AirflowMajor } from "../../support/harness.js";
import { selectedAirflowMajors } from "./selection.js";

/**
 * Real Airflow for the end-to-end tests: the cached virtualenv (scripts/airflow-venv.sh), the
 * environment every `airflow` command gets, and the processes (CLI commands, scheduler, triggerer,
 * dag-processor, api-server). Every process started here leads a session of its own and carries a
 * marker in its environment; `killInstance` finds them and all their descendants through /proc and
 * kills them, also when the test process exits on a failure.
 */

export const REPO = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
export const DAGS_FOLDER = join(REPO, "test/dags");

/**
 * The versions the project supports, from the schema fixtures (scripts/airflow-schemas.sh writes them),
 * limited to the majors EVENTSTREAM_TEST_AIRFLOW selects (selection.ts).
 */
export function airflowVersions(): { major: AirflowMajor; version: string }[] {
  const v = JSON.parse(readFileSync(join(REPO, "test/fixtures/airflow/versions.json"), "utf8")) as Record<string, unknown>;
  return selectedAirflowMajors(process.env.EVENTSTREAM_TEST_AIRFLOW).map((major) => {
    const version = v[major];
    if (typeof version !== "string") throw new Error(`test/fixtures/airflow/versions.json has no "${major}" entry`);
    return { major, version };
  });
}

/**
 * Installs the venv when missing (under a lock, see the script), returns its directory. `extra`
 * "kafka": the 3.x venv that also holds the Kafka and common-messaging providers (asset-events.test.ts).
 */
export async function ensureVenv(version: string, extra?: "kafka"): Promise<string> {
  const t0 = Date.now();
  const { stdout, stderr } = await promisify(execFile)(
    "bash",
    [join(REPO, "scripts/airflow-venv.sh"), version, ...(extra ? [extra] : [])],
    {
      encoding: "utf8",
      timeout: 20 * 60_000,
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  if (stderr.trim()) console.log(stderr.trim());
  const dir = stdout.trim().split("\n").pop()!;
  if (Date.now() - t0 > 5_000) console.log(`[airflow ${version}] venv ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return dir;
}

/** A port nobody listens on right now (for the 3.x api-server and the log servers). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

const MARK_VAR = "EVENTSTREAM_E2E_MARK";

export interface AirflowInstance {
  version: string;
  major: AirflowMajor;
  venv: string;
  database: string;
  /** AIRFLOW_HOME: airflow.cfg, task logs, and one log file per command/process started here. */
  home: string;
  env: Record<string, string>;
  /** Set in the environment of every process started for this instance. */
  mark: string;
  /** Session ids (= pids of the processes started here, each with setsid): see `instancePids`. */
  sessions: Set<number>;
  /** Set by `abort`: no further process is started (a hook that timed out may still be running). */
  aborted: boolean;
}

/** Kills everything the instance started and refuses to start more. */
export function abort(af: AirflowInstance): number {
  af.aborted = true;
  return killInstance(af);
}

/** The environment of every Airflow command: a temp AIRFLOW_HOME, our database, test/dags, LocalExecutor. */
export async function airflowInstance(
  version: string,
  major: AirflowMajor,
  venv: string,
  database: string,
  label: string,
): Promise<AirflowInstance> {
  const s = services();
  const home = mkdtempSync(join(tmpdir(), `eventstream-e2e-${version}-${label}-`));
  const mark = `${label}-${randomBytes(6).toString("hex")}`;
  const auth = `${encodeURIComponent(s.pg.user)}:${encodeURIComponent(s.pg.password)}`;
  const env: Record<string, string> = {
    PATH: `${venv}/bin:/usr/local/bin:/usr/bin:/bin`,
    HOME: process.env.HOME ?? home,
    LANG: "C.UTF-8",
    TMPDIR: process.env.TMPDIR ?? tmpdir(),
    PYTHONWARNINGS: "ignore",
    [MARK_VAR]: mark,
    AIRFLOW_HOME: home,
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN: `postgresql+psycopg2://${auth}@${s.pg.host}:${s.pg.port}/${database}`,
    AIRFLOW__CORE__LOAD_EXAMPLES: "False",
    AIRFLOW__CORE__DAGS_FOLDER: DAGS_FOLDER,
    AIRFLOW__CORE__UNIT_TEST_MODE: "False",
    AIRFLOW__CORE__EXECUTOR: "LocalExecutor",
    // Airflow's default: new DAGs are paused; the scheduler phase unpauses them explicitly.
    AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION: "True",
    AIRFLOW__CORE__ENABLE_XCOM_PICKLING: "False",
    // Secrets Airflow would otherwise generate into airflow.cfg on first use: the components start
    // at once, and when each writes its own cfg, a trigger's kwargs encrypted by the worker fail to
    // decrypt in the triggerer (observed on 2.11: InvalidToken / JSONDecodeError in load_triggers).
    AIRFLOW__CORE__FERNET_KEY: `${randomBytes(32).toString("base64url")}=`,
    AIRFLOW__WEBSERVER__SECRET_KEY: randomBytes(16).toString("hex"),
    // Parse test/dags quickly after start (2.x scheduler / 3.x dag-processor).
    AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL: "5",
    AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL: "5",
    AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL: "5",
    // Log servers of the scheduler (LocalExecutor) and triggerer: free ports, not 8793/8794, so that
    // concurrent runs on one machine do not collide.
    AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT: String(await freePort()),
    AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT: String(await freePort()),
  };
  if (major === "3") {
    // Workers and the triggerer talk to the execution API of an api-server.
    const port = await freePort();
    Object.assign(env, {
      AIRFLOW__API__HOST: "127.0.0.1",
      AIRFLOW__API__PORT: String(port),
      AIRFLOW__API__SECRET_KEY: `eventstream-e2e-${randomBytes(8).toString("hex")}`,
      AIRFLOW__API_AUTH__JWT_SECRET: `eventstream-e2e-${randomBytes(24).toString("hex")}`,
      AIRFLOW__CORE__EXECUTION_API_SERVER_URL: `http://127.0.0.1:${port}/execution/`,
    });
  }
  // Airflow writes a generated airflow.cfg into AIRFLOW_HOME on first use unless one exists; the
  // components start concurrently and would race on it (interleaved writes were observed). All
  // settings come from the environment above, so an empty file is the whole configuration.
  writeFileSync(join(home, "airflow.cfg"), "# eventstream e2e tests: every setting comes from AIRFLOW__* environment variables\n");
  return { version, major, venv, database, home, env, mark, sessions: new Set(), aborted: false };
}

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  log: string;
  ms: number;
}

/** Runs `airflow <args>` to completion (bounded); output goes to <home>/<logName>.log. */
export async function airflow(af: AirflowInstance, args: string[], logName: string, timeoutMs = 180_000): Promise<CommandResult> {
  const t0 = Date.now();
  const logFile = join(af.home, `${logName}.log`);
  const proc = startProcess(af, args, logFile);
  const timer = setTimeout(() => killGroup(proc, "SIGKILL"), timeoutMs);
  const [code, signal] = await exited(proc);
  clearTimeout(timer);
  const log = readFileSync(logFile, "utf8");
  if (signal === "SIGKILL")
    throw new Error(`airflow ${args.join(" ")} (${af.version}) did not finish within ${timeoutMs} ms; log ${logFile}:\n${tail(log)}`);
  return { code, signal, log, ms: Date.now() - t0 };
}

/** Like `airflow`, and fails unless the command exits 0. */
export async function airflowOk(af: AirflowInstance, args: string[], logName: string, timeoutMs?: number): Promise<CommandResult> {
  const r = await airflow(af, args, logName, timeoutMs);
  if (r.code !== 0)
    throw new Error(`airflow ${args.join(" ")} (${af.version}) exited ${r.code}; log ${join(af.home, `${logName}.log`)}:\n${tail(r.log)}`);
  return r;
}

export interface Service {
  name: string;
  proc: ChildProcess;
  logFile: string;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

/** Starts a long-running Airflow component (scheduler, triggerer, ...) in its own process group. */
export function startService(af: AirflowInstance, args: string[], name: string): Service {
  const logFile = join(af.home, `${name}.log`);
  const proc = startProcess(af, args, logFile);
  return { name, proc, logFile, exited: exited(proc) };
}

/**
 * Stops components the way an operator does (SIGTERM to each process group, then wait), SIGKILLs
 * what is still alive after `graceMs`, and finally SIGKILLs whatever of the instance is left
 * (e.g. LocalExecutor workers that ignore SIGTERM once their scheduler died, task processes in
 * process groups of their own).
 */
export async function stopServices(af: AirflowInstance, list: Service[], graceMs = 20_000): Promise<void> {
  for (const s of list) killGroup(s.proc, "SIGTERM");
  const deadline = Date.now() + graceMs;
  for (const s of list) {
    const left = deadline - Date.now();
    const done = await Promise.race([s.exited.then(() => true), sleep(Math.max(0, left)).then(() => false)]);
    if (!done) {
      console.log(`[airflow ${af.version}] ${s.name} still running ${graceMs} ms after SIGTERM: SIGKILL`);
      killGroup(s.proc, "SIGKILL");
      await s.exited;
    }
  }
  // Children of the group leaders may outlive them for a moment.
  await waitFor("Airflow processes to exit", async () => instancePids(af).length === 0, 10_000, 200).catch(() => undefined);
  const left = killInstance(af);
  if (left > 0) console.log(`[airflow ${af.version}] ${left} process(es) still alive after the components stopped: SIGKILL`);
}

/**
 * Live processes of the instance, found through /proc: those in a session we started (each process
 * is started with setsid, so its session id is its pid; children keep the session even when they
 * make their own process group or are re-parented to init), and those whose environment carries the
 * instance's marker (in case one calls setsid itself). The environment alone is not enough: Airflow's
 * setproctitle overwrites the memory /proc/<pid>/environ shows.
 */
export function instancePids(af: AirflowInstance): number[] {
  const needle = Buffer.from(`${MARK_VAR}=${af.mark}\0`);
  const pids: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      // /proc/<pid>/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses.
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const [state, , , session] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (state === "Z") continue; // exited, waiting to be reaped: nothing to kill
      if (af.sessions.has(Number(session)) || readFileSync(`/proc/${d}/environ`).includes(needle)) pids.push(Number(d));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

/** SIGKILLs every live process of the instance (synchronous: usable in an exit handler). */
export function killInstance(af: AirflowInstance): number {
  const pids = instancePids(af);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  return pids.length;
}

const live = new Set<AirflowInstance>();
let exitHookInstalled = false;
/**
 * Makes sure no process of this instance survives the test process, whatever happens to the test:
 * on exit, and on SIGINT/SIGTERM/SIGHUP (then the signal is re-raised so the process still dies of it).
 */
export function killOnExit(af: AirflowInstance): void {
  live.add(af);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    const killAll = () => {
      for (const a of live) killInstance(a);
    };
    process.on("exit", killAll);
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      process.once(sig, () => {
        killAll();
        process.kill(process.pid, sig);
      });
    }
  }
}

function startProcess(af: AirflowInstance, args: string[], logFile: string): ChildProcess {
  if (af.aborted) throw new Error(`airflow ${args.join(" ")} (${af.version}): not started, the test was torn down`);
  const fd = openSync(logFile, "a");
  try {
    // detached: setsid, so the process leads a session and a process group of its own; signals to
    // the group reach the component and its children, and the session finds the rest.
    const proc = spawn(join(af.venv, "bin/airflow"), args, { cwd: af.home, env: af.env, detached: true, stdio: ["ignore", fd, fd] });
    if (proc.pid !== undefined) af.sessions.add(proc.pid);
    return proc;
  } finally {
    closeSync(fd);
  }
}

function exited(proc: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  return new Promise((res) => {
    if (proc.exitCode !== null || proc.signalCode !== null) res([proc.exitCode, proc.signalCode]);
    else proc.once("exit", (code, signal) => res([code, signal]));
  });
}

function killGroup(proc: ChildProcess, signal: NodeJS.Signals): void {
  if (proc.pid === undefined) return;
  try {
    process.kill(-proc.pid, signal);
  } catch {
    // the group is gone
  }
}

export function tail(text: string, lines = 40): string {
  return text.split("\n").slice(-lines).join("\n");
}

export function logTail(file: string, lines = 40): string {
  return existsSync(file) ? tail(readFileSync(file, "utf8"), lines) : `(no ${file})`;
}

/** `airflow db migrate` into `database` (which must exist). */
export async function migrate(af: AirflowInstance): Promise<number> {
  return (await airflowOk(af, ["db", "migrate"], "db-migrate", 300_000)).ms;
}

/** Polls until the DAGs are serialized (parsed by the scheduler / dag-processor). */
export async function waitForSerialized(database: string, dagIds: string[], timeoutMs = 120_000): Promise<void> {
  await waitFor(
    `DAGs ${dagIds.join(", ")} serialized in ${database}`,
    () =>
      withPg(
        database,
        async (c) =>
          (await c.query<{ n: string }>("SELECT count(DISTINCT dag_id) AS n FROM serialized_dag WHERE dag_id = ANY($1)", [dagIds])).rows[0]!
            .n === String(dagIds.length),
      ),
    timeoutMs,
    500,
  );
}

/** Polls until the 3.x api-server answers its health endpoint. */
export async function waitForApiServer(af: AirflowInstance, timeoutMs = 120_000): Promise<void> {
  const url = `http://127.0.0.1:${af.env.AIRFLOW__API__PORT}/api/v2/monitor/health`;
  await waitFor(`the api-server at ${url}`, async () => (await fetch(url, { signal: AbortSignal.timeout(2_000) })).ok, timeoutMs, 500);
}

/**
 * Airflow 3.x's api-server, dag-processor, scheduler and triggerer for `af`; resolves once `dags` are
 * serialized and the api-server answers (a task queued while it still starts fails on its first
 * call: a ReadTimeout was seen). `died` rejects when a component exits early: race it against every wait.
 */
export async function startComponents(af: AirflowInstance, dags: readonly string[]): Promise<{ list: Service[]; died: Promise<never> }> {
  const list = [
    startService(af, ["api-server", "--host", "127.0.0.1", "--port", af.env.AIRFLOW__API__PORT!], "api-server"),
    startService(af, ["dag-processor"], "dag-processor"),
    startService(af, ["scheduler"], "scheduler"),
    startService(af, ["triggerer"], "triggerer"),
  ];
  const died = Promise.race(
    list.map((s) =>
      s.exited.then(([code, sig]): never => {
        throw new Error(`airflow ${s.name} (${af.version}) exited early (${code ?? sig}):\n${logTail(s.logFile)}`);
      }),
    ),
  );
  died.catch(() => undefined);
  await Promise.race([waitForSerialized(af.database, [...dags], 180_000), died]);
  await Promise.race([waitForApiServer(af, 180_000), died]);
  return { list, died };
}
