import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kafka, logLevel } from "kafkajs";
import { StreamEvent } from "../../src/airflow/events.js";
import {
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  services,
  sleep,
  startDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
} from "../support/harness.js";
import { insertDagRun, insertTi, setXCom, type TiKey } from "../support/airflow-rows.js";

/**
 * Kafka's limits are on bytes, and CJK text is 3 bytes of UTF-8 per character but 1 UTF-16 unit
 * of a JavaScript string: a batch capped by string length is up to 3 times what the cap says.
 * Four notifications of ~300 KB each, every one under the per-event limit, are more than the
 * topic takes in one record batch; the daemon must split them by bytes, deliver all, and move the slot.
 * They gather in the sink together as under load: the broker is frozen (SIGSTOP) while the daemon
 * reads them, so they wait behind the request in flight.
 */

/** This service set's broker (EVENTSTREAM_SERVICES_DIR, as scripts/services.sh), checked to be Kafka. */
function kafkaPid(): number {
  const dir = resolve(process.env.EVENTSTREAM_SERVICES_DIR ?? ".services");
  const pid = Number(readFileSync(join(dir, "kafka", "kafka.pid"), "utf8").trim());
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  if (!cmdline.includes(`kafka.Kafka ${join(dir, "kafka", "server.properties")}`))
    throw new Error(`pid ${pid} in ${dir}/kafka/kafka.pid is not this service set's Kafka`);
  return pid;
}

async function walLsn(db: string): Promise<bigint> {
  const { rows } = await withPg(db, (c) => c.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn"));
  return lsnOf(rows[0]!.lsn);
}

function lsnOf(text: string): bigint {
  const [hi, lo] = text.split("/");
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

describe("multi-byte text and Kafka's byte limits", () => {
  const db = uniqueName("multibyte");
  const dag = "cjk_dag";
  const topic = `${db}.events`;
  /** Kafka's default for message.max.bytes, set on the topic so the test does not depend on the broker's. */
  const topicMaxMessageBytes = 1_048_588;
  const notifications = 4;
  /** 100,000 CJK characters: 100,000 UTF-16 units, 300,000 bytes. */
  const text = (i: number) => `${i}:` + "数据流事件".repeat(20_000);

  beforeAll(async () => {
    await createDatabase(db, "3");
    const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic, numPartitions: 3, configEntries: [{ name: "max.message.bytes", value: String(topicMaxMessageBytes) }] }],
      });
    } finally {
      await admin.disconnect();
    }
  });

  afterAll(async () => {
    await dropDatabase(db);
  });

  it("delivers four ~300 KB CJK notifications that together exceed max.message.bytes, and the slot moves past them", async () => {
    const logLines: string[] = [];
    const daemon = startDaemon(daemonConfig(db), logLines);
    const broker = kafkaPid();
    let frozen = false;
    try {
      await waitForStreaming(db);
      const runId = await withPg(db, (c) => insertDagRun(c, "3", dag, "r1", "running"));
      await consume([topic], (all) => all.length >= 1);
      process.kill(broker, "SIGSTOP");
      frozen = true;
      await withPg(db, async (c) => {
        for (let i = 0; i < notifications; i++) {
          const key: TiKey = { dag_id: dag, task_id: `t${i}`, run_id: "r1" };
          await insertTi(c, "3", key, { state: "running", try_number: 1 });
          await setXCom(c, "3", runId, key, "eventstream", { request_id: `req${i}`, payload: { text: text(i) } });
        }
      });
      const committedAt = await walLsn(db);
      await waitFor("the walsender to send the notifications", async () => {
        const { rows } = await withPg("postgres", (c) =>
          c.query<{ sent: string | null }>(
            "SELECT r.sent_lsn::text AS sent FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1",
            [db],
          ),
        );
        const sent = rows[0]?.sent;
        return typeof sent === "string" && lsnOf(sent) >= committedAt;
      });
      // Time for the daemon to read what was sent (1.2 MB from its socket) into the sink.
      await sleep(2000);
      process.kill(broker, "SIGCONT");
      frozen = false;

      const isNotification = (e: { type: string }) => e.type === "notification";
      const consumed = await consume([topic], (all) => all.filter((m) => isNotification(m.event)).length >= notifications, 90_000);
      const events = consumed.map((m) => StreamEvent.parse(m.event));
      const delivered = events.filter((e) => e.type === "notification");
      const refused = logLines.filter((l) => /too large|TOO_LARGE/i.test(l)).length;
      expect(delivered.length, `notifications delivered; log lines about a request too large: ${refused}`).toBe(notifications);
      for (let i = 0; i < notifications; i++) {
        const n = delivered.find((e) => e.type === "notification" && e.request_id === `req${i}`);
        expect(n, `notification req${i}`).toBeDefined();
        // Each alone is under the per-event limit (1,000,000 bytes) and over a third of the topic's.
        const bytes = Buffer.byteLength(JSON.stringify(n));
        expect(bytes).toBeLessThan(1_000_000);
        expect(bytes * 4).toBeGreaterThan(topicMaxMessageBytes);
        expect((n as { payload: { text: string } }).payload.text).toBe(text(i));
      }
      // Delivered once each: no request was refused and retried whole.
      expect(new Set(delivered.map((e) => e.source.position)).size).toBe(delivered.length);
      expect(logLines.filter((l) => l.includes("session ended"))).toEqual([]);
      await waitFor(
        "the slot to pass the notifications' commits",
        async () => {
          const { rows } = await withPg("postgres", (c) =>
            c.query<{ lsn: string }>("SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1", [db]),
          );
          return lsnOf(rows[0]?.lsn ?? "0/0") >= committedAt;
        },
        30_000,
      );
    } finally {
      if (frozen) process.kill(broker, "SIGCONT");
      await daemon.stop();
    }
  }, 180_000);
});
