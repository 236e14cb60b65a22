import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamEvent } from "../../src/airflow/events.js";
import {
  confirmedFlush,
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  startDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
} from "../support/harness.js";
import { insertDagRun, insertTi } from "../support/airflow-rows.js";

/**
 * Topic per DAG (EVENTSTREAM_TOPIC_TEMPLATE) with dag_ids Airflow accepts and Kafka does not:
 * "données" and "donnàes" sanitise alike, yet each DAG's events must land in a topic of its own.
 */
describe("topic per DAG with non-ASCII dag_ids", () => {
  const db = uniqueName("perdag");
  const dags = ["données", "donnàes"];
  let daemon: ReturnType<typeof startDaemon>;

  beforeAll(async () => {
    await createDatabase(db, "3");
    daemon = startDaemon(daemonConfig(db, { EVENTSTREAM_TOPIC_TEMPLATE: `${db}.{dag_id}` }));
    await waitForStreaming(db);
  });

  afterAll(async () => {
    await daemon?.stop();
    await dropDatabase(db);
  });

  it("puts distinct dag_ids that sanitise alike into distinct topics", async () => {
    const written = await withPg(db, async (c) => {
      for (const dag of dags) {
        await insertDagRun(c, "3", dag, "r1", "running");
        await insertTi(c, "3", { dag_id: dag, task_id: "t", run_id: "r1" }, { state: "running", try_number: 1 });
      }
      return walLsn(c);
    });
    // Acknowledged means in Kafka: the topics exist before the consumer resolves its pattern.
    await waitFor("the slot to pass the writes", async () => ((await confirmedFlush(db, db)) ?? 0n) >= written);

    const all = await consume(new RegExp(`^${db}\\.`), (got) =>
      dags.every((d) => got.some((m) => (m.event as StreamEvent).type === "task_instance" && m.event.dag_id === d)),
    );
    const topicsOf = new Map<string, Set<string>>();
    for (const m of all) {
      const e = StreamEvent.parse(m.event);
      if (e.type === "table_truncated" || e.type === "stream_gap" || e.type === "asset_event") throw new Error(`unexpected ${e.type}`);
      expect(m.key).toBe(e.dag_id);
      topicsOf.set(e.dag_id!, (topicsOf.get(e.dag_id!) ?? new Set()).add(m.topic));
    }
    const [a, b] = dags.map((d) => [...(topicsOf.get(d) ?? [])]);
    expect(a).toHaveLength(1);
    expect(b).toHaveLength(1);
    expect(a![0]).not.toBe(b![0]);
    for (const t of [a![0]!, b![0]!]) expect(t).toMatch(new RegExp(`^${db}\\.donn_es-[0-9a-f]{16}$`));
  });

  it("sends table_truncated to every partition of EVENTSTREAM_TOPIC, created on first use", async () => {
    const written = await withPg(db, async (c) => {
      await c.query("TRUNCATE task_instance CASCADE");
      return walLsn(c);
    });
    // The topic is created when the event is first sent: subscribing before it exists fails
    // (UNKNOWN_TOPIC_OR_PARTITION). Acknowledged means in Kafka, so the topic exists by then.
    await waitFor("the slot to pass the TRUNCATE", async () => ((await confirmedFlush(db, db)) ?? 0n) >= written);
    const all = await consume(
      [`${db}.events`],
      (got) => got.filter((m) => (m.event as StreamEvent).type === "table_truncated").length === 3,
    );
    const truncates = all
      .map((m) => ({ partition: m.partition, key: m.key, event: StreamEvent.parse(m.event) }))
      .filter((m) => m.event.type === "table_truncated");
    expect(truncates.map((m) => m.partition).sort()).toEqual([0, 1, 2]);
    expect(truncates.every((m) => m.key === null)).toBe(true);
  });
});

/** The server's current WAL position. */
async function walLsn(c: pg.Client): Promise<bigint> {
  const { rows } = await c.query<{ lsn: string }>("SELECT lpad(replace(pg_current_wal_lsn()::text, '/', ''), 16, '0') AS lsn");
  return BigInt(`0x${rows[0]!.lsn}`);
}
