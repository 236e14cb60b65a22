/**
 * The daemon's own CPU per change before the sink (issue 14): a captured pgoutput stream replayed
 * through the real decoder, mapper and message loop (decode -> model -> JSON -> state records ->
 * ack rule), with a sink that only keeps what it is handed. No Kafka, no socket: what is measured is
 * the part of the drain's profile that is not the Kafka client's.
 *
 *   # once: the bench's Airflow 3.x workload written into a scratch database, its WAL read with
 *   # pg_logical_slot_get_binary_changes (pgoutput v1) into a hex file (one message per line)
 *   eval "$(bash scripts/services.sh env)"
 *   npm run build && node bench/hot-path.ts --capture bench/results/hot-path.hex [--transitions 30000]
 *   # then, as often as wanted (no services needed):
 *   node bench/hot-path.ts bench/results/hot-path.hex [--rounds 7] [--digest]
 *   node --cpu-prof --cpu-prof-dir=bench/results/profiles bench/hot-path.ts bench/results/hot-path.hex
 *   # the same through the model thread (EVENTSTREAM_MODEL_THREAD): reads of ~64 KB handed over in
 *   # turn, paused while its queue is full; compare the wall time, pinned with taskset
 *   taskset -c 0,1 node bench/hot-path.ts bench/results/hot-path.hex --model-thread
 *
 * Prints CPU µs per change and per event (process.cpuUsage, every thread's, best and median round;
 * each round is a fresh session over the whole stream), the wall time and events/s (whole round,
 * and its second half, after the compiler has warmed up a new model thread), and with --digest a SHA-256 of every record handed to the
 * sink (topic, key, value, state records): equal digests before and after a change mean
 * byte-for-byte equal output. The hashing is inside the timed loop: compare times without --digest.
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import pg from "pg";
import type * as ConfigModule from "../src/config.js";
import type * as AckModule from "../src/checkpoint/ack.js";
import type * as TransactionsModule from "../src/decode/transactions.js";
import type * as MapperModule from "../src/airflow/mapper.js";
import type * as RoutingModule from "../src/sink/routing.js";
import type * as LoopModule from "../src/session-loop.js";
import type * as ThreadModule from "../src/loop/thread.js";
import type * as LifecycleModule from "../src/lifecycle.js";
import type * as TapModule from "../src/snapshot/tap.js";
import type * as MetricsModule from "../src/operate/metrics.js";
import type * as LogModule from "../src/log.js";
import type { SinkRecord } from "../src/sink/kafka.js";
import { Workload, airflowSchema, sqlFor } from "./workload.ts";

const ROOT = new URL("..", import.meta.url).pathname;
// The built modules (npm run build), loaded by path so that type-checking never needs dist/.
const dist = new URL("../dist/", import.meta.url).href;
const load = async <T>(path: string): Promise<T> => (await import(`${dist}${path}`)) as T;

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? undefined : args[i + 1];
};

if (flag("capture") !== undefined) await capture(flag("capture")!, Number(flag("transitions") ?? 30_000));
else await replay(args.find((a) => !a.startsWith("--") && !/^\d+$/.test(a)) ?? "bench/results/hot-path.hex");

/** The workload into a scratch database; its WAL, as pgoutput messages, into `file`. */
async function capture(file: string, transitions: number): Promise<void> {
  const name = `hot_path_${process.pid}`;
  const admin = new pg.Client();
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  // The schema's script leaves its session's settings (search_path) behind: a fresh session after it.
  const schema = new pg.Client({ database: name });
  await schema.connect();
  await schema.query(airflowSchema(ROOT, "3").sql);
  await schema.end();
  const c = new pg.Client({ database: name });
  try {
    await c.connect();
    await c.query(`CREATE PUBLICATION ${name} FOR TABLE task_instance, dag_run`);
    await c.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [name]);
    const sql = sqlFor("3");
    const w = new Workload(200, 7, 0.02, 1);
    const runs = w.plan(transitions);
    for (const run of runs) {
      const seed = sql.seed(run);
      run.dagRunId = ((await c.query({ name: seed.name, text: seed.text, values: seed.values })).rows[0] as { id: number }).id;
    }
    let txs = 0;
    for (const run of runs) {
      for (const tx of w.script(run, sql)) {
        await c.query({ name: tx.name, text: tx.text, values: tx.values }).catch((e: unknown) => {
          throw new Error(`${tx.name}: ${String(e)}`);
        });
        txs++;
      }
    }
    const res = await c.query<{ data: Buffer }>(
      `SELECT data FROM pg_logical_slot_get_binary_changes($1::name, NULL, NULL, 'proto_version', '1', 'publication_names', $1::text)`,
      [name],
    );
    writeFileSync(file, res.rows.map((r) => r.data.toString("hex")).join("\n") + "\n");
    console.log(`${file}: ${res.rows.length} messages, ${txs} transactions after the seed, ${transitions} transitions planned`);
    await c.query(`SELECT pg_drop_replication_slot($1)`, [name]);
  } finally {
    await c.end().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

async function replay(file: string): Promise<void> {
  const { loadConfig } = await load<typeof ConfigModule>("config.js");
  const { AckRule } = await load<typeof AckModule>("checkpoint/ack.js");
  const { TransactionDecoder } = await load<typeof TransactionsModule>("decode/transactions.js");
  const { AirflowMapper } = await load<typeof MapperModule>("airflow/mapper.js");
  const { TopicRouter } = await load<typeof RoutingModule>("sink/routing.js");
  const { MessageLoop } = await load<typeof LoopModule>("session-loop.js");
  const { ThreadedLoop, HeldStream } = await load<typeof ThreadModule>("loop/thread.js");
  const { Lifecycle } = await load<typeof LifecycleModule>("lifecycle.js");
  const { SnapshotTap } = await load<typeof TapModule>("snapshot/tap.js");
  const { Metrics } = await load<typeof MetricsModule>("operate/metrics.js");
  const { createLogger } = await load<typeof LogModule>("log.js");

  const messages = readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => Buffer.from(l, "hex"));
  const rounds = Number(flag("rounds") ?? 7);
  const digest = args.includes("--digest");
  const cfg = loadConfig({ LOG_LEVEL: "warn" }, new Map());
  const log = createLogger("warn", 2);
  const metrics = new Metrics({ version: "", airflowSchema: cfg.airflowSchema, delivery: cfg.delivery, stallMs: 0 }, false);

  const modelThread = args.includes("--model-thread");
  const once = async (
    threaded: boolean,
  ): Promise<{ cpuUs: number; wallMs: number; secondHalfMs: number; changes: number; events: number; hash: string }> => {
    const life = new Lifecycle();
    const hash = digest ? createHash("sha256") : null;
    let events = 0;
    let paused = false;
    let wake: (() => void) | null = null;
    const stream = {
      sendStatus: () => undefined,
      pause: () => void (paused = true),
      resume: () => {
        paused = false;
        wake?.();
      },
      get isPaused() {
        return paused;
      },
      start: async () => undefined,
      done: new Promise<void>(() => undefined),
      isOpen: true,
      stop: async () => undefined,
    };
    const held = new HeldStream(stream);
    const ackSink = { requestCheckpoint: () => undefined, checkpointPending: false, inflightBytes: 0 };
    const ack = new AckRule(0n, false, cfg, threaded ? held : stream, ackSink, life);
    // Kafka's acknowledgements, as the publisher reports them: a request's worth at a time.
    let pending: number[] = [];
    let last: (() => void) | null = null;
    // The second half's rate: a model thread is a new one each round, and its first half includes
    // compiling the hot code, which a daemon's thread (alive for the session) does once.
    const half = Math.floor(expected / 2);
    let halfAt = 0;
    const sink = {
      push(rec: SinkRecord): void {
        events++;
        pending.push(rec.seq);
        if (hash !== null) {
          hash.update(`${rec.topic}\u0000${rec.key}\u0000${rec.value}\u0000`);
          for (const s of rec.state ?? []) hash.update(`${s.key}\u0000${s.value}\u0000`);
        }
        if (pending.length === 500) {
          for (const s of pending) ack.acked(s);
          pending = [];
        }
        if (events === half) halfAt = performance.now();
        if (events === expected) last?.();
      },
    };
    const tap = new SnapshotTap(cfg.airflowSchema, () => undefined);
    const t0 = process.cpuUsage();
    const w0 = performance.now();
    let churn: number;
    if (!threaded) {
      const decoder = new TransactionDecoder();
      const mapper = new AirflowMapper(
        { schema: cfg.airflowSchema, cacheSize: cfg.stateCacheSize, xcomKey: null, notificationRawMaxBytes: 0 },
        log,
      );
      const router = new TopicRouter(cfg.topic, cfg.topicTemplate, cfg.assetTopic);
      const loop = new MessageLoop(cfg, log, { decoder, mapper, router, sink, ack, life, snapshots: tap, metrics });
      for (const m of messages) loop.onData(m);
      churn = mapper.cacheStats().churn;
    } else {
      // The messages in socket reads of ~64 KB, each read's handed over before the next (the
      // stream's copyData events), reading paused while the model thread's queue is full.
      const loop = new ThreadedLoop(cfg, log, { sink, ack, life, snapshots: tap, metrics, stream: held }, { cloudEventsSource: null });
      const all = new Promise<void>((resolve) => (last = resolve));
      let i = 0;
      while (i < messages.length) {
        for (let bytes = 0; i < messages.length && bytes < 65_536; i++) {
          loop.onData(messages[i]!);
          bytes += messages[i]!.length;
        }
        await new Promise<void>((r) => setImmediate(r));
        // Paused as the socket would be: nothing to do until the model thread has read half its queue.
        while (paused) await new Promise<void>((r) => (wake = r));
      }
      await all;
      churn = loop.model.cacheStats().churn;
      await loop.close();
    }
    const used = process.cpuUsage(t0);
    const endAt = performance.now();
    const wallMs = endAt - w0;
    const secondHalfMs = endAt - halfAt;
    ack.close();
    return { cpuUs: used.user + used.system, wallMs, secondHalfMs, changes: churn + events, events, hash: hash?.digest("hex") ?? "" };
  };
  // A first round on one thread counts the events the model-thread rounds wait for.
  let expected = Number.POSITIVE_INFINITY;
  expected = (await once(false)).events; // warm-up: compiled code, shapes
  if (modelThread) await once(true);
  const results = [];
  for (let r = 0; r < rounds; r++) results.push(await once(modelThread));
  const per = results.map((r) => r.cpuUs).sort((a, b) => a - b);
  const { events, changes, hash } = results[0]!;
  const decodedChanges = messages.filter((m) => m[0] === 0x49 || m[0] === 0x55 || m[0] === 0x44).length;
  const fmt = (us: number) => `${(us / decodedChanges).toFixed(2)} µs/change, ${(us / events).toFixed(2)} µs/event`;
  console.log(
    `${file}: ${messages.length} messages, ${decodedChanges} row changes, ${events} events (${changes} mapped), ${rounds} rounds`,
  );
  console.log(`best   ${(per[0]! / 1000).toFixed(1)} ms CPU: ${fmt(per[0]!)}`);
  console.log(`median ${(per[Math.floor(rounds / 2)]! / 1000).toFixed(1)} ms CPU: ${fmt(per[Math.floor(rounds / 2)]!)}`);
  // Wall time is what a second core can shorten (CPU above is every thread's).
  const walls = results.map((r) => r.wallMs).sort((a, b) => a - b);
  const wallMid = walls[Math.floor(rounds / 2)]!;
  const halves = results.map((r) => r.secondHalfMs).sort((a, b) => a - b);
  const halfMid = halves[Math.floor(rounds / 2)]!;
  const secondHalf = events - Math.floor(events / 2);
  console.log(
    `wall ${modelThread ? "(model thread)" : "(one thread)"}: median ${wallMid.toFixed(1)} ms, ${Math.round((events / wallMid) * 1000)} events/s; ` +
      `second half ${halfMid.toFixed(1)} ms, ${Math.round((secondHalf / halfMid) * 1000)} events/s`,
  );
  if (digest) console.log(`digest ${hash}`);
}
