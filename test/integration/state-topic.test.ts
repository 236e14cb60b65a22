import { Kafka, logLevel, type ConfigResourceTypes } from "kafkajs";
import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../../src/airflow/events.js";
import { loadConfig } from "../../src/config.js";
import { TopicError } from "../../src/errors.js";
import { pino } from "pino";
import { STATE_TOPIC_CONFIG, TopicAdmin, checkStateTopic } from "../../src/sink/topics.js";
import {
  consume,
  createDatabase,
  daemonEnv,
  dropDatabase,
  services,
  sleep,
  spawnDaemon,
  uniqueName,
  withPg,
  type DaemonProcess,
} from "../support/harness.js";
import { LoadGenerator, loadSeed, untilSentinels } from "../support/load.js";
import { compareStateWithDatabase, stateTopicOf, waitForStateEqual } from "../support/state.js";
import { insertDagRun, insertTi } from "../support/airflow-rows.js";

/**
 * The current-state topic with the real daemon: after inserts, transitions, deletes, a TRUNCATE and
 * a SIGKILL of the daemon under load (each mode), what a reader folds from it equals the database,
 * row for row; and each entry is the event topic's last event of its row, at the same position.
 */

const STREAMING = /"msg":"streaming"/;

function kafkaClient(): Kafka {
  return new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-state-topic" });
}

/** A load of `dags` for about `ms`, with the daemon SIGKILLed and restarted `killAfterMs` into it. */
async function loadWithKill(
  db: string,
  dags: string[],
  seed: number,
  ms: number,
  killAfterMs: number,
  daemon: { d: DaemonProcess; env: Record<string, string> },
): Promise<LoadGenerator> {
  const load = new LoadGenerator({
    db,
    major: "3",
    dags,
    workers: 4,
    tasksPerRun: 4,
    activePerWorker: 6,
    maxRowsPerTx: 6,
    txDelayMs: 3,
    seed,
  });
  load.start();
  await sleep(killAfterMs);
  daemon.d.proc.kill("SIGKILL");
  await daemon.d.exited;
  daemon.d = spawnDaemon(daemon.env);
  await daemon.d.waitForLog(STREAMING, 60_000);
  await sleep(Math.max(0, ms - killAfterMs));
  await load.stop();
  return load;
}

async function scenario(mode: "at-least-once" | "exactly-once"): Promise<void> {
  const db = uniqueName(mode === "exactly-once" ? "state_eo" : "state_alo");
  await createDatabase(db, "3");
  // Deletes on 3.x carry the whole row only at REPLICA IDENTITY FULL (else, after a restart, a
  // delete of a row not seen since may not be keyable: counted and warned of, see StateRecords).
  const env = daemonEnv(db, { EVENTSTREAM_DELIVERY: mode, EVENTSTREAM_REPLICA_IDENTITY: "full" });
  const daemon = { d: spawnDaemon(env), env };
  const seed = loadSeed();
  try {
    await daemon.d.waitForLog(STREAMING, 60_000);
    const before = ["a1", "a2", "a3", "a4"];
    const load1 = await loadWithKill(db, before, seed, 3_000, 1_200, daemon);
    await withPg(db, async (c) => {
      // Deletes of single task instances and of a whole run, then a TRUNCATE of task_instance.
      await c.query("DELETE FROM task_instance WHERE ctid IN (SELECT ctid FROM task_instance WHERE dag_id = 'a1' LIMIT 3)");
      await c.query("DELETE FROM task_instance WHERE dag_id = 'a2' AND run_id = (SELECT min(run_id) FROM dag_run WHERE dag_id = 'a2')");
      await c.query("DELETE FROM dag_run WHERE dag_id = 'a2' AND run_id = (SELECT min(run_id) FROM dag_run WHERE dag_id = 'a2')");
      await c.query("TRUNCATE task_instance CASCADE");
    });
    // After the TRUNCATE: new rows (other DAGs, so run ids never meet the old ones), a kill again.
    const after = ["b1", "b2", "b3", "b4"];
    const load2 = await loadWithKill(db, after, seed + 1, 3_000, 1_500, daemon);
    await withPg(db, async (c) => {
      await c.query("DELETE FROM task_instance WHERE ctid IN (SELECT ctid FROM task_instance WHERE dag_id = 'b1' LIMIT 2)");
      await c.query("DELETE FROM task_instance WHERE dag_id = 'b2' AND run_id = (SELECT min(run_id) FROM dag_run WHERE dag_id = 'b2')");
      await c.query("DELETE FROM dag_run WHERE dag_id = 'b2' AND run_id = (SELECT min(run_id) FROM dag_run WHERE dag_id = 'b2')");
    });
    await load2.commitSentinels();

    const cmp = await waitForStateEqual(db, 60_000);
    console.log(
      `state topic (${mode}): ${load1.ledger.count + load2.ledger.count} changes; ${cmp.rows} rows in the database; read ${cmp.state.records} records (${cmp.state.entries.size} live keys) in ${cmp.readMs} ms; ${cmp.problems.length} problems`,
    );
    expect(cmp.problems.slice(0, 20)).toEqual([]);
    expect(cmp.rows).toBeGreaterThan(50);
    // The state's position is the last event's: nothing runs ahead of the event topic.
    const events = await consume([`${db}.events`], untilSentinels(after), { timeoutMs: 60_000 });
    const byPosition = new Map(events.map((m) => [(m.event as StreamEvent).source.position, m.event as StreamEvent]));
    const lastOfKey = new Map<string, string>();
    for (const m of events) {
      const e = m.event as StreamEvent;
      if (e.type !== "task_instance" && e.type !== "dag_run") continue;
      const key =
        e.type === "dag_run"
          ? JSON.stringify({ type: "dag_run", dag_id: e.dag_id, run_id: e.run_id })
          : JSON.stringify({ type: "task_instance", dag_id: e.dag_id, run_id: e.run_id, task_id: e.task_id, map_index: e.map_index });
      const was = lastOfKey.get(key);
      if (was === undefined || e.source.position > was) lastOfKey.set(key, e.source.position);
    }
    for (const [key, entry] of cmp.state.entries) {
      expect(entry.position, key).toBe(lastOfKey.get(key));
      const published = byPosition.get(entry.position);
      // Exactly-once: the very record published. At-least-once: a replay re-sends a covered
      // event's state as mapped again, whose previous_* may differ; the row's fields may not.
      if (mode === "exactly-once") expect(entry.event).toStrictEqual(published);
      else
        expect({ ...entry.event, previous_state: null, previous_state_known: null }).toStrictEqual({
          ...published,
          previous_state: null,
          previous_state_known: null,
        });
    }
    expect(cmp.state.truncated.has("task_instance")).toBe(true);
    daemon.d.proc.kill("SIGTERM");
    expect(await daemon.d.exited).toBe(0);
  } catch (e: unknown) {
    console.log(
      daemon.d.output
        .filter((l) => /"level":(40|50|60)/.test(l))
        .slice(-20)
        .join("\n"),
    );
    throw e;
  } finally {
    if (daemon.d.proc.exitCode === null) daemon.d.proc.kill("SIGKILL");
    await dropDatabase(db);
  }
}

describe("the current-state topic", () => {
  it("at-least-once: after a load with deletes, a TRUNCATE and SIGKILLs, equals the database", () => scenario("at-least-once"), 150_000);
  it("exactly-once: after a load with deletes, a TRUNCATE and SIGKILLs, equals the database", () => scenario("exactly-once"), 150_000);

  it("at-least-once: events Kafka took while their state records were refused get those records from the replay", async () => {
    // A produce request is not atomic across partitions: here the state topic refuses every record
    // (max.message.bytes below a record's size) while the event topic takes its batch, the state
    // of a crash between partitions. The next start finds the events in Kafka (covered) and must
    // send their state records again.
    const db = uniqueName("state_partial");
    const topic = stateTopicOf(db);
    await createDatabase(db, "3");
    const kafka = kafkaClient();
    const admin = kafka.admin();
    await admin.connect();
    const env = daemonEnv(db, { EVENTSTREAM_REPLICA_IDENTITY: "full" });
    let d: DaemonProcess | null = null;
    try {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic, numPartitions: 3, configEntries: [...STATE_TOPIC_CONFIG, { name: "max.message.bytes", value: "200" }] }],
      });
      d = spawnDaemon(env);
      await d.waitForLog(STREAMING, 60_000);
      // One transaction: its events go in one produce request (the first; every later one fails).
      await withPg(db, async (c) => {
        await c.query("BEGIN");
        for (let i = 0; i < 5; i++) {
          await insertDagRun(c, "3", `p${i}`, "r1", "running");
          await insertTi(c, "3", { dag_id: `p${i}`, task_id: "t", run_id: "r1" }, { state: "queued", try_number: 1 });
        }
        await c.query("COMMIT");
      });
      // The daemon's own line (kafkajs's is at debug): the session ends on the refused request.
      await d.waitForLog(/"err":"[^"]*larger than the max message size.*session ended; restarting/, 60_000);
      d.proc.kill("SIGKILL");
      await d.exited;
      // The publisher sends the first event alone (nothing else queued yet): that request wrote
      // the event, not its state record, and every later one failed whole or in part.
      const published = await consume([`${db}.events`], () => false, { timeoutMs: 3_000, allowTimeout: true });
      expect(published.length).toBeGreaterThanOrEqual(1);
      const refused = await compareStateWithDatabase(db);
      expect(refused.state.records).toBe(0);
      // alterConfigs replaces the topic's whole config: the state topic's own entries again.
      await admin.alterConfigs({
        validateOnly: false,
        resources: [
          {
            type: 2 as ConfigResourceTypes,
            name: topic,
            configEntries: [...STATE_TOPIC_CONFIG, { name: "max.message.bytes", value: "1000000" }],
          },
        ],
      });
      d = spawnDaemon(env);
      await d.waitForLog(STREAMING, 60_000);
      const cmp = await waitForStateEqual(db, 30_000);
      expect(cmp.problems).toEqual([]);
      expect(cmp.rows).toBe(10);
      // Nothing was published twice: the covered events' state records went alone.
      const after = await consume([`${db}.events`], () => false, { timeoutMs: 5_000, allowTimeout: true });
      const positions = after.map((m) => (m.event as StreamEvent).source.position);
      expect(new Set(positions).size).toBe(positions.length);
      expect(positions.length).toBe(10);
    } finally {
      if (d !== null && d.proc.exitCode === null) d.proc.kill("SIGKILL");
      await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
      await admin.disconnect();
      await dropDatabase(db);
    }
  }, 120_000);

  it("is created compacted; an existing uncompacted one is refused, saying how to fix it", async () => {
    const kafka = kafkaClient();
    const admin = kafka.admin();
    await admin.connect();
    const created = uniqueName("state_created");
    const plain = uniqueName("state_plain");
    try {
      const cfg = loadConfig(daemonEnv(created, { EVENTSTREAM_TOPIC_PARTITIONS: "2" }));
      await new TopicAdmin(admin, cfg, pino({ level: "silent" })).ensureStateTopic(created);
      await checkStateTopic(admin, created);
      await admin.createTopics({ waitForLeaders: true, topics: [{ topic: plain, numPartitions: 1 }] });
      const err = await checkStateTopic(admin, plain).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TopicError);
      expect(String((err as Error).message)).toContain(`--entity-name ${plain} --add-config cleanup.policy=compact`);
      // The daemon refuses it at start (exit code 2: a user action), before streaming.
      const db = uniqueName("state_refused");
      await createDatabase(db, "3");
      try {
        const d = spawnDaemon(daemonEnv(db, { EVENTSTREAM_STATE_TOPIC: plain }));
        expect(await d.exited).toBe(2);
        expect(d.output.join("\n")).toContain(`the current-state topic ${plain} exists with cleanup.policy=delete`);
      } finally {
        await dropDatabase(db);
      }
    } finally {
      await admin.deleteTopics({ topics: [created, plain] }).catch(() => undefined);
      await admin.disconnect();
    }
  }, 60_000);
});
