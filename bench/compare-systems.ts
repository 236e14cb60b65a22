/**
 * The systems `npm run bench:compare` runs, one at a time, each on the same WAL range from a slot
 * of its own: pg_recvlogical, the daemon, Kafka's producer perf test and Debezium Server. Each
 * returns how long it took, how many records it wrote (or changes it decoded) and its process's
 * CPU and RSS. Erasable TypeScript only (Node runs it by type stripping).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Kafka } from "kafkajs";
import { TreeSampler, readTopics, topicCount, type TopicRead } from "./compare-proc.ts";

export interface Pg {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export interface SystemResult {
  system: string;
  label: string;
  ok: boolean;
  error: string | null;
  /** Changes decoded (pg_recvlogical) or records written to its topics. */
  records: number;
  /** First record appended (first byte for pg_recvlogical) -> last, seconds. */
  seconds: number;
  perSecond: number;
  peakRssMb: number;
  /** CPU of the process tree between the first and the last record. */
  cpuS: number;
  /**
   * The part of cpuS on the root process's main thread. For the daemon, its JavaScript; the rest
   * is V8's helper threads (concurrent marking, parallel scavenges, compilation) and libuv's. For
   * the JVMs most work is on other threads, so it says little there.
   */
  mainThreadCpuS: number;
  /** CPU of the process tree from its start to its exit (start-up and shut-down included). */
  cpuTotalS: number;
  cpuPer100k: number;
  /** The walsender's CPU between the same two instants as cpuS (PostgreSQL decoding for this system), when it has one. */
  walsenderCpuS: number | null;
  /** The first and the last record's instants (Date.now() clock), the window cpuS is taken over. */
  fromMs: number;
  toMs: number;
  /** Kafka's broker's CPU over that window (null when the broker's process is not seen). */
  brokerCpuS: number | null;
  /** The whole machine's busy cores on average over that window: all the cores busy means the machine held the run back. */
  machineCores: number | null;
  /** The daemon only: seconds it paused reading PostgreSQL for backpressure (its paused_seconds_total, read at the end). */
  pausedS: number | null;
  topics: Record<string, number>;
  meanRecordBytes: number | null;
  settings: Record<string, string>;
}

export interface Ctx {
  pg: Pg;
  kafka: Kafka;
  brokers: string[];
  resultsDir: string;
  /** Every process started, so Ctrl-C can stop them. */
  children: Set<ChildProcess>;
  /** The pid of the walsender streaming from a slot, null when none. */
  walsenderPid(slot: string): Promise<number | null>;
  log(msg: string): void;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Started {
  proc: ChildProcess;
  sampler: TreeSampler;
  exited: Promise<number | null>;
  exitCode: number | null | undefined;
}

function start(ctx: Ctx, cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string, cwd?: string): Started {
  writeFileSync(logFile, `${cmd} ${args.join(" ")}\n`);
  const proc = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
  ctx.children.add(proc);
  proc.stderr!.on("data", (c: Buffer) => appendFileSync(logFile, c));
  const s: Started = {
    proc,
    sampler: new TreeSampler(proc.pid!),
    exitCode: undefined,
    exited: new Promise((resolve) =>
      proc.on("exit", (code) => {
        s.exitCode = code;
        ctx.children.delete(proc);
        resolve(code);
      }),
    ),
  };
  return s;
}

async function stopProc(s: Started, timeoutMs = 60_000): Promise<void> {
  if (s.exitCode !== undefined) return;
  s.sampler.sample();
  s.proc.kill("SIGTERM");
  const t = setTimeout(() => s.proc.kill("SIGKILL"), timeoutMs);
  await s.exited;
  clearTimeout(t);
}

/**
 * Follows the slot's walsender, so its CPU is sampled with the client's: polled every 250 ms, as a
 * client may open the slot more than once (a daemon's start-up reads before it streams).
 */
function followWalsender(ctx: Ctx, slot: string, walsender: TreeSampler[]): () => void {
  let stopped = false;
  void (async () => {
    while (!stopped) {
      const pid = await ctx.walsenderPid(slot).catch(() => null);
      if (pid !== null && !stopped) {
        if (walsender.length === 0) walsender.push(new TreeSampler(pid));
        else if (!walsender[0]!.extraPids.includes(pid)) walsender[0]!.extraPids.push(pid);
      }
      await sleep(250);
    }
  })();
  return () => {
    stopped = true;
    for (const w of walsender) w.stop();
  };
}

function result(
  system: string,
  label: string,
  s: Started,
  walsender: TreeSampler[],
  fromMs: number,
  toMs: number,
  records: number,
  extra: Partial<SystemResult>,
): SystemResult {
  const seconds = Math.max(0.001, (toMs - fromMs) / 1000);
  const cpuS = s.sampler.cpuBetween(fromMs, toMs);
  return {
    system,
    label,
    ok: true,
    error: null,
    records,
    seconds,
    perSecond: records / seconds,
    peakRssMb: s.sampler.peakRssKb / 1024,
    cpuS,
    mainThreadCpuS: s.sampler.cpuBetween(fromMs, toMs, "main"),
    cpuTotalS: s.sampler.totalCpuS,
    cpuPer100k: records > 0 ? (cpuS / records) * 100_000 : 0,
    walsenderCpuS: walsender[0] ? walsender[0].cpuBetween(fromMs, toMs) : null,
    fromMs,
    toMs,
    brokerCpuS: null,
    machineCores: null,
    pausedS: null,
    topics: {},
    meanRecordBytes: null,
    settings: {},
    ...extra,
  };
}

/** Waits until the topics hold `expected` records, the process dies, or no record came for `idleMs`. */
async function waitForRecords(ctx: Ctx, s: Started, topics: string[], expected: number, idleMs: number): Promise<number> {
  let last = -1;
  let lastChange = Date.now();
  for (;;) {
    // A fresh topic's leaders may still be moving: a failed look is only a look to repeat.
    const n = await topicCount(ctx.kafka, topics).catch(() => last);
    if (n >= expected) return n;
    if (n !== last) {
      last = n;
      lastChange = Date.now();
    }
    if (s.exitCode !== undefined) throw new Error(`exited with ${s.exitCode} after ${n} of ${expected} records`);
    if (Date.now() - lastChange > idleMs) throw new Error(`stuck at ${n} of ${expected} records for ${idleMs / 1000} s`);
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------- pg_recvlogical

export async function runRecvlogical(
  ctx: Ctx,
  bin: string,
  slot: string,
  publication: string,
  endLsn: string,
  changes: number,
): Promise<SystemResult> {
  const { pg } = ctx;
  const args = ["-h", pg.host, "-p", String(pg.port), "-U", pg.user, "-d", pg.database, "-S", slot, "--start", "--no-loop"];
  args.push(`--endpos=${endLsn}`, "-o", "proto_version=1", "-o", `publication_names=${publication}`, "-f", "-");
  const s = start(
    ctx,
    path.join(bin, "pg_recvlogical"),
    args,
    { ...process.env, PGPASSWORD: pg.password },
    path.join(ctx.resultsDir, "compare-pg_recvlogical.log"),
  );
  const walsender: TreeSampler[] = [];
  const stopWal = followWalsender(ctx, slot, walsender);
  // Its output is discarded here, as /dev/null would; reading it is how the first byte is seen.
  let first: number | null = null;
  let bytes = 0;
  s.proc.stdout!.on("data", (c: Buffer) => {
    first ??= Date.now();
    bytes += c.length;
  });
  const code = await s.exited;
  const end = Date.now();
  s.sampler.stop();
  stopWal();
  if (code !== 0 || first === null)
    throw new Error(`pg_recvlogical exited with ${code} (${bytes} bytes read): see bench/results/compare-pg_recvlogical.log`);
  return result(
    "pg_recvlogical",
    "pg_recvlogical, pgoutput proto 1, to /dev/null (PostgreSQL's decode limit)",
    s,
    walsender,
    first,
    end,
    changes,
    {
      settings: { endpos: endLsn, bytes: String(bytes) },
    },
  );
}

// ---------------------------------------------------------------------------- the daemon

export interface DaemonNames {
  slot: string;
  publication: string;
  topic: string;
  stateTopic: string;
  checkpointTopic: string;
  httpPort: number;
}

export async function runDaemon(
  ctx: Ctx,
  root: string,
  n: DaemonNames,
  expectedEvents: number,
  passthrough: Record<string, string>,
): Promise<SystemResult> {
  const { pg } = ctx;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    NODE: process.execPath,
    PGHOST: pg.host,
    PGPORT: String(pg.port),
    PGUSER: pg.user,
    PGPASSWORD: pg.password,
    PGDATABASE: pg.database,
    KAFKA_BROKERS: ctx.brokers.join(","),
    EVENTSTREAM_SLOT: n.slot,
    EVENTSTREAM_PUBLICATION: n.publication,
    EVENTSTREAM_TOPIC: n.topic,
    EVENTSTREAM_STATE_TOPIC: n.stateTopic,
    EVENTSTREAM_CHECKPOINT_TOPIC: n.checkpointTopic,
    // The endpoint stays on, as by default, on a port of this bench's own range (not scraped).
    EVENTSTREAM_HTTP_HOST: "127.0.0.1",
    EVENTSTREAM_HTTP_PORT: String(n.httpPort),
    ...passthrough,
  };
  const s = start(ctx, path.join(root, "bin/airflow-eventstream"), ["run"], env, path.join(ctx.resultsDir, "compare-daemon.log"), root);
  s.proc.stdout!.on("data", (c: Buffer) => appendFileSync(path.join(ctx.resultsDir, "compare-daemon.log"), c));
  const walsender: TreeSampler[] = [];
  const stopWal = followWalsender(ctx, n.slot, walsender);
  let pausedS: number | null = null;
  try {
    await waitForRecords(ctx, s, [n.topic], expectedEvents, 60_000);
    // The state topic's records go in the same requests as the events': give the last ones a moment.
    await sleep(1_000);
    pausedS = await pausedSeconds(n.httpPort);
  } finally {
    await stopProc(s);
    s.sampler.stop();
    stopWal();
  }
  const events = await readTopics(ctx.kafka, [n.topic], `${n.topic}_read`);
  if (events.records !== expectedEvents) throw new Error(`${events.records} events in ${n.topic}, expected ${expectedEvents}`);
  const all = await readTopics(ctx.kafka, [n.topic, n.stateTopic], `${n.topic}_read_all`);
  return fromTopics("daemon", "airflow-eventstream, defaults", s, walsender, all, events.records, {
    pausedS,
    meanRecordBytes: events.records > 0 ? events.bytes / events.records : null,
    settings: Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("EVENTSTREAM_") || k.startsWith("KAFKA_"))),
  });
}

/** The daemon's airflow_eventstream_paused_seconds_total from its metrics endpoint; null when it cannot be read. */
async function pausedSeconds(port: number): Promise<number | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const m = /^airflow_eventstream_paused_seconds_total (\S+)$/m.exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

function fromTopics(
  system: string,
  label: string,
  s: Started,
  walsender: TreeSampler[],
  read: TopicRead,
  changes: number,
  extra: Partial<SystemResult>,
): SystemResult {
  if (read.firstMs === null || read.lastMs === null) throw new Error(`${system}: its topics are empty`);
  return result(system, label, s, walsender, read.firstMs, read.lastMs, changes, { topics: read.perTopic, ...extra });
}

// ---------------------------------------------------------------------------- Kafka's producer

export async function runProducerPerf(
  ctx: Ctx,
  java: string,
  kafkaLibs: string,
  topic: string,
  records: number,
  recordBytes: number,
): Promise<SystemResult> {
  const props = [`bootstrap.servers=${ctx.brokers.join(",")}`, "acks=all", "enable.idempotence=true"];
  // -Xmx512M: what kafka-producer-perf-test.sh gives it when KAFKA_HEAP_OPTS is unset.
  const args = ["-Xmx512M", "-cp", `${kafkaLibs}/*`, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic];
  args.push("--num-records", String(records), "--record-size", String(recordBytes), "--throughput", "-1", "--producer-props", ...props);
  const logFile = path.join(ctx.resultsDir, "compare-kafka-perf.log");
  const s = start(ctx, java, args, process.env, logFile);
  s.proc.stdout!.on("data", (c: Buffer) => appendFileSync(logFile, c));
  const code = await s.exited;
  s.sampler.stop();
  if (code !== 0) throw new Error(`ProducerPerformance exited with ${code}: see ${logFile}`);
  const read = await readTopics(ctx.kafka, [topic], `${topic}_read`);
  return fromTopics(
    "kafka-perf",
    `kafka-producer-perf-test, ${recordBytes} B records, acks=all, idempotent (Kafka's limit)`,
    s,
    [],
    read,
    read.records,
    {
      meanRecordBytes: read.records > 0 ? read.bytes / read.records : null,
      settings: { "num-records": String(records), "record-size": String(recordBytes), "producer-props": props.join(" ") },
    },
  );
}

// ---------------------------------------------------------------------------- Debezium Server

export interface DebeziumRun {
  variant: "default" | "tuned";
  dist: string;
  java: string;
  slot: string;
  publication: string;
  prefix: string;
  tables: string[];
  httpPort: number;
  /** Row changes in the backlog. */
  changes: number;
  /** Records its topics must hold: a primary-key UPDATE is a delete, a tombstone and a create. */
  expected: number;
}

/** The properties of one run: Debezium's defaults but for what says where to read and write. */
export function debeziumProperties(ctx: Ctx, r: DebeziumRun, dataDir: string): Record<string, string> {
  const { pg } = ctx;
  const p: Record<string, string> = {
    "debezium.sink.type": "kafka",
    "debezium.sink.kafka.producer.bootstrap.servers": ctx.brokers.join(","),
    "debezium.sink.kafka.producer.key.serializer": "org.apache.kafka.common.serialization.StringSerializer",
    "debezium.sink.kafka.producer.value.serializer": "org.apache.kafka.common.serialization.StringSerializer",
    "debezium.source.connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "debezium.source.offset.storage.file.filename": path.join(dataDir, "offsets.dat"),
    "debezium.source.database.hostname": pg.host,
    "debezium.source.database.port": String(pg.port),
    "debezium.source.database.user": pg.user,
    "debezium.source.database.password": pg.password,
    "debezium.source.database.dbname": pg.database,
    "debezium.source.topic.prefix": r.prefix,
    "debezium.source.plugin.name": "pgoutput",
    "debezium.source.slot.name": r.slot,
    "debezium.source.publication.name": r.publication,
    // The publication exists (the same tables as the daemon's): Debezium must not make one FOR ALL TABLES.
    "debezium.source.publication.autocreate.mode": "disabled",
    "debezium.source.table.include.list": r.tables.map((t) => `public.${t}`).join(","),
    // Only the WAL range counts: no snapshot of the tables' rows.
    "debezium.source.snapshot.mode": "no_data",
    "quarkus.http.port": String(r.httpPort),
    "quarkus.log.level": "INFO",
  };
  if (r.variant === "tuned") {
    Object.assign(p, {
      "debezium.source.max.batch.size": "8192",
      "debezium.source.max.queue.size": "32768",
      "debezium.sink.kafka.producer.linger.ms": "10",
      "debezium.format.key.schemas.enable": "false",
      "debezium.format.value.schemas.enable": "false",
    });
  }
  return p;
}

export async function runDebezium(ctx: Ctx, r: DebeziumRun): Promise<SystemResult> {
  const dir = path.join(ctx.resultsDir, `debezium-${r.variant}`);
  // A previous run's offsets must not say where this one starts: the slot alone does.
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.join(dir, "config"), { recursive: true });
  mkdirSync(path.join(dir, "data"), { recursive: true });
  const props = debeziumProperties(ctx, r, path.join(dir, "data"));
  const lines = (mask: boolean) => Object.entries(props).map(([k, v]) => `${k}=${mask && k.endsWith("password") ? "***" : v}`);
  // Quarkus reads config/application.properties under the working directory.
  writeFileSync(path.join(dir, "config", "application.properties"), `${lines(false).join("\n")}\n`);
  ctx.log(`debezium ${r.variant}: properties (${path.join(dir, "config/application.properties")}):\n  ${lines(true).join("\n  ")}`);
  const runner = readdirSync(r.dist).find((f) => /^debezium-server-.*runner\.jar$/.test(f));
  if (!runner) throw new Error(`no debezium-server-*-runner.jar in ${r.dist}`);
  // What run.sh starts (it would read config/ beside itself; this run's config is in its own directory).
  const cp = [path.join(r.dist, runner), path.join(r.dist, "config/lib"), path.join(r.dist, "lib/*")].join(":");
  const logFile = path.join(ctx.resultsDir, `compare-debezium-${r.variant}.log`);
  const s = start(ctx, r.java, ["-cp", cp, "io.debezium.server.Main"], { ...process.env }, logFile, dir);
  s.proc.stdout!.on("data", (c: Buffer) => appendFileSync(logFile, c));
  const topics = r.tables.map((t) => `${r.prefix}.public.${t}`);
  const walsender: TreeSampler[] = [];
  const stopWal = followWalsender(ctx, r.slot, walsender);
  try {
    // Start-up (Quarkus, the JIT) can take a while before the first record: the idle clock allows it.
    await waitForRecords(ctx, s, topics, r.expected, 120_000);
  } finally {
    await stopProc(s);
    s.sampler.stop();
    stopWal();
  }
  const read = await readTopics(ctx.kafka, topics, `${r.prefix}_read`);
  const label =
    r.variant === "tuned"
      ? "Debezium Server, tuned (batch 8192, queue 32768, linger 10 ms, no schemas)"
      : "Debezium Server, defaults (JSON with schemas)";
  if (read.records !== r.expected) throw new Error(`${read.records} records in its topics, expected ${r.expected}`);
  return fromTopics(`debezium-${r.variant}`, label, s, walsender, read, r.changes, {
    meanRecordBytes: read.records > 0 ? read.bytes / read.records : null,
    settings: Object.fromEntries(Object.entries(props).map(([k, v]) => [k, k.endsWith("password") ? "***" : v])),
  });
}
