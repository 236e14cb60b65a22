import { runCli } from "../support/cli.js";
import { Writable } from "node:stream";
import { Kafka, logLevel, type IHeaders } from "kafkajs";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseTarget } from "../../src/backfill/target.js";
import { replay, type ReplayArgs } from "../../src/backfill/replay.js";
import type { Config } from "../../src/config.js";
import {
  confirmedFlush,
  createDatabase,
  daemonConfig,
  daemonEnv,
  dropDatabase,
  services,
  startDaemon,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
} from "../support/harness.js";
import { LoadGenerator, SENTINEL_RUN, loadSeed } from "../support/load.js";

/** A record as Kafka holds it: bytes, not parsed. */
interface Raw {
  topic: string;
  partition: number;
  offset: bigint;
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders;
  /** Parsed `source`, when the value is an event. */
  position: string | null;
  commitTime: string | null;
  dag: string | null;
}

const FOREIGN_HEADERS = { "trace-id": Buffer.from([0, 1, 2, 255]), note: "héllo" };

/**
 * `airflow-eventstream replay` against the real daemon's topics, in both layouts: one topic written
 * exactly-once (transaction markers between the events) and a topic per DAG written at-least-once,
 * fed by the same Airflow-like load. Every replayed record is compared byte for byte with the record
 * its source header names; the set replayed is compared with what the window should hold.
 */
describe("replay", () => {
  const db = uniqueName("replay");
  const perDag = `${db}_pd`;
  const dags = ["alpha", "beta", "gamma", "delta", "epsilon"];
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "replay-test" });
  const admin = kafka.admin();
  const single: Config = daemonConfig(db, { EVENTSTREAM_DELIVERY: "exactly-once" });
  const layoutEnv = {
    EVENTSTREAM_SLOT: perDag,
    EVENTSTREAM_TOPIC: `${perDag}.events`,
    EVENTSTREAM_TOPIC_TEMPLATE: `${perDag}.dag.{dag_id}`,
    EVENTSTREAM_CHECKPOINT_TOPIC: `checkpoints.${perDag}`,
  };
  const split: Config = daemonConfig(db, layoutEnv);
  let originals: Raw[] = [];
  const quiet = pino({ level: "silent" });

  beforeAll(async () => {
    await admin.connect();
    await createDatabase(db, "3");
    const a = startDaemon(single);
    await waitForStreaming(db);
    const b = startDaemon(split);
    await waitForStreaming(perDag);
    const gen = new LoadGenerator({
      db,
      major: "3",
      dags,
      workers: 4,
      tasksPerRun: 4,
      activePerWorker: 8,
      maxRowsPerTx: 4,
      runsPerWorker: 3,
      seed: loadSeed(),
    });
    gen.start();
    // Another producer's record in the middle of the one topic: no position, binary headers.
    await new Promise((r) => setTimeout(r, 1_500));
    const foreign = kafka.producer();
    await foreign.connect();
    await foreign.send({ topic: single.topic, messages: [{ key: "alpha", value: Buffer.from([0xde, 0xad]), headers: FOREIGN_HEADERS }] });
    await foreign.disconnect();
    await gen.finished();
    await gen.commitSentinels();
    const lsn = await withPg(db, async (c) =>
      BigInt(`0x${(await c.query<{ l: string }>("SELECT lpad(replace(pg_current_wal_lsn()::text, '/', ''), 16, '0') AS l")).rows[0]!.l}`),
    );
    for (const slot of [db, perDag])
      await waitFor(`slot ${slot} to pass the load`, async () => ((await confirmedFlush(db, slot)) ?? 0n) >= lsn, 90_000);
    await a.stop();
    await b.stop();
    originals = await readAll(new RegExp(`^(${db}\\.events|${perDag}\\..*)$`), 2 * dags.length);
  }, 240_000);

  afterAll(async () => {
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(db) || t.endsWith(db) || t.includes(perDag));
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.disconnect();
    await dropDatabase(db);
  });

  /** Reads topics matching `pattern` until `sentinels` sentinel runs were seen (one per DAG per layout). */
  async function readAll(pattern: RegExp, sentinels: number): Promise<Raw[]> {
    const consumer = kafka.consumer({ groupId: uniqueName("replay-test"), maxWaitTimeInMs: 100 });
    const out: Raw[] = [];
    let seen = 0;
    await consumer.connect();
    try {
      await consumer.subscribe({ topics: [pattern], fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`read ${out.length} records, ${seen} sentinels`)), 60_000);
        void consumer.run({
          eachMessage: async ({ topic, partition, message }) => {
            const raw = toRaw(topic, partition, message);
            out.push(raw);
            if (
              raw.value !== null &&
              raw.value.toString().includes(`"run_id":"${SENTINEL_RUN}"`) &&
              raw.value.toString().includes('"type":"dag_run"')
            )
              seen++;
            if (seen >= sentinels) {
              clearTimeout(t);
              resolve();
            }
          },
        });
      });
    } finally {
      await consumer.disconnect();
    }
    return out;
  }

  function toRaw(
    topic: string,
    partition: number,
    m: { offset: string; key: Buffer | null; value: Buffer | null; headers?: IHeaders },
  ): Raw {
    let src: { position?: string; commit_time?: string } | null = null;
    let dag: string | null = null;
    try {
      const v = JSON.parse(m.value?.toString() ?? "null") as { source?: { position?: string; commit_time?: string }; dag_id?: string };
      src = v.source ?? null;
      dag = v.dag_id ?? null;
    } catch {
      // Not an event.
    }
    return {
      topic,
      partition,
      offset: BigInt(m.offset),
      key: m.key,
      value: m.value,
      headers: m.headers ?? {},
      position: src?.position ?? null,
      commitTime: src?.commit_time ?? null,
      dag,
    };
  }

  /** Runs a replay into a fresh topic and reads it back whole. */
  async function replayToTopic(cfg: Config, args: Omit<ReplayArgs, "output">): Promise<{ replayId: string; out: Raw[] }> {
    const topic = `${db}.out.${uniqueName("r")}`;
    const done = await replay(cfg, { ...args, output: { kind: "topic", topic } }, quiet, {
      out: new Writable({ write: (_c, _e, cb) => cb() }),
      err: Object.assign(new Writable({ write: (_c, _e, cb) => cb() }), { isTTY: false }),
    });
    // Read back as many records as the replay says it wrote; the offsets below check it wrote no more.
    expect(done.records).toBeGreaterThan(0);
    const out = await readCount(topic, done.records);
    // Exactly-once writes in transactions: each leaves a commit marker, an offset with no record.
    // Kafka writes a commit's markers after the commit returns: the last stable offset may lag a little.
    const total = await waitFor(`the end offsets of ${topic}`, async () => {
      const n = (await admin.fetchTopicOffsets(topic)).reduce((sum, o) => sum + Number(o.high), 0);
      return n >= done.records ? n : null;
    });
    if (cfg.delivery === "exactly-once") expect(total).toBeGreaterThan(done.records);
    else expect(total).toBe(done.records);
    return { replayId: done.replayId, out };
  }

  async function readCount(topic: string, records: number): Promise<Raw[]> {
    const consumer = kafka.consumer({ groupId: uniqueName("replay-out"), maxWaitTimeInMs: 100 });
    const out: Raw[] = [];
    await consumer.connect();
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`read ${out.length} of ${records} replayed records`)), 30_000);
        void consumer.run({
          eachMessage: async ({ topic: tp, partition, message }) => {
            out.push(toRaw(tp, partition, message));
            if (out.length >= records) {
              clearTimeout(t);
              resolve();
            }
          },
        });
      });
    } finally {
      await consumer.disconnect();
    }
    return out;
  }

  /** The replayed records are byte for byte the records their source header names, per DAG in the original order; returns the sources. */
  function checkCopies(out: Raw[], replayId: string): Raw[] {
    const byId = new Map(originals.map((r) => [`${r.topic}/${r.partition}/${r.offset}`, r]));
    const sources = out.map((r) => {
      expect(r.headers["eventstream-replay"]?.toString()).toBe(replayId);
      const id = r.headers["eventstream-replay-source"]?.toString() ?? "";
      const src = byId.get(id);
      expect(src, id).toBeDefined();
      expect(r.key?.toString("base64")).toBe(src!.key?.toString("base64"));
      expect(r.value?.toString("base64")).toBe(src!.value?.toString("base64"));
      const { "eventstream-replay": _a, "eventstream-replay-source": _b, ...rest } = r.headers;
      expect(Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, (v as Buffer).toString("base64")]))).toEqual(
        Object.fromEntries(Object.entries(src!.headers).map(([k, v]) => [k, (v as Buffer).toString("base64")])),
      );
      return src!;
    });
    // Per DAG (key), the original order.
    for (const dag of dags) {
      const got = out.filter((r) => r.key?.toString() === dag).map((r) => r.headers["eventstream-replay-source"]!.toString());
      const want = sources.filter((s) => s.key?.toString() === dag);
      const sorted = [...want].sort((x, y) => (x.topic === y.topic ? (x.offset < y.offset ? -1 : 1) : x.topic < y.topic ? -1 : 1));
      expect(got).toEqual(sorted.map((s) => `${s.topic}/${s.partition}/${s.offset}`));
    }
    return sources;
  }

  const events = (topicOk: (t: string) => boolean) => originals.filter((r) => r.position !== null && topicOk(r.topic));
  const isSingle = (t: string) => t === single.topic;
  const isSplit = (t: string) => t.startsWith(`${perDag}.`);
  const positions = (rs: Raw[]) => rs.map((r) => `${r.topic}@${r.position}`).sort();

  it("one topic, exactly-once: from a position, and from an LSN with --until, byte for byte", async () => {
    const evs = events(isSingle);
    const from = [...evs].map((r) => r.position!).sort()[Math.floor(evs.length / 3)]!;
    const { replayId, out } = await replayToTopic(single, { from: parseTarget(from), until: null, dags: null });
    const sources = checkCopies(out, replayId);
    expect(positions(sources.filter((s) => s.position !== null))).toEqual(positions(evs.filter((r) => r.position! >= from)));
    // The foreign record sits after the first events: replayed when the window starts before it.
    const foreign = originals.find((r) => isSingle(r.topic) && r.position === null)!;
    const fromStart = await replayToTopic(single, { from: parseTarget("0/1"), until: null, dags: null });
    expect(checkCopies(fromStart.out, fromStart.replayId).filter((s) => s.position === null)).toEqual([foreign]);

    const sorted = [...evs].map((r) => r.position!).sort();
    const lsnFrom = sorted[Math.floor(sorted.length / 4)]!;
    const lsnUntil = sorted[Math.floor((sorted.length * 3) / 4)]!;
    const asLsn = (p: string) => `${p.slice(0, 8).replace(/^0+(?=.)/, "")}/${p.slice(8, 16)}`;
    const window = await replayToTopic(single, { from: parseTarget(asLsn(lsnFrom)), until: parseTarget(asLsn(lsnUntil)), dags: null });
    const lo = `${lsnFrom.slice(0, 16)}-00000000`;
    const hi = `${lsnUntil.slice(0, 16)}-00000000`;
    expect(positions(checkCopies(window.out, window.replayId).filter((s) => s.position !== null))).toEqual(
      positions(evs.filter((r) => r.position! >= lo && r.position! < hi)),
    );
  });

  it("one topic with --dag: only those DAGs (and events about every DAG), each in its order", async () => {
    const evs = events(isSingle);
    const from = [...evs].map((r) => r.position!).sort()[10]!;
    const { replayId, out } = await replayToTopic(single, { from: parseTarget(from), until: null, dags: ["beta", "delta"] });
    const sources = checkCopies(out, replayId);
    expect(positions(sources.filter((s) => s.position !== null))).toEqual(
      positions(evs.filter((r) => r.position! >= from && (r.dag === "beta" || r.dag === "delta"))),
    );
  });

  it("topic per DAG: from a time, all DAGs' topics found by the template, and with --dag", async () => {
    const evs = events(isSplit);
    const times = evs.map((r) => r.commitTime!).sort();
    const at = times[Math.floor(times.length / 2)]!;
    const { replayId, out } = await replayToTopic(split, { from: parseTarget(at), until: null, dags: null });
    const got = checkCopies(out, replayId);
    expect(new Set(got.map((s) => s.topic)).size).toBeGreaterThanOrEqual(dags.length);
    // Every event committed at or after the time is there; none committed clearly before it (commit
    // times of concurrent commits may be out of LSN order by a little: see offsets.ts).
    const gotPos = new Set(positions(got));
    const ms = Date.parse(at);
    for (const r of evs) {
      if (r.commitTime! >= at) expect(gotPos.has(`${r.topic}@${r.position}`), r.position!).toBe(true);
      if (Date.parse(r.commitTime!) < ms - 50) expect(gotPos.has(`${r.topic}@${r.position}`), r.position!).toBe(false);
    }
    const gamma = await replayToTopic(split, { from: parseTarget(at), until: null, dags: ["gamma"] });
    const g = checkCopies(gamma.out, gamma.replayId);
    expect(positions(g)).toEqual(positions(got.filter((s) => s.dag === "gamma" || s.key === null)));
    expect(g.length).toBeGreaterThan(0);
  });

  it("--stdout: JSON lines of the window, through the CLI", async () => {
    const evs = events(isSingle);
    const from = [...evs].map((r) => r.position!).sort()[Math.floor(evs.length / 2)]!;
    const run = await runCli(["replay", "--from", from, "--stdout"], daemonEnv(db, { EVENTSTREAM_DELIVERY: "exactly-once" }));
    expect(run.code, run.err).toBe(0);
    const lines = run.out
      .split("\n")
      .filter((l) => l !== "")
      .map(
        (l) =>
          JSON.parse(l) as {
            topic: string;
            partition: number;
            offset: string;
            key: string;
            value: { source?: { position: string } } | null;
            value_base64?: string;
          },
      );
    const withSource = lines.filter((l) => l.value?.source !== undefined);
    expect(withSource.map((l) => `${l.topic}@${l.value!.source!.position}`).sort()).toEqual(
      positions(evs.filter((r) => r.position! >= from)),
    );
    const byId = new Map(originals.map((r) => [`${r.topic}/${r.partition}/${r.offset}`, r]));
    for (const l of lines) {
      const src = byId.get(`${l.topic}/${l.partition}/${l.offset}`)!;
      expect(l.key).toBe(src.key!.toString());
      // Values that are not JSON (the foreign record) come as base64, bytes kept.
      if (l.value === null) expect(l.value_base64).toBe(src.value!.toString("base64"));
      else expect(JSON.stringify(l.value)).toBe(src.value!.toString());
    }
    expect(run.err).toContain(`replayed ${lines.length} records`);
  });

  it("a position older than retention: exit code 2 naming the oldest event left", async () => {
    // The partition holding the most events, cut after its fifth.
    const inPartition = (p: number) => originals.filter((r) => isSingle(r.topic) && r.partition === p && r.position !== null);
    const first = [0, 1, 2].map(inPartition).sort((x, y) => y.length - x.length)[0]!;
    const cut = first[5]!;
    // The admin finds the partition's leader in its metadata, which predates the topic.
    await admin.fetchTopicMetadata({ topics: [single.topic] });
    await admin.deleteTopicRecords({ topic: single.topic, partitions: [{ partition: cut.partition, offset: cut.offset.toString() }] });
    const run = await runCli(["replay", "--from", first[0]!.position!, "--stdout"], daemonEnv(db));
    expect(run.code, run.err).toBe(2);
    expect(run.out).toBe("");
    expect(run.err).toContain(`partition ${cut.partition}: ${cut.position} (committed ${cut.commitTime})`);
    expect(run.err).toContain("is older than what topic");
    // From the oldest event left: no error.
    const ok = await runCli(["replay", "--from", cut.position!, "--stdout"], daemonEnv(db));
    expect(ok.code, ok.err).toBe(0);
  });

  it("refuses a bad --from with exit code 2", async () => {
    const run = await runCli(["replay", "--from", "yesterday", "--stdout"], daemonEnv(db));
    expect(run.code).toBe(2);
    expect(run.err).toContain("is not a position, an LSN or a time");
  });
});
