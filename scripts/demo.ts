// The demo behind `npm run demo` (run by scripts/demo.sh with Node 24, which runs TypeScript as is).
// It plays the part of Airflow's scheduler and workers, writing task_instance and dag_run rows the
// way Airflow does, into a database holding Airflow's real schema, while the daemon streams them.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { Kafka, logLevel } from "kafkajs";

const major = process.env.DEMO_AIRFLOW_MAJOR === "2" ? "2" : "3";
const versions = JSON.parse(readFileSync("test/fixtures/airflow/versions.json", "utf8")) as Record<string, string>;
const version = versions[major]!;
const db = "airflow_demo";
const topic = "airflow.demo.events";
const pgBase = { host: process.env.PGHOST, port: Number(process.env.PGPORT), user: process.env.PGUSER, password: process.env.PGPASSWORD };

// The demo's own kafkajs clients (its admin and consumer) trip Node 24's TimeoutNegativeWarning, as
// the daemon's do (bin/airflow-eventstream says why it is harmless); it would land in the output.
process.removeAllListeners("warning");
process.on("warning", (w: Error) => {
  if (w.name !== "TimeoutNegativeWarning") process.stderr.write(`${w.name}: ${w.message}\n`);
});

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function sql(database: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ ...pgBase, database });
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

async function main(): Promise<void> {
  say(`== Airflow ${version} schema into database "${db}"`);
  // Every slot in the demo's database, not only its own: PostgreSQL refuses to drop a database that
  // holds one (left there, say, by a daemon started on it by hand with another slot name).
  const dropped = await sql(
    "postgres",
    "SELECT slot_name, pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active",
    [db],
  );
  for (const r of dropped.rows as { slot_name: string }[])
    if (r.slot_name !== db) say(`== dropped replication slot "${r.slot_name}" of database "${db}"`);
  await sql("postgres", `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await sql("postgres", `CREATE DATABASE ${db}`);
  await sql(db, readFileSync(`test/fixtures/airflow/airflow-${version}.sql`, "utf8"));

  const kafka = new Kafka({ brokers: (process.env.KAFKA_BROKERS ?? "").split(","), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  if ((await admin.listTopics()).includes(topic)) await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();

  const daemonEnv = {
    ...process.env,
    PGDATABASE: db,
    EVENTSTREAM_SLOT: db,
    EVENTSTREAM_PUBLICATION: db,
    EVENTSTREAM_TOPIC: topic,
    EVENTSTREAM_TOPIC_PARTITIONS: "1",
    LOG_LEVEL: "info",
  };
  // The slot of the last run was dropped above, but its checkpoint (in the checkpoint topic, keyed by
  // slot name) still holds the old position: against the new slot that is a gap, and the daemon
  // would rightly refuse to start. Retiring a slot means deleting its checkpoint too (docs/operations.md).
  say("== deleting the last run's checkpoint (airflow-eventstream reset-checkpoint)");
  const reset = spawnSync("bin/airflow-eventstream", ["reset-checkpoint"], { env: daemonEnv, encoding: "utf8" });
  if (reset.status !== 0)
    throw new Error(`airflow-eventstream reset-checkpoint exited with ${reset.status ?? reset.signal}:\n${reset.stdout}${reset.stderr}`);

  say("== starting the daemon (its log lines are prefixed with 'daemon |')");
  const daemon = spawn("bin/airflow-eventstream", ["run"], { env: daemonEnv, stdio: ["ignore", "pipe", "pipe"] });
  let stopping = false;
  // A daemon that stops by itself (a gap, a configuration error) ends the demo with its exit code.
  const exited = new Promise<number | null>((r) => daemon.on("exit", (code) => r(code)));
  const died = exited.then((code) => {
    if (!stopping) throw new Error(`the daemon exited with code ${code} before the demo was over (its log is above)`);
  });
  died.catch(() => undefined);
  let streaming!: () => void;
  const isStreaming = new Promise<void>((r) => (streaming = r));
  const onLog = (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n").filter(Boolean)) {
      try {
        const o = JSON.parse(line) as { msg: string };
        say(`daemon | ${o.msg}`);
        if (o.msg === "streaming") streaming();
      } catch {
        say(`daemon | ${line}`);
      }
    }
  };
  daemon.stdout.on("data", onLog);
  daemon.stderr.on("data", onLog);
  try {
    await Promise.race([isStreaming, died]);
    await playAndCheck(kafka, exited, died, () => (stopping = true), daemon);
  } finally {
    // Whatever failed, no daemon is left behind holding the slot.
    if (!stopping) daemon.kill("SIGTERM");
  }
}

async function playAndCheck(
  kafka: Kafka,
  exited: Promise<number | null>,
  died: Promise<void>,
  markStopping: () => void,
  daemon: ChildProcess,
): Promise<void> {
  const consumer = kafka.consumer({ groupId: `demo-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let received = 0;
  let last = Date.now();
  const receivedXids: number[] = [];
  await consumer.run({
    eachMessage: async ({ message }) => {
      received++;
      last = Date.now();
      const e = JSON.parse(message.value!.toString()) as Record<string, unknown>;
      receivedXids.push((e.source as { xid: number }).xid);
      const from = e.previous_state_known ? String(e.previous_state ?? "none") : "?";
      const what =
        e.type === "task_instance" ? `task ${e.task_id}${e.map_index === -1 ? "" : `[${e.map_index}]`} try ${e.try_number}` : `dag run`;
      say(
        `kafka  | key=${message.key} ${String(e.op).padEnd(6)} ${what.padEnd(26)} ${from} -> ${e.state ?? "none"}   (${(e.source as { position: string }).position})`,
      );
    },
  });

  say("== Airflow at work: a DAG run with extract -> transform (fails once, retried) -> load, and a mapped task over 3 items");
  const c = new pg.Client({ ...pgBase, database: db });
  await c.connect();
  const dag = "example_etl";
  const run = "manual__2026-11-25T00:00:00+00:00";
  const runSql =
    major === "2"
      ? "INSERT INTO dag_run (dag_id, run_id, execution_date, state, run_type, clear_number) VALUES ($1, $2, now(), 'queued', 'manual', 0) RETURNING id"
      : "INSERT INTO dag_run (dag_id, run_id, logical_date, run_after, state, run_type, clear_number, span_status) VALUES ($1, $2, now(), now(), 'queued', 'manual', 0, 'not_started') RETURNING id";
  const runId = ((await c.query(runSql, [dag, run])).rows[0] as { id: number }).id;
  const ti = async (task: string, mapIndex = -1) => {
    const cols = ["dag_id", "task_id", "run_id", "map_index", "try_number", "max_tries", "pool", "pool_slots", "queue", "operator"];
    const vals: unknown[] = [dag, task, run, mapIndex, 0, 1, "default_pool", 1, "default", "PythonOperator"];
    if (major === "3") {
      cols.unshift("id");
      vals.unshift(randomUUID());
    }
    await c.query(`INSERT INTO task_instance (${cols.join(", ")}) VALUES (${vals.map((_, i) => `$${i + 1}`).join(", ")})`, vals);
    transitions++;
  };
  // What the demo writes, counted as it writes it, to compare with what Kafka holds at the end:
  // each transition (a row inserted, a state, try or map index changed) should be one event; each
  // heartbeat (its own transaction, xid noted) none.
  let transitions = 0;
  const heartbeatXids = new Set<number>();
  // Events carry the 32-bit xid; pg_current_xact_id() is the 64-bit one with the epoch on top.
  const XID = "(pg_current_xact_id()::text::bigint % 4294967296)::int AS xid";
  const set = async (task: string, assignments: string, mapIndex = -1) => {
    const r = await c.query<{ xid: number }>(
      `UPDATE task_instance SET ${assignments} WHERE dag_id = $1 AND task_id = $2 AND run_id = $3 AND map_index = $4 RETURNING ${XID}`,
      [dag, task, run, mapIndex],
    );
    if (r.rowCount !== 1) throw new Error(`UPDATE of ${task}[${mapIndex}] changed ${r.rowCount} rows, not 1`);
    return r.rows[0]!.xid;
  };
  const transition = async (task: string, assignments: string, mapIndex = -1) => {
    await set(task, assignments, mapIndex);
    transitions++;
  };
  const runTask = async (task: string, outcome: "success" | "up_for_retry", mapIndex = -1) => {
    await transition(task, "state = 'scheduled', try_number = try_number + 1", mapIndex);
    await transition(task, "state = 'queued', queued_dttm = now()", mapIndex);
    await transition(task, "state = 'running', start_date = now(), hostname = 'worker-1', pid = 4242", mapIndex);
    // Heartbeats: column churn, no transition, no event.
    for (let i = 0; i < 3; i++)
      heartbeatXids.add(await set(task, major === "3" ? "last_heartbeat_at = now()" : "updated_at = now()", mapIndex));
    await transition(task, `state = '${outcome}', end_date = now(), duration = 0.5`, mapIndex);
  };

  transitions++; // the dag_run inserted above
  await c.query("BEGIN");
  for (const t of ["extract", "transform", "load", "fan_out"]) await ti(t);
  await c.query("COMMIT");
  await c.query("UPDATE dag_run SET state = 'running', start_date = now() WHERE id = $1", [runId]);
  transitions++;
  await runTask("extract", "success");
  await runTask("transform", "up_for_retry");
  await runTask("transform", "success");
  await runTask("load", "success");
  await c.query("BEGIN");
  await transition("fan_out", "map_index = 0");
  await ti("fan_out", 1);
  await ti("fan_out", 2);
  await c.query("COMMIT");
  for (const i of [0, 1, 2]) await runTask("fan_out", "success", i);
  await c.query("UPDATE dag_run SET state = 'success', end_date = now() WHERE id = $1", [runId]);
  transitions++;
  await c.end();

  // Wait until every transition's event is in, and the stream has been quiet for a second and a
  // half after that (an event too many would come in that time); a demo that never gets them fails.
  const deadline = Date.now() + 120_000;
  while (received < transitions || Date.now() - last < 1500) {
    if (Date.now() > deadline) break;
    await Promise.race([new Promise((r) => setTimeout(r, 200)), died]);
  }
  await consumer.disconnect();
  const fromHeartbeats = receivedXids.filter((x) => heartbeatXids.has(x)).length;
  say(
    `== ${received} events read from Kafka topic "${topic}" for ${transitions} transitions written; ${heartbeatXids.size} heartbeat updates written produced ${fromHeartbeats} events`,
  );
  markStopping();
  daemon.kill("SIGTERM");
  const code = await exited;
  say(`== daemon stopped (exit code ${code}); the slot "${db}" keeps its position for the next start`);
  const wrong: string[] = [];
  if (received !== transitions) wrong.push(`${received} events for ${transitions} transitions`);
  if (fromHeartbeats !== 0) wrong.push(`${fromHeartbeats} events from heartbeats`);
  if (code !== 0) wrong.push(`the daemon exited with code ${code} on SIGTERM`);
  if (wrong.length > 0) throw new Error(`the stream is not what was written: ${wrong.join("; ")}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
