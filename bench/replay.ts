/**
 * Replay benchmark: fills a topic with N task_instance events shaped as the daemon writes them
 * (keyed by dag_id, 3 partitions, in Kafka transactions as exactly-once does, so every transaction
 * leaves a marker offset), then runs `airflow-eventstream replay` as an operator does (the built
 * dist/cli.js through bin/airflow-eventstream, so the launcher's heap limit applies) and prints:
 * the search (probes, ms: from the replay's "window found" log line), and copy throughput to a topic
 * (at-least-once and exactly-once) and to stdout (piped and counted here).
 *
 *   npm run build && node bench/replay.ts [--records 100000]
 *
 * Run by Node's type stripping; imports nothing of the product.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { Kafka, logLevel } from "kafkajs";
import { servicesEnv } from "../scripts/services-env.ts";

const args = process.argv.slice(2);
const records = Number(args[args.indexOf("--records") + 1] ?? 100_000) || 100_000;
const env = process.env.KAFKA_BROKERS ? (process.env as Record<string, string>) : servicesEnv(process.cwd());
const brokers = env.KAFKA_BROKERS!.split(",");
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING, clientId: "bench-replay" });
const admin = kafka.admin();
const base = `bench_replay_${randomBytes(3).toString("hex")}`;
const topic = `${base}.events`;
const T0 = Date.parse("2026-11-25T08:00:00Z");

function position(i: number): string {
  const lsn = 0x10000000n + BigInt(Math.floor(i / 10)) * 0x200n;
  return `${lsn.toString(16).toUpperCase().padStart(16, "0")}-${(i % 10).toString(16).toUpperCase().padStart(8, "0")}`;
}

function event(i: number): { key: string; value: string } {
  const dag = `dag_${i % 50}`;
  const micros = BigInt(T0) * 1000n + BigInt(i) * 100n;
  const commit = `${new Date(Number(micros / 1000n)).toISOString().slice(0, 19)}.${(micros % 1_000_000n).toString().padStart(6, "0")}Z`;
  const value = {
    type: "task_instance",
    op: "update",
    dag_id: dag,
    task_id: `task_${i % 37}`,
    run_id: `scheduled__2026-11-25T08:00:00+00:00`,
    map_index: -1,
    try_number: 1,
    max_tries: 2,
    state: "running",
    previous_state: "queued",
    previous_state_known: true,
    previous_try_number: 1,
    ti_id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    start_date: commit,
    end_date: null,
    duration: null,
    hostname: "worker-1.example.internal",
    operator: "PythonOperator",
    queue: "default",
    pool: "default_pool",
    logical_date: "2026-11-25T08:00:00.000000Z",
    run_type: "scheduled",
    data_interval_start: "2026-11-25T07:00:00.000000Z",
    data_interval_end: "2026-11-25T08:00:00.000000Z",
    clear_number: 0,
    source: { commit_lsn: "0/0", xid: 1000 + i, index: i % 10, position: position(i), commit_time: commit },
  };
  return { key: dag, value: JSON.stringify(value) };
}

async function fill(): Promise<void> {
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const producer = kafka.producer({ transactionalId: `${base}.fill`, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const t = Date.now();
  for (let i = 0; i < records; i += 1000) {
    const tx = await producer.transaction();
    const messages = Array.from({ length: Math.min(1000, records - i) }, (_, j) => event(i + j));
    await tx.send({ topic, acks: -1, messages });
    await tx.commit();
  }
  await producer.disconnect();
  console.log(`filled ${topic}: ${records} events in ${records / 1000} transactions (${Date.now() - t} ms)`);
}

interface Run {
  code: number | null;
  ms: number;
  stdoutBytes: number;
  stdoutLines: number;
  window: { probes?: number; searchMs?: number; offsets?: number };
  done: string;
  rssMb: number | null;
}

/** The CLI as an operator runs it; stdout counted, not kept. */
function cli(cliArgs: string[], extra: Record<string, string> = {}): Promise<Run> {
  const t = Date.now();
  // GNU time, where installed, for the replay's peak RSS (bounded memory whatever the window).
  const timed = existsSync("/usr/bin/time");
  const cmd = timed ? "/usr/bin/time" : "bin/airflow-eventstream";
  const cmdArgs = timed ? ["-f", "maxrss_kb=%M", "bin/airflow-eventstream", "replay", ...cliArgs] : ["replay", ...cliArgs];
  const proc = spawn(cmd, cmdArgs, {
    env: { PATH: process.env.PATH ?? "", KAFKA_BROKERS: brokers.join(","), EVENTSTREAM_TOPIC: topic, LOG_LEVEL: "info", ...extra },
  });
  let bytes = 0;
  let lines = 0;
  proc.stdout.on("data", (b: Buffer) => {
    bytes += b.length;
    for (const c of b) if (c === 10) lines++;
  });
  let err = "";
  proc.stderr.on("data", (b: Buffer) => (err += b.toString()));
  return new Promise((resolve) =>
    proc.on("close", (code) => {
      const found = err.split("\n").find((l) => l.includes("window found"));
      const window = found ? (JSON.parse(found) as Run["window"]) : {};
      const done = err.split("\n").find((l) => l.startsWith("airflow-eventstream: ")) ?? err.slice(-500);
      const rss = /maxrss_kb=(\d+)/.exec(err);
      resolve({
        code,
        ms: Date.now() - t,
        stdoutBytes: bytes,
        stdoutLines: lines,
        window,
        done,
        rssMb: rss ? Math.round(Number(rss[1]) / 1024) : null,
      });
    }),
  );
}

function report(what: string, r: Run): void {
  console.log(
    `${what}: exit ${r.code}, ${r.ms} ms wall, peak RSS ${r.rssMb ?? "?"} MB; search ${r.window.probes} probes in ${r.window.searchMs} ms; window ${r.window.offsets} offsets` +
      `${r.stdoutLines > 0 ? `; stdout ${r.stdoutLines} lines, ${(r.stdoutBytes / 1e6).toFixed(1)} MB` : ""}\n  ${r.done}`,
  );
}

await admin.connect();
try {
  await fill();
  const mid = position(Math.floor(records / 2));
  report(`search only (--from ${mid}, --until the same: empty window)`, await cli(["--from", mid, "--until", mid, "--stdout"]));
  report(
    "search by time (--from the middle's commit time, --until +1 µs)",
    await cli(["--from", "2026-11-25T08:00:05.000000Z", "--until", "2026-11-25T08:00:05.000001Z", "--stdout"]),
  );
  report(`to a topic, at-least-once, all ${records}`, await cli(["--from", "0/1", "--to-topic", `${base}.out-alo`]));
  report(
    `to a topic, exactly-once, all ${records}`,
    await cli(["--from", "0/1", "--to-topic", `${base}.out-eos`], {
      EVENTSTREAM_DELIVERY: "exactly-once",
      EVENTSTREAM_CHECKPOINT_TOPIC: `${base}.ckpt`,
    }),
  );
  report(`to stdout, all ${records}`, await cli(["--from", "0/1", "--stdout"]));
} finally {
  const mine = (await admin.listTopics()).filter((t) => t.startsWith(base));
  await admin.deleteTopics({ topics: mine }).catch(() => undefined);
  await admin.disconnect();
}
