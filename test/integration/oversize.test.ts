import { Kafka, logLevel, type ConfigResourceTypes } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamEvent } from "../../src/airflow/events.js";
import {
  confirmedFlush,
  consume,
  createDatabase,
  daemonConfig,
  daemonEnv,
  dropDatabase,
  services,
  spawnDaemon,
  startDaemon,
  uniqueName,
  waitFor,
  withPg,
} from "../support/harness.js";
import { insertDagRun, insertTi, setXCom, updateTi } from "../support/airflow-rows.js";
import { endOffsets } from "../support/load.js";

/**
 * An event larger than Kafka accepts is never dropped silently: by default the daemon stops with an
 * error naming the row (and acknowledges nothing after it); with a dead-letter topic a summary goes
 * there, in order, and the stream goes on.
 */
describe("oversized events", () => {
  const db = uniqueName("oversize");
  const dag = "big_dag";
  const key = { dag_id: dag, task_id: "export", run_id: "r1" };
  let runId = 0;

  beforeAll(async () => {
    await createDatabase(db, "3");
    await withPg(db, async (c) => {
      await c.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run, xcom`);
      await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [db]);
      runId = await insertDagRun(c, "3", dag, "r1", "running");
      await insertTi(c, "3", key, { state: "running", try_number: 1 });
      await setXCom(c, "3", runId, key, "eventstream", { request_id: "big", payload: { blob: "x".repeat(5000) } });
      await updateTi(c, key, { state: "success" });
    });
  });

  afterAll(async () => {
    await dropDatabase(db);
  });

  it("stops, naming the row, and acknowledges nothing from that transaction on", async () => {
    const d = spawnDaemon(daemonEnv(db, { EVENTSTREAM_MAX_MESSAGE_BYTES: "2000" }));
    expect(await d.exited).toBe(2);
    const out = d.output.join("\n");
    const m =
      /dag_id=big_dag task_id=export run_id=r1 \(position ([0-9A-F]{16})-[0-9A-F]{8}\) is \d+ bytes, over EVENTSTREAM_MAX_MESSAGE_BYTES=2000/.exec(
        out,
      );
    expect(m, out).not.toBeNull();
    expect(out).toContain("EVENTSTREAM_DEAD_LETTER_TOPIC");
    // The slot stays before the oversized transaction's commit, so it is read again on restart.
    const commitLsn = BigInt(`0x${m![1]}`);
    expect((await confirmedFlush(db, db))! <= commitLsn).toBe(true);
  });

  it("with a dead-letter topic, sends a summary there in the event's place and goes on", async () => {
    const dlq = `${db}.dlq`;
    const daemon = startDaemon(daemonConfig(db, { EVENTSTREAM_MAX_MESSAGE_BYTES: "2000", EVENTSTREAM_DEAD_LETTER_TOPIC: dlq }));
    try {
      const main = await consume([`${db}.events`], (all) =>
        all.some((m) => m.event.type === "task_instance" && m.event.state === "success"),
      );
      // The first test's daemon published what came before the oversized event; what it had not
      // acknowledged comes again, with the same positions: de-duplicate as consumers do.
      const seen = new Set<string>();
      const events = main.map((m) => StreamEvent.parse(m.event)).filter((e) => !seen.has(e.source.position) && seen.add(e.source.position));
      expect(events.map((e) => e.type)).toEqual(["dag_run", "task_instance", "task_instance"]);
      const dead = await consume([dlq], (all) => all.length >= 1);
      const summary = dead[0]!.event as unknown as Record<string, unknown>;
      expect(summary).toMatchObject({
        reason: "message_too_large",
        limit: 2000,
        type: "notification",
        dag_id: dag,
        task_id: "export",
        run_id: "r1",
      });
      expect(summary.bytes as number).toBeGreaterThan(5000);
      expect(dead[0]!.key).toBe(dag);
      // In order: the summary's position lies between the running insert and the success.
      const pos = (summary.source as { position: string }).position;
      expect(pos > events[1]!.source.position && pos < events[2]!.source.position).toBe(true);
      await waitFor(
        "the slot to pass the oversized transaction",
        async () => {
          const { rows } = await withPg("postgres", (c) =>
            c.query<{ behind: boolean }>(
              "SELECT confirmed_flush_lsn < pg_current_wal_lsn() AS behind FROM pg_replication_slots WHERE slot_name = $1",
              [db],
            ),
          );
          return rows[0]?.behind === false;
        },
        20_000,
      );
    } finally {
      await daemon.stop();
    }
  });
});

/**
 * The session stops on an oversized event; the changes after it in the same read must not be
 * published by the failing session. Published, they would be in Kafka ahead of the oversized one,
 * and after the limit is raised and the daemon restarted, a consumer skipping positions not greater
 * than the last it processed (docs/delivery.md, "At least once") would skip the oversized one: per-DAG order
 * broken, an event lost to that consumer.
 */
describe("oversized event followed by more changes in the same read", () => {
  const db = uniqueName("oversize_tail");
  const topic = `${db}.events`;
  const dag = "tail_dag";
  const exportKey = { dag_id: dag, task_id: "export", run_id: "r1" };
  const nextKey = { dag_id: dag, task_id: "load", run_id: "r1" };

  beforeAll(async () => {
    await createDatabase(db, "3");
  });

  afterAll(async () => {
    await dropDatabase(db);
  });

  it("publishes nothing after the oversized event; raised and restarted, a consumer skipping seen positions gets every event once, in order", async () => {
    const first = spawnDaemon(daemonEnv(db, { EVENTSTREAM_MAX_MESSAGE_BYTES: "2000" }));
    let second: ReturnType<typeof startDaemon> | null = null;
    try {
      await first.waitForLog(/"msg":"streaming"/);
      const runId = await withPg(db, async (c) => {
        const id = await insertDagRun(c, "3", dag, "r1", "running");
        await insertTi(c, "3", exportKey, { state: "running", try_number: 1 });
        return id;
      });
      // In Kafka, so the sink is idle when the next transaction arrives: whatever the failing
      // session hands it after the oversized event goes out at once.
      const before = await consume([topic], (all) => all.length >= 2);
      expect(before.length).toBe(2);

      // One transaction, read in one go: the oversized notification, then more of the same DAG.
      await withPg(db, async (c) => {
        await c.query("BEGIN");
        await setXCom(c, "3", runId, exportKey, "eventstream", { request_id: "big", payload: { blob: "x".repeat(5000) } });
        await updateTi(c, exportKey, { state: "success" });
        await insertTi(c, "3", nextKey, { state: "running", try_number: 1 });
        await updateTi(c, nextKey, { state: "success" });
        await c.query("COMMIT");
      });
      expect(await first.exited).toBe(2);
      const out = first.output.join("\n");
      const m =
        /dag_id=tail_dag task_id=export run_id=r1 \(position ([0-9A-F]{16}-[0-9A-F]{8})\) is \d+ bytes, over EVENTSTREAM_MAX_MESSAGE_BYTES=2000/.exec(
          out,
        );
      expect(m, out).not.toBeNull();
      const oversizedAt = m![1]!;

      // Everything the stopped daemon left in Kafka: nothing at or after the oversized event.
      const held = [...(await endOffsets(topic)).values()].reduce((a, b) => a + b, 0n);
      const left = await consume([topic], (all) => BigInt(all.length) >= held);
      expect(BigInt(left.length)).toBe(held);
      const after = left.map((e) => StreamEvent.parse(e.event)).filter((e) => e.source.position >= oversizedAt);
      expect(after.map((e) => `${e.type} ${"task_id" in e ? e.task_id : ""} ${e.source.position}`)).toEqual([]);

      // The limit raised, the daemon restarted: what a consumer processes with the recipe of docs/events.md.
      second = startDaemon(daemonConfig(db));
      const all = await consume([topic], (got) =>
        got.some((e) => e.event.type === "task_instance" && e.event.task_id === "load" && e.event.state === "success"),
      );
      let last = "";
      const processed: string[] = [];
      for (const msg of all) {
        const e = StreamEvent.parse(msg.event);
        if (e.source.position <= last) continue;
        last = e.source.position;
        processed.push(
          e.type === "task_instance"
            ? `task_instance ${e.task_id} ${e.state}`
            : e.type === "notification"
              ? `notification ${e.task_id} ${e.request_id}`
              : `${e.type} ${"state" in e ? e.state : ""}`,
        );
      }
      expect(processed).toEqual([
        "dag_run running",
        "task_instance export running",
        "notification export big",
        "task_instance export success",
        "task_instance load running",
        "task_instance load success",
      ]);
    } finally {
      if (first.proc.exitCode === null && first.proc.signalCode === null) first.proc.kill("SIGKILL");
      await second?.stop();
    }
  });
});

/**
 * A topic whose max.message.bytes is below a batch the daemon sends (each event fits, many together
 * do not): Kafka refuses the record batch whole on every attempt. The daemon retries from the last
 * acknowledged position (nothing after it is acknowledged, nothing is lost), says which limits to
 * bring together, and once the topic's limit is raised goes on by itself, every event once.
 */
describe("a batch over the topic's max.message.bytes", () => {
  const db = uniqueName("batch_large");
  const topic = `${db}.events`;
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-batch-large" });
  const admin = kafka.admin();

  beforeAll(async () => {
    await createDatabase(db, "3");
    await admin.connect();
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic, numPartitions: 3, configEntries: [{ name: "max.message.bytes", value: "8000" }] }],
    });
  });

  afterAll(async () => {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
    await dropDatabase(db);
  });

  it("retries without acknowledging, names EVENTSTREAM_BATCH_MAX_BYTES and max.message.bytes, and goes on once the topic takes it", async () => {
    const lines: string[] = [];
    const daemon = startDaemon(daemonConfig(db), lines);
    try {
      await waitFor("the daemon to stream", async () => lines.some((l) => l.includes('"msg":"streaming"')), 60_000);
      // One DAG (one partition), one transaction: 30 task instances of ~900 B each, ~27 KB.
      const commitLsn = await withPg(db, async (c) => {
        await c.query("BEGIN");
        await insertDagRun(c, "3", "wide_dag", "r1", "running");
        for (let i = 0; i < 30; i++)
          await insertTi(c, "3", { dag_id: "wide_dag", task_id: `t${i}`, run_id: "r1" }, { state: "scheduled", try_number: 1 });
        await c.query("COMMIT");
        const { rows } = await c.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
        return rows[0]!.lsn;
      });
      await waitFor(
        "the refusal, explained",
        async () => lines.some((l) => l.includes("MESSAGE_TOO_LARGE") && l.includes("EVENTSTREAM_BATCH_MAX_BYTES=900000")),
        60_000,
      );
      const said = lines.find((l) => l.includes("MESSAGE_TOO_LARGE") && l.includes("EVENTSTREAM_BATCH_MAX_BYTES"))!;
      expect(said).toContain("raise the topic's max.message.bytes, or lower both settings under it");
      expect(said).toContain('"level":40');
      // Nothing of that transaction acknowledged to PostgreSQL.
      const [hi, lo] = commitLsn.split("/").map((h) => BigInt(`0x${h}`));
      expect((await confirmedFlush(db, db))! < (hi! << 32n) + lo!).toBe(true);

      // alterConfigs replaces the topic's config: max.message.bytes back to Kafka's default size.
      await admin.alterConfigs({
        validateOnly: false,
        resources: [{ type: 2 as ConfigResourceTypes, name: topic, configEntries: [{ name: "max.message.bytes", value: "1048588" }] }],
      });
      const got = await consume([topic], (all) => all.filter((m) => m.event.type === "task_instance").length >= 30);
      const positions = got.map((m) => (m.event as { source: { position: string } }).source.position);
      expect(new Set(positions).size).toBe(positions.length);
      expect(got.filter((m) => m.event.type === "task_instance").length).toBe(30);
      expect(got.filter((m) => m.event.type === "dag_run").length).toBe(1);
    } finally {
      await daemon.stop();
    }
  }, 150_000);
});
