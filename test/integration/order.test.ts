import { describe, expect, it } from "vitest";
import { Kafka, logLevel } from "kafkajs";
import {
  consume,
  createDatabase,
  daemonConfig,
  dropDatabase,
  services,
  startDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
  type AirflowMajor,
} from "../support/harness.js";
import { LoadGenerator, checkAgainstLedger, loadSeed, summary, untilSentinels, witnessCommitOrder } from "../support/load.js";

/**
 * Per-DAG commit order under concurrency: many DAGs, several connections committing at once,
 * transactions that touch several DAGs (multi-row UPDATEs and single-row ones). The ledger is what
 * the test committed; a test_decoding slot is PostgreSQL's own account of the commit order.
 * No daemon restart here, so every change must arrive exactly once.
 */

async function activeSlot(slot: string): Promise<void> {
  await waitForStreaming(slot);
}

async function listTopics(): Promise<string[]> {
  const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    return await admin.listTopics();
  } finally {
    await admin.disconnect();
  }
}

describe("per-DAG order across many DAGs and concurrent transactions", () => {
  it("one topic: every change exactly once, each TI's changes in commit order, each DAG's events in commit order", async () => {
    const major: AirflowMajor = "3";
    const db = uniqueName("order");
    const witness = `${db}_witness`;
    const dags = Array.from({ length: 50 }, (_, i) => `dag_${String(i).padStart(2, "0")}`);
    const seed = loadSeed();
    await createDatabase(db, major);
    // Before anything is written: the witness sees every transaction the daemon sees.
    await withPg(db, (c) => c.query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", [witness]));
    const daemon = startDaemon(daemonConfig(db));
    try {
      await activeSlot(db);
      const gen = new LoadGenerator({
        db,
        major,
        dags,
        workers: 4,
        tasksPerRun: 8,
        activePerWorker: 24,
        maxRowsPerTx: 6,
        runsPerWorker: 25,
        multiRowShare: 0.5,
        seed,
      });
      const t0 = Date.now();
      gen.start();
      await gen.finished();
      await gen.commitSentinels();
      const loadMs = Date.now() - t0;

      const consumed = await consume([`${db}.events`], untilSentinels(dags), 90_000);
      const consumeMs = Date.now() - t0 - loadMs;
      const commitRank = await withPg(db, (c) => witnessCommitOrder(c, witness));
      const result = checkAgainstLedger(consumed, gen.ledger, { exactlyOnce: true, commitRank });
      const { ledger } = gen;
      console.log(
        `order (seed ${seed}): ${ledger.count} changes in ${ledger.transactions} transactions (${ledger.multiDagTransactions} across several DAGs, ` +
          `${gen.multiRowStatements} multi-row UPDATEs) over ${dags.length} DAGs from 4 connections in ${loadMs} ms; ` +
          `read back ${result.consumed} events from ${result.partitions} partitions in ${consumeMs} ms`,
      );

      expect(summary(result.problems)).toEqual([]);
      expect(result.consumed).toBe(ledger.count);
      expect(result.duplicates).toBe(0);
      // The load had the intended shape: thousands of changes, concurrent multi-DAG transactions.
      expect(ledger.count).toBeGreaterThan(3000);
      expect(ledger.dags.size).toBe(dags.length);
      expect(ledger.multiDagTransactions).toBeGreaterThan(300);
      expect(gen.multiRowStatements).toBeGreaterThan(100);
      expect(commitRank.size).toBe(ledger.transactions);
      expect(result.partitions).toBe(3);
    } finally {
      await daemon.stop();
      await dropDatabase(db);
    }
  });

  it("one topic per DAG (EVENTSTREAM_TOPIC_TEMPLATE): each DAG's topic holds exactly that DAG's events, in commit order", async () => {
    const major: AirflowMajor = "2";
    const db = uniqueName("orderdag");
    // Airflow's dag_id alphabet: letters, digits, '_', '.', '-'; all of it is legal in topic names.
    const dags = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? `team.etl-${i}` : `report_${i}`));
    const topicOf = (dag: string) => `${db}.${dag}`;
    const seed = loadSeed();
    await createDatabase(db, major);
    const daemon = startDaemon(daemonConfig(db, { EVENTSTREAM_TOPIC_TEMPLATE: `${db}.{dag_id}` }));
    try {
      await activeSlot(db);
      const gen = new LoadGenerator({
        db,
        major,
        dags,
        workers: 4,
        tasksPerRun: 4,
        activePerWorker: 8,
        maxRowsPerTx: 4,
        runsPerWorker: 4,
        seed,
      });
      gen.start();
      await gen.finished();
      await gen.commitSentinels();

      const prefix = `${db}.`;
      await waitFor("every DAG's topic", async () => {
        const have = new Set(await listTopics());
        return dags.every((d) => have.has(topicOf(d)));
      });
      const consumed = await consume(new RegExp(`^${db}\\.`), untilSentinels(dags), 60_000);
      const result = checkAgainstLedger(consumed, gen.ledger, { exactlyOnce: true });
      console.log(
        `per-DAG topics (seed ${seed}): ${gen.ledger.count} changes over ${dags.length} DAGs, ${result.consumed} events read from ${result.partitions} partitions`,
      );

      expect(summary(result.problems)).toEqual([]);
      expect(result.consumed).toBe(gen.ledger.count);
      // Routing: each message sits in its own DAG's topic, and the daemon made no other topic.
      const misrouted = consumed.filter((m) => m.topic !== topicOf(m.event.dag_id ?? "")).map((m) => `${m.topic}: ${m.event.dag_id}`);
      expect(misrouted).toEqual([]);
      expect(new Set(consumed.map((m) => m.topic))).toEqual(new Set(dags.map(topicOf)));
      expect((await listTopics()).filter((t) => t.startsWith(prefix)).sort()).toEqual(dags.map(topicOf).sort());
    } finally {
      await daemon.stop();
      await dropDatabase(db);
    }
  });
});
