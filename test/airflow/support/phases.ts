import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Kafka, logLevel } from "kafkajs";
import { StreamEvent } from "../../../src/airflow/events.js";
import { confirmedFlush, consume, daemonConfig, services, startDaemon, waitFor, withPg, type Consumed } from "../../support/harness.js";
import {
  airflow,
  airflowOk,
  logTail,
  startService,
  stopServices,
  waitForApiServer,
  waitForSerialized,
  type AirflowInstance,
  type CommandResult,
  type Service,
} from "./airflow.js";
import { publishedTables, readAudit, type AuditRow } from "./audit.js";
import { dedupe, type RunRow, type TiRow } from "./sequences.js";

/**
 * The two ways the suite runs DAGs, each against its own database with its own daemon and topic:
 * - "dags-test": `airflow dags test <dag_id> <date>` for each DAG, one after the other (what a DAG
 *   author runs; the task runs in the CLI's process, a deferral's trigger in line);
 * - "scheduler": the real components (2.x scheduler + triggerer; 3.x api-server, dag-processor,
 *   scheduler, triggerer), LocalExecutor, `airflow dags unpause` + `airflow dags trigger`, then
 *   `airflow tasks clear` on es_clear and its rerun; stopped with SIGTERM once every run finished.
 */

export type Mode = "dags-test" | "scheduler";

/** Every DAG in test/dags. */
export const ALL_DAGS = [
  "es_chain",
  "es_retry",
  "es_skip",
  "es_upstream_failed",
  "es_mapped",
  "es_deferrable",
  "es_clear",
  "es_notify",
] as const;
export type DagId = (typeof ALL_DAGS)[number];

/** es_clear needs a scheduler to rerun after the clear (a second `dags test` would delete the run and make a new one). */
export const DAGS: Record<Mode, readonly DagId[]> = {
  "dags-test": ["es_chain", "es_retry", "es_skip", "es_upstream_failed", "es_mapped", "es_deferrable", "es_notify"],
  scheduler: ALL_DAGS,
};

/** The logical date given to `airflow dags test`. */
export const DAGS_TEST_DATE = "2026-01-15";

export interface XComRow {
  dag_id: string;
  task_id: string;
  run_id: string;
  map_index: number;
  timestamp: string;
}

export interface PhaseResult {
  mode: Mode;
  af: AirflowInstance;
  topic: string;
  /** Every message of the topic, in partition order (re-deliveries included). */
  consumed: Consumed[];
  /** `consumed` parsed, one for one. */
  raw: StreamEvent[];
  /** What a consumer processes: `raw` without re-deliveries (support/sequences.ts `dedupe`). */
  events: StreamEvent[];
  redelivered: number;
  /** Streaming sessions the daemon went through: more than 1 after a Kafka/PostgreSQL blip. */
  sessions: number;
  tis: TiRow[];
  runs: RunRow[];
  xcoms: XComRow[];
  /** Every row version of task_instance and dag_run Airflow committed (support/audit.ts). */
  audit: AuditRow[];
  /** The tables in the daemon's publication, schema-qualified. */
  published: string[];
  /**
   * Scheduler mode: why Airflow did not finish its runs in time, or null. Under heavy load Airflow 3
   * can leave a task `running` whose worker died until its heartbeat times out (minutes); the suite
   * then stops Airflow and still checks the stream against everything Airflow committed.
   */
  unfinished: string | null;
  /** `airflow dags test` results per DAG (dags-test mode). */
  commands: Partial<Record<DagId, CommandResult>>;
  timings: Record<string, number>;
  daemonLog: string[];
}

/** Starts the daemon on the phase's database, runs the DAGs, stops Airflow, reads everything back. */
export async function runPhase(mode: Mode, af: AirflowInstance): Promise<PhaseResult> {
  const timings: Record<string, number> = {};
  const t = (label: string, t0: number) => (timings[label] = Date.now() - t0);
  const daemonLog: string[] = [];
  const topic = `${af.database}.events`;
  const daemon = startDaemon(daemonConfig(af.database, { EVENTSTREAM_XCOM_KEY: "eventstream" }), daemonLog);
  try {
    // Not `pg_replication_slots.active`: a slot is listed as active while CREATE_REPLICATION_SLOT
    // still waits for a consistent point, and what commits in that window is not in the slot.
    // The daemon logs "streaming" once its slot exists and it reads from it.
    await waitFor(
      `the daemon to stream from ${af.database}`,
      async () => daemonLog.some((l) => l.includes('"msg":"streaming"')),
      120_000,
      100,
    );
    let t0 = Date.now();
    const { commands, unfinished } =
      mode === "dags-test" ? { commands: await dagsTest(af), unfinished: null } : await scheduler(af, timings);
    t(`${mode} (Airflow)`, t0);

    // Everything Airflow wrote is in Kafka once the slot is confirmed past the current WAL position
    // (the daemon confirms only what Kafka acknowledged). Then read the topic to its end.
    t0 = Date.now();
    const lsn = await withPg(af.database, async (c) =>
      lsnToBig((await c.query<{ l: string }>("SELECT pg_current_wal_lsn()::text AS l")).rows[0]!.l),
    );
    await waitFor(
      `the daemon to confirm ${af.database} up to the end of the run`,
      async () => ((await confirmedFlush(af.database, af.database)) ?? 0n) >= lsn,
      60_000,
      200,
    );
    const total = await topicSize(topic);
    const consumed = await consume([topic], (all) => all.length >= total, 60_000);
    if (consumed.length !== total) throw new Error(`read ${consumed.length} of the ${total} messages in ${topic}`);
    t("catch up + consume", t0);

    const raw = consumed.map((m) => StreamEvent.parse(m.event));
    const { kept: events, redelivered } = dedupe(consumed, raw);
    const sessions = daemonLog.filter((l) => /"msg":"streaming"/.test(l)).length;
    const [tis, runs, xcoms] = await withPg(af.database, async (c) => [
      (
        await c.query<TiRow>(
          "SELECT dag_id, task_id, run_id, map_index, state, try_number FROM task_instance ORDER BY dag_id, task_id, map_index",
        )
      ).rows,
      (await c.query<RunRow>("SELECT id, dag_id, run_id, state, clear_number FROM dag_run ORDER BY id")).rows,
      (
        await c.query<XComRow>(
          `SELECT dag_id, task_id, run_id, map_index, to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "timestamp"
             FROM xcom WHERE key = 'eventstream' ORDER BY dag_id, task_id, map_index`,
        )
      ).rows,
    ]);
    const audit = await readAudit(af.database);
    const published = await publishedTables(af.database, af.database);
    return {
      mode,
      af,
      topic,
      consumed,
      raw,
      events,
      redelivered,
      sessions,
      tis,
      runs,
      xcoms,
      audit,
      published,
      unfinished,
      commands,
      timings,
      daemonLog,
    };
  } finally {
    await daemon.stop();
    writeFileSync(join(af.home, "daemon.log"), daemonLog.join(""));
  }
}

async function dagsTest(af: AirflowInstance): Promise<Partial<Record<DagId, CommandResult>>> {
  const out: Partial<Record<DagId, CommandResult>> = {};
  for (const dag of DAGS["dags-test"]) {
    // Exit code 1 when the run failed (es_retry, es_upstream_failed): the test checks the run's state.
    out[dag] = await airflow(af, ["dags", "test", dag, DAGS_TEST_DATE], `dags-test-${dag}`, 240_000);
  }
  return out;
}

async function scheduler(
  af: AirflowInstance,
  timings: Record<string, number>,
): Promise<{ commands: Partial<Record<DagId, CommandResult>>; unfinished: string | null }> {
  const dags = DAGS.scheduler;
  const list: Service[] = [];
  let t0 = Date.now();
  try {
    if (af.major === "3") {
      list.push(startService(af, ["api-server", "--host", "127.0.0.1", "--port", af.env.AIRFLOW__API__PORT!], "api-server"));
      list.push(startService(af, ["dag-processor"], "dag-processor"));
    }
    list.push(startService(af, ["scheduler"], "scheduler"));
    list.push(startService(af, ["triggerer"], "triggerer"));
    const died = Promise.race(
      list.map((s) =>
        s.exited.then(([code, sig]) =>
          Promise.reject(new Error(`airflow ${s.name} (${af.version}) exited early (${code ?? sig}):\n${logTail(s.logFile)}`)),
        ),
      ),
    );
    died.catch(() => undefined);
    const alive = <T>(p: Promise<T>) => Promise.race([p, died]);

    await alive(waitForSerialized(af.database, [...dags], 180_000));
    if (af.major === "3") await alive(waitForApiServer(af, 180_000));
    timings["scheduler: start until DAGs parsed"] = Date.now() - t0;

    t0 = Date.now();
    await alive(airflowOk(af, ["dags", "unpause", "--treat-dag-id-as-regex", "-y", "^es_"], "unpause"));
    await alive(Promise.all(dags.map((d) => airflowOk(af, ["dags", "trigger", d], `trigger-${d}`))));
    timings["scheduler: unpause + trigger"] = Date.now() - t0;

    t0 = Date.now();
    const unfinished = await alive(waitForRuns(af.database, dags, 0, 240_000));
    timings["scheduler: runs"] = Date.now() - t0;
    if (unfinished !== null) return { commands: {}, unfinished };

    // Clear es_clear's finished run: the run goes back to queued, its tasks to None, the scheduler reruns them.
    t0 = Date.now();
    await alive(airflowOk(af, ["tasks", "clear", "-y", "es_clear"], "clear-es_clear"));
    const rerun = await alive(waitForRuns(af.database, ["es_clear"], 1, 120_000));
    timings["scheduler: clear + rerun"] = Date.now() - t0;
    return { commands: {}, unfinished: rerun };
  } catch (e) {
    const logs = list.map((s) => `--- ${s.name} (${s.logFile}):\n${logTail(s.logFile, 25)}`).join("\n");
    throw new Error(`${(e as Error).message}\n${logs}`, { cause: e });
  } finally {
    t0 = Date.now();
    await stopServices(af, list);
    timings["scheduler: stop"] = Date.now() - t0;
  }
}

/**
 * Until each DAG has exactly one run, finished, with the given clear_number. Not finishing in time
 * is Airflow's behaviour (reported by the scripted check), not an error of the stream: the
 * description is returned instead of thrown, null when all finished.
 */
async function waitForRuns(database: string, dags: readonly string[], clearNumber: number, timeoutMs: number): Promise<string | null> {
  let last = "";
  return waitFor(
    `runs of ${dags.join(", ")} to finish (clear_number ${clearNumber})`,
    () =>
      withPg(database, async (c) => {
        const { rows } = await c.query<{ dag_id: string; state: string; clear_number: number }>(
          "SELECT dag_id, state, clear_number FROM dag_run WHERE dag_id = ANY($1)",
          [dags],
        );
        last = rows.map((r) => `${r.dag_id}=${r.state}#${r.clear_number}`).join(" ");
        return (
          rows.length === dags.length &&
          rows.every((r) => (r.state === "success" || r.state === "failed") && r.clear_number === clearNumber)
        );
      }),
    timeoutMs,
    500,
  ).then(
    () => null,
    (e: Error) => `${e.message}; last seen: ${last || "no runs"}`,
  );
}

function lsnToBig(text: string): bigint {
  const [hi, lo] = text.split("/");
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

async function topicSize(topic: string): Promise<number> {
  const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "e2e-admin" }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  } finally {
    await admin.disconnect();
  }
}

export async function deleteTopics(topics: string[]): Promise<void> {
  const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "e2e-admin" }).admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics, timeout: 10_000 });
  } finally {
    await admin.disconnect();
  }
}
