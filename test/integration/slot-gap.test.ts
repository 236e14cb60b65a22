import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { Kafka, logLevel } from "kafkajs";
import { pino } from "pino";
import { KafkaSink } from "../../src/sink/kafka.js";
import { TAIL_OFFSETS } from "../../src/sink/checkpoint-topic.js";
import { formatLsn, parseLsn } from "../../src/lsn.js";
import { parseCheckpoint, type Checkpoint } from "../../src/checkpoint/position.js";
import {
  airflowFixture,
  confirmedFlush,
  consume,
  createDatabase,
  daemonConfig,
  daemonEnv,
  dropDatabase,
  exitCode,
  services,
  spawnDaemon,
  uniqueName,
  waitFor,
  withPg,
  type DaemonProcess,
} from "../support/harness.js";
import { insertDagRun } from "../support/airflow-rows.js";
import { startScratchPostgres, type ScratchPostgres } from "../support/scratch-postgres.js";

/**
 * Gaps: the replication slot cannot serve what comes after the last checkpoint. It was dropped
 * (and maybe recreated by the daemon's own create path or by an operator), advanced by someone
 * else, or invalidated by PostgreSQL (max_slot_wal_keep_size). Each is detected at start, reported
 * with the LSNs of the gap and the recovery, the daemon exits 2 and creates or publishes nothing;
 * after the documented recovery (`airflow-eventstream reset-checkpoint`) it streams again. Both
 * delivery modes; everything against real PostgreSQL and Kafka, the daemon as its own process.
 */

const MODES = ["at-least-once", "exactly-once"] as const;
type Mode = (typeof MODES)[number];
const STREAMING = /"msg":"streaming"/;
const DAG = "gap_dag";

/** Every running process this file started, killed at the end whatever happened. */
const spawned: DaemonProcess[] = [];

afterAll(async () => {
  for (const p of spawned) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
});

function envFor(db: string, mode: Mode, extra: Record<string, string> = {}): Record<string, string> {
  return daemonEnv(db, { EVENTSTREAM_DELIVERY: mode, EVENTSTREAM_CHECKPOINT_TOPIC: `${db}.checkpoints`, ...extra });
}

function start(env: Record<string, string>, args?: string[]): DaemonProcess {
  const p = spawnDaemon(env, args);
  spawned.push(p);
  return p;
}

/** Starts the daemon, commits a DAG run, waits until Kafka has its event, stops it with SIGTERM (exit 0). */
async function streamOnce(env: Record<string, string>, commit: () => Promise<unknown>, runId: string): Promise<void> {
  const d = start(env);
  await d.waitForLog(STREAMING, 60_000);
  await commit();
  // Fails if the event never comes: with gap detection off nothing else here would notice a daemon that publishes nothing.
  await consume([env.EVENTSTREAM_TOPIC!], (all) => all.some((m) => m.event.run_id === runId), {
    timeoutMs: 30_000,
    waitingFor: `the event of run ${runId}`,
  });
  d.proc.kill("SIGTERM");
  expect(await exitCode(d)).toBe(0);
}

/** The daemon refuses to start: exit code 2, the gap's message on stderr. Returns all output. */
async function expectGap(env: Record<string, string>, needles: string[]): Promise<string> {
  const d = start(env);
  const code = await exitCode(d);
  const text = d.output.join("\n");
  expect(code, text).toBe(2);
  expect(text).toContain('"error":"SlotGapError"');
  for (const n of ["GAP IN THE EVENT STREAM", "EVENTS WERE LOST", "re-snapshot", "airflow-eventstream reset-checkpoint", ...needles])
    expect(text).toContain(n);
  expect(text).not.toMatch(STREAMING);
  return text;
}

/** `airflow-eventstream reset-checkpoint` with the daemon's environment: exit 0; returns its output. */
async function resetCheckpoint(env: Record<string, string>): Promise<string> {
  const r = start(env, ["reset-checkpoint"]);
  const code = await exitCode(r);
  const text = r.output.join("\n");
  expect(code, text).toBe(0);
  return text;
}

/**
 * The latest value under `key` in the checkpoint topic, read by an independent read_committed
 * consumer until nothing new arrived for 2 s (null for a tombstone or none).
 */
async function checkpointOf(topic: string, key: string): Promise<Checkpoint | null> {
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-gap" });
  const consumer = kafka.consumer({
    groupId: uniqueName("test_gap"),
    maxWaitTimeInMs: 100,
    sessionTimeout: 10_000,
    heartbeatInterval: 500,
  });
  let last: string | null = null;
  let lastAt = 0;
  let joined = false;
  await consumer.connect();
  try {
    consumer.on(consumer.events.GROUP_JOIN, () => {
      joined = true;
      lastAt = Date.now();
    });
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        lastAt = Date.now();
        if (message.key?.toString() === key) last = message.value === null ? null : message.value.toString();
      },
    });
    await waitFor("the checkpoint topic read to its end", async () => joined && Date.now() - lastAt > 2_000, 30_000);
  } finally {
    await consumer.disconnect();
  }
  return last === null ? null : parseCheckpoint(last, "test");
}

/** PostgreSQL's view of the slot, as text LSNs. */
async function slotRow(c: pg.Client, slot: string): Promise<{ confirmed: bigint; walStatus: string } | null> {
  const { rows } = await c.query<{ confirmed: string; wal_status: string }>(
    "SELECT confirmed_flush_lsn::text AS confirmed, wal_status FROM pg_replication_slots WHERE slot_name = $1",
    [slot],
  );
  const r = rows[0];
  return r ? { confirmed: parseLsn(r.confirmed), walStatus: r.wal_status } : null;
}

/** Run ids of the DAG's run events a fresh consumer reads, until `until` has arrived. */
async function runIds(topic: string, until: string): Promise<(string | null)[]> {
  const all = await consume([topic], (got) => got.some((m) => m.event.run_id === until), 30_000);
  return [...new Set(all.filter((m) => m.event.type === "dag_run").map((m) => m.event.run_id))];
}

describe.each(MODES)("%s: PostgreSQL is never told more than a durable checkpoint says", (mode) => {
  it("with checkpoints held back (the status interval at 50 s), the slot waits for them instead of following the WAL; SIGTERM writes the last one", async () => {
    const db = uniqueName("gap_gate");
    await createDatabase(db, "2");
    const env = envFor(db, mode, { EVENTSTREAM_STATUS_INTERVAL_SECONDS: "50" });
    const d = start(env);
    try {
      await d.waitForLog(STREAMING, 60_000);
      // The first checkpoint (at start) and the first one asked for go at once; the next not before 50 s.
      await withPg(db, (c) => insertDagRun(c, "2", DAG, "first"));
      const got = await consume([env.EVENTSTREAM_TOPIC!], (all) => all.some((m) => m.event.run_id === "first"), 30_000);
      const first = parseLsn(got.find((m) => m.event.run_id === "first")!.event.source.commit_lsn);
      // The checkpoint that follows a transaction with events (within 100 ms) must be durable
      // before the other writes: written after them, it would carry the keepalives' position.
      await waitFor(
        "the slot to confirm the first event's transaction",
        async () => ((await confirmedFlush(db, db)) ?? 0n) > first,
        30_000,
      );
      // Then only other tables take writes: keepalives move the safe position, no event carries a checkpoint.
      const walEnd = await withPg(db, async (c) => {
        await c.query("CREATE TABLE other (id serial PRIMARY KEY, payload text)");
        for (let i = 0; i < 20; i++) await c.query("INSERT INTO other (payload) SELECT repeat('x', 200) FROM generate_series(1, 100)");
        return parseLsn((await c.query<{ l: string }>("SELECT pg_current_wal_lsn()::text AS l")).rows[0]!.l);
      });
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 1_000));
        // Sampled before the checkpoint is read: acked_lsn only grows, so this order can only flatter the slot.
        const confirmed = (await confirmedFlush(db, db))!;
        const cp = await checkpointOf(`${db}.checkpoints`, db);
        expect(confirmed).toBeLessThanOrEqual(cp!.ackedLsn!);
        // Held back: without the gate it would have followed the keepalives to the WAL's end.
        expect(confirmed).toBeLessThan(walEnd);
      }
      d.proc.kill("SIGTERM");
      expect(await exitCode(d)).toBe(0);
      const confirmed = (await confirmedFlush(db, db))!;
      expect(confirmed).toBeGreaterThanOrEqual(walEnd);
      expect((await checkpointOf(`${db}.checkpoints`, db))!.ackedLsn!).toBeGreaterThanOrEqual(confirmed);
    } finally {
      if (d.proc.exitCode === null) d.proc.kill("SIGKILL");
      await dropDatabase(db);
    }
  });
});

describe.each(MODES)("%s: a slot dropped or moved while the daemon was down", (mode) => {
  it("dropped, then the daemon's own create path: refused before anything is created; after reset-checkpoint a new slot streams", async () => {
    const db = uniqueName("gap_drop");
    await createDatabase(db, "3");
    const env = envFor(db, mode);
    try {
      await streamOnce(env, () => withPg(db, (c) => insertDagRun(c, "3", DAG, "before")), "before");
      // The invariant the check rests on: PostgreSQL was never told more than the checkpoint says.
      const cp = await checkpointOf(`${db}.checkpoints`, db);
      const confirmed = await confirmedFlush(db, db);
      expect(cp?.ackedLsn).not.toBeNull();
      expect(confirmed).not.toBeNull();
      expect(cp!.ackedLsn!).toBeGreaterThanOrEqual(confirmed!);

      // Dropped while the daemon is down; what is committed now is never in any slot.
      await withPg(db, async (c) => {
        await c.query("SELECT pg_drop_replication_slot($1)", [db]);
        await insertDagRun(c, "3", DAG, "lost");
      });
      await expectGap(env, [
        `replication slot "${db}" does not exist`,
        `up to LSN ${formatLsn(cp!.ackedLsn!)}`,
        "Nothing was created",
        "a new slot",
      ]);
      // Refused twice in a row: nothing was created that would let a second start carry on.
      await expectGap(env, [`replication slot "${db}" does not exist`]);
      expect(await withPg(db, (c) => slotRow(c, db))).toBeNull();

      // The documented recovery: (consumers re-snapshot,) reset, start again.
      expect(await resetCheckpoint(env)).toContain(`deleted the checkpoint of slot "${db}"`);
      expect(await checkpointOf(`${db}.checkpoints`, db)).toBeNull();
      await streamOnce(env, () => withPg(db, (c) => insertDagRun(c, "3", DAG, "after")), "after");
      expect(await runIds(env.EVENTSTREAM_TOPIC!, "after")).toEqual(["before", "after"]);
      // And the new slot is under watch from its first moment.
      expect((await checkpointOf(`${db}.checkpoints`, db))?.ackedLsn).toBeGreaterThanOrEqual((await confirmedFlush(db, db))!);
    } finally {
      await dropDatabase(db);
    }
  });

  it("dropped and recreated by an operator with WAL written in between: refused naming both LSNs, the slot left as found; after reset-checkpoint it streams from that slot", async () => {
    const db = uniqueName("gap_recreate");
    await createDatabase(db, "2");
    const env = envFor(db, mode);
    try {
      await streamOnce(env, () => withPg(db, (c) => insertDagRun(c, "2", DAG, "before")), "before");
      const cp = await checkpointOf(`${db}.checkpoints`, db);
      expect(cp?.ackedLsn).not.toBeNull();

      const recreated = await withPg(db, async (c) => {
        await c.query("SELECT pg_drop_replication_slot($1)", [db]);
        await insertDagRun(c, "2", DAG, "lost");
        await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [db]);
        await insertDagRun(c, "2", DAG, "kept"); // after the new slot: it has this one
        return (await slotRow(c, db))!.confirmed;
      });
      expect(recreated).toBeGreaterThan(cp!.ackedLsn!);
      await expectGap(env, [
        `is at LSN ${formatLsn(recreated)}`,
        `past the last position this daemon ever acknowledged, LSN ${formatLsn(cp!.ackedLsn!)}`,
        "recreated, or advanced",
      ]);
      // The refused daemon held the slot for a moment (the check needs it) and moved nothing, nor
      // wrote a checkpoint that would hide the gap from the next start.
      expect((await withPg(db, (c) => slotRow(c, db)))?.confirmed).toBe(recreated);
      expect((await checkpointOf(`${db}.checkpoints`, db))?.ackedLsn).toBe(cp!.ackedLsn);
      await expectGap(env, [`is at LSN ${formatLsn(recreated)}`]);

      expect(await resetCheckpoint(env)).toContain(`kept slot "${db}"`);
      const d = start(env);
      try {
        await d.waitForLog(STREAMING, 60_000);
        expect(await runIds(env.EVENTSTREAM_TOPIC!, "kept")).toEqual(["before", "kept"]);
      } finally {
        d.proc.kill("SIGTERM");
        expect(await exitCode(d)).toBe(0);
      }
    } finally {
      await dropDatabase(db);
    }
  });

  it("advanced by someone else (pg_replication_slot_advance): refused", async () => {
    const db = uniqueName("gap_advance");
    await createDatabase(db, "3");
    const env = envFor(db, mode);
    try {
      await streamOnce(env, () => withPg(db, (c) => insertDagRun(c, "3", DAG, "before")), "before");
      const cp = await checkpointOf(`${db}.checkpoints`, db);
      const advanced = await withPg(db, async (c) => {
        await insertDagRun(c, "3", DAG, "skipped");
        await c.query("SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())", [db]);
        return (await slotRow(c, db))!.confirmed;
      });
      await expectGap(env, [`is at LSN ${formatLsn(advanced)}`, `LSN ${formatLsn(cp!.ackedLsn!)}`]);
    } finally {
      await dropDatabase(db);
    }
  });
});

describe("a slot invalidated by max_slot_wal_keep_size (a scratch cluster with 1MB)", () => {
  let scratch: ScratchPostgres;
  const scratchClient = (database: string) => new pg.Client({ host: scratch.host, port: scratch.port, user: scratch.user, database });
  async function onScratch<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = scratchClient(database);
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  beforeAll(async () => {
    scratch = await startScratchPostgres({ settings: { wal_level: "logical", max_slot_wal_keep_size: "1MB" } });
  });

  afterAll(async () => {
    await scratch?.stop();
  });

  async function scratchDatabase(prefix: string): Promise<string> {
    const db = uniqueName(prefix);
    await onScratch("postgres", (c) => c.query(`CREATE DATABASE ${db}`));
    await onScratch(db, (c) => c.query(airflowFixture("3").sql));
    return db;
  }

  function scratchEnv(db: string, mode: Mode): Record<string, string> {
    return envFor(db, mode, { PGHOST: scratch.host, PGPORT: String(scratch.port), PGUSER: scratch.user, PGPASSWORD: "" });
  }

  /** Writes WAL and checkpoints until PostgreSQL has invalidated the slot; returns its position then. */
  async function invalidate(db: string): Promise<bigint> {
    return onScratch(db, async (c) => {
      for (let i = 0; i < 30; i++) {
        const s = await slotRow(c, db);
        if (s?.walStatus === "lost") return s.confirmed;
        await c.query("CREATE TABLE IF NOT EXISTS filler (id serial PRIMARY KEY, payload text)");
        await c.query("INSERT INTO filler (payload) SELECT repeat('x', 1000) FROM generate_series(1, 2000)");
        await c.query("SELECT pg_switch_wal()");
        await c.query("CHECKPOINT");
      }
      throw new Error(`slot ${db} still not invalidated: ${JSON.stringify(await slotRow(c, db))}`);
    });
  }

  it.each(MODES)(
    "%s, daemon stopped: exit 2 with the gap and the recovery; reset-checkpoint drops the slot; a new one streams",
    async (mode) => {
      const db = await scratchDatabase(`gap_lost_${mode === "exactly-once" ? "eos" : "alo"}`);
      const env = scratchEnv(db, mode);
      await streamOnce(env, () => onScratch(db, (c) => insertDagRun(c, "3", DAG, "before")), "before");
      const cp = await checkpointOf(`${db}.checkpoints`, db);
      await onScratch(db, (c) => insertDagRun(c, "3", DAG, "lost"));
      await invalidate(db);
      const wal = await onScratch(db, async (c) =>
        parseLsn((await c.query<{ l: string }>("SELECT pg_current_wal_lsn()::text AS l")).rows[0]!.l),
      );

      const text = await expectGap(env, [
        'wal_status "lost"',
        "max_slot_wal_keep_size (1MB)",
        `after LSN ${formatLsn(cp!.ackedLsn!)}`,
        "drops the invalidated slot",
      ]);
      const to = /up to the current WAL position ([0-9A-F]+\/[0-9A-F]+)/.exec(text)?.[1];
      expect(to && parseLsn(to)).toBeGreaterThanOrEqual(wal);

      expect(await resetCheckpoint(env)).toContain(`dropped the invalidated slot "${db}"`);
      expect(await onScratch(db, (c) => slotRow(c, db))).toBeNull();
      await streamOnce(env, () => onScratch(db, (c) => insertDagRun(c, "3", DAG, "after")), "after");
      expect(await runIds(env.EVENTSTREAM_TOPIC!, "after")).toEqual(["before", "after"]);
    },
  );

  it.each(MODES)(
    "%s, daemon running but frozen (SIGSTOP) meanwhile: PostgreSQL ends its stream; the restarted session exits 2",
    async (mode) => {
      const db = await scratchDatabase(`gap_frozen_${mode === "exactly-once" ? "eos" : "alo"}`);
      const env = scratchEnv(db, mode);
      const d = start(env);
      await d.waitForLog(STREAMING, 60_000);
      await onScratch(db, (c) => insertDagRun(c, "3", DAG, "before"));
      await consume([env.EVENTSTREAM_TOPIC!], (all) => all.some((m) => m.event.run_id === "before"), 30_000);
      d.proc.kill("SIGSTOP");
      try {
        // PostgreSQL terminates the walsender holding the slot to invalidate it.
        await invalidate(db);
      } finally {
        d.proc.kill("SIGCONT");
      }
      const code = await exitCode(d);
      const text = d.output.join("\n");
      expect(code, text).toBe(2);
      expect(text).toContain("session ended; restarting");
      expect(text).toContain('"error":"SlotGapError"');
      expect(text).toContain('wal_status "lost"');
      expect(text).toContain("airflow-eventstream reset-checkpoint");
    },
  );
});

describe("a checkpoint written by the previous version (no acked_lsn)", () => {
  it("is read: a slot ahead of it cannot be told and streams (and the record gains acked_lsn); a missing slot is refused", async () => {
    const db = uniqueName("gap_legacy");
    await createDatabase(db, "3");
    const env = envFor(db, "at-least-once");
    const topic = `${db}.checkpoints`;
    const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-gap" });
    const producer = kafka.producer();
    await producer.connect();
    try {
      await streamOnce(env, () => withPg(db, (c) => insertDagRun(c, "3", DAG, "before")), "before");
      const sysid = await withPg(
        db,
        async (c) => (await c.query<{ s: string }>("SELECT system_identifier::text AS s FROM pg_control_system()")).rows[0]!.s,
      );
      const legacy = {
        version: 1,
        slot: db,
        position: "0000000000000010-00000000",
        commit_lsn: "0/10",
        index: 0,
        system_identifier: sysid,
        database: db,
        written_at: null,
      };
      await producer.send({ topic, acks: -1, messages: [{ key: db, value: JSON.stringify(legacy) }] });
      await withPg(db, (c) => insertDagRun(c, "3", DAG, "moved"));
      await withPg(db, (c) => c.query("SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())", [db]));

      const d = start(env);
      try {
        const line = await d.waitForLog(/no gap between the checkpoint and the slot/, 60_000);
        expect(line).toContain("checkpoint without acked_lsn (earlier version)");
        await d.waitForLog(STREAMING);
        await waitFor(
          "the checkpoint rewritten with acked_lsn",
          async () => typeof (await checkpointOf(topic, db))?.ackedLsn === "bigint",
          30_000,
          500,
        );
      } finally {
        d.proc.kill("SIGTERM");
        expect(await exitCode(d)).toBe(0);
      }

      await producer.send({ topic, acks: -1, messages: [{ key: db, value: JSON.stringify(legacy) }] });
      await withPg(db, (c) => c.query("SELECT pg_drop_replication_slot($1)", [db]));
      await expectGap(env, [`replication slot "${db}" does not exist`, "up to LSN 0/10", "last event 0000000000000010-00000000"]);
    } finally {
      await producer.disconnect();
      await dropDatabase(db);
    }
  });
});

describe("at-least-once where the checkpoint topic cannot be created", () => {
  it("exit 2 saying what to create or how to switch gap detection off; nothing created; with EVENTSTREAM_GAP_DETECTION=false it streams", async () => {
    const db = uniqueName("gap_notopic");
    await createDatabase(db, "2");
    const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic: `${db}.events`, numPartitions: 1 }], waitForLeaders: true });
      const env = envFor(db, "at-least-once", { EVENTSTREAM_CREATE_TOPICS: "false" });
      const d = start(env);
      const code = await exitCode(d);
      const text = d.output.join("\n");
      expect(code, text).toBe(2);
      for (const n of [
        `the checkpoint topic ${db}.checkpoints does not exist`,
        `kafka-topics.sh --create --topic ${db}.checkpoints --partitions 1 --config cleanup.policy=compact`,
        "EVENTSTREAM_GAP_DETECTION=false",
      ]) {
        expect(text).toContain(n);
      }
      expect(await withPg(db, (c) => slotRow(c, db))).toBeNull();
      expect(await admin.listTopics()).not.toContain(`${db}.checkpoints`);

      await streamOnce(
        // Creation off: the current-state topic would be missing too.
        { ...env, EVENTSTREAM_GAP_DETECTION: "false", EVENTSTREAM_STATE_TOPIC_ENABLED: "false" },
        () => withPg(db, (c) => insertDagRun(c, "2", DAG, "unwatched")),
        "unwatched",
      );
      expect(await admin.listTopics()).not.toContain(`${db}.checkpoints`);
    } finally {
      await admin.disconnect();
      await dropDatabase(db);
    }
  });
});

describe.each(MODES)("%s: reading the checkpoint topic", (mode) => {
  it("finds the slot's latest record among the last ones without reading the rest; before them, by reading everything; a tombstone too", async () => {
    const slot = uniqueName("gap_read");
    const topic = `${slot}.checkpoints`;
    const cfg = daemonConfig(slot, { EVENTSTREAM_DELIVERY: mode, EVENTSTREAM_CHECKPOINT_TOPIC: topic, EVENTSTREAM_TOPIC_PARTITIONS: "1" });
    const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-gap" });
    const producer = kafka.producer();
    await producer.connect();
    const record = (lsn: string) =>
      JSON.stringify({
        version: 1,
        slot,
        position: null,
        commit_lsn: null,
        index: null,
        acked_lsn: lsn,
        system_identifier: "1",
        database: "d",
      });
    const others = (n: number, tag: string) =>
      Array.from({ length: n }, (_, i) => ({ key: `other_${i % 50}`, value: record(`${tag}/${i.toString(16)}`) }));
    /** readCheckpoint() through a fresh sink, with its log line. */
    const read = async () => {
      const lines: string[] = [];
      const sink = new KafkaSink(cfg, pino({ level: "info" }, { write: (l: string) => lines.push(l) }), {
        failed: () => undefined,
        ack: { acked: () => undefined, ackedLsnFor: () => 0n, checkpointed: () => undefined },
      });
      try {
        await sink.connect(null);
        const cp = await sink.readCheckpoint({ systemIdentifier: "1", database: "d" });
        const info = JSON.parse(lines.find((l) => l.includes("recordsRead"))!) as { recordsRead: number; fullRead: boolean };
        return { cp, ...info };
      } finally {
        await sink.close();
      }
    };
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({
      topics: [{ topic, numPartitions: 1, configEntries: [{ name: "cleanup.policy", value: "compact" }] }],
      waitForLeaders: true,
    });
    await admin.disconnect();
    try {
      await producer.send({ topic, acks: -1, messages: [{ key: slot, value: record("1/0") }] });
      for (let i = 0; i < 3; i++) await producer.send({ topic, acks: -1, messages: others(2_500, "2") });
      // Before the last TAIL_OFFSETS: found by reading everything.
      const early = await read();
      expect(early.cp?.ackedLsn).toBe(parseLsn("1/0"));
      expect(early.fullRead).toBe(true);
      expect(early.recordsRead).toBeGreaterThan(Number(TAIL_OFFSETS));

      await producer.send({ topic, acks: -1, messages: [{ key: slot, value: record("3/0") }, ...others(100, "4")] });
      const late = await read();
      expect(late.cp?.ackedLsn).toBe(parseLsn("3/0"));
      expect(late.fullRead).toBe(false);
      expect(late.recordsRead).toBeLessThanOrEqual(Number(TAIL_OFFSETS) + 10);

      await producer.send({ topic, acks: -1, messages: [{ key: slot, value: null }] });
      const gone = await read();
      expect(gone.cp).toBeNull();
      expect(gone.fullRead).toBe(false);
    } finally {
      await producer.disconnect();
    }
  });
});
