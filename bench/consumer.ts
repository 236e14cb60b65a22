/**
 * The benchmark's independent Kafka consumer, run in a worker thread (see bench.ts) so that the
 * load generator's work on the main thread cannot delay the receipt timestamps.
 *
 * For every event it takes: the receipt time (wall clock, microseconds, taken when kafkajs hands
 * over the partition's batch), the event's source.commit_time (PostgreSQL's commit timestamp, same
 * machine clock), and checks in passing: churn leaked as an event (an update whose state and try
 * number equal the previous ones), duplicates (a source.position seen twice), order within a
 * partition (positions must increase), and the Kafka key (must be the dag_id).
 *
 * Only erasable TypeScript syntax: Node runs this file directly (type stripping).
 */
import { parentPort, workerData } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { Kafka, logLevel } from "kafkajs";
import type { AirflowEvent } from "../src/airflow/events.js";

export interface ConsumerInit {
  brokers: string[];
  topic: string;
  groupId: string;
}

/** Worker -> main thread. */
export type ConsumerMessage =
  | { type: "joined" }
  | {
      type: "batch";
      /** Receipt time of this batch, µs since the epoch. */
      recvUs: number;
      count: number;
      /** Per event: receipt minus commit time, in ms. */
      latMs: Float64Array;
      minCommitUs: number;
      taskInstance: number;
      dagRun: number;
      churnLeaks: number;
      duplicates: number;
      orderViolations: number;
      badKeys: number;
      /** Sum and largest of the events' value sizes, in bytes. */
      bytes: number;
      maxBytes: number;
      byState: Record<string, number>;
      /** First few problems, for the report. */
      samples: string[];
    }
  | { type: "error"; message: string }
  | { type: "stopped" };

/** Wall clock in µs with sub-ms resolution. */
function nowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

const TS = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(Z|[+-]\d\d:?\d\d)$/;

/** "2026-11-25T08:17:27.123456Z" -> µs since the epoch (Date.parse keeps only milliseconds). */
export function isoToUs(iso: string): number {
  const m = TS.exec(iso);
  if (!m) return Number.NaN;
  const frac = (m[2] ?? "").padEnd(6, "0");
  return Date.parse(`${m[1]}${m[3]}`) * 1000 + Number(frac);
}

async function main(init: ConsumerInit): Promise<void> {
  const port = parentPort!;
  const post = (m: ConsumerMessage, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
  const kafka = new Kafka({ clientId: "eventstream-bench-consumer", brokers: init.brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({
    groupId: init.groupId,
    sessionTimeout: 30_000,
    heartbeatInterval: 1_000,
    // A fetch returns as soon as one byte is there (minBytes 1): maxWait only bounds idle polls.
    maxWaitTimeInMs: 250,
    maxBytesPerPartition: 4 * 1024 * 1024,
    maxBytes: 32 * 1024 * 1024,
  });
  const seen = new Set<string>();
  const lastByPartition = new Map<number, string>();
  let stopping = false;

  port.on("message", (m: { type: string }) => {
    if (m.type === "stop" && !stopping) {
      stopping = true;
      consumer
        .disconnect()
        .catch(() => undefined)
        .finally(() => post({ type: "stopped" }));
    }
  });

  consumer.on(consumer.events.GROUP_JOIN, () => post({ type: "joined" }));
  await consumer.connect();
  // The daemon has just created the topic: the broker's metadata may lag for a moment.
  for (let attempt = 1; ; attempt++) {
    try {
      await consumer.subscribe({ topics: [init.topic], fromBeginning: true });
      break;
    } catch (e) {
      if (attempt >= 50) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await consumer.run({
    eachBatchAutoResolve: true,
    eachBatch: async ({ batch }) => {
      const recvUs = nowUs();
      const n = batch.messages.length;
      const latMs = new Float64Array(n);
      let minCommitUs = Number.POSITIVE_INFINITY;
      let taskInstance = 0;
      let dagRun = 0;
      let churnLeaks = 0;
      let duplicates = 0;
      let orderViolations = 0;
      let badKeys = 0;
      let bytes = 0;
      let maxBytes = 0;
      const byState: Record<string, number> = {};
      const samples: string[] = [];
      let last = lastByPartition.get(batch.partition) ?? "";
      for (let i = 0; i < n; i++) {
        const msg = batch.messages[i]!;
        const size = msg.value!.length;
        bytes += size;
        if (size > maxBytes) maxBytes = size;
        const ev = JSON.parse(msg.value!.toString("utf8")) as AirflowEvent;
        const commitUs = isoToUs(ev.source.commit_time);
        latMs[i] = (recvUs - commitUs) / 1000;
        if (commitUs < minCommitUs) minCommitUs = commitUs;
        const state = `${ev.type === "dag_run" ? "run" : "ti"}:${ev.op}:${ev.state ?? "none"}`;
        byState[state] = (byState[state] ?? 0) + 1;
        if (ev.type === "task_instance") {
          taskInstance++;
          if (ev.op === "update" && ev.previous_state_known && ev.state === ev.previous_state && ev.try_number === ev.previous_try_number) {
            churnLeaks++;
            if (samples.length < 3) samples.push(`churn leaked as an event: ${msg.value!.toString("utf8").slice(0, 300)}`);
          }
        } else {
          dagRun++;
          if (ev.op === "update" && ev.previous_state_known && ev.state === ev.previous_state) {
            churnLeaks++;
            if (samples.length < 3) samples.push(`dag_run event without a state change: ${msg.value!.toString("utf8").slice(0, 300)}`);
          }
        }
        const pos = ev.source.position;
        if (seen.has(pos)) {
          duplicates++;
          if (samples.length < 3) samples.push(`duplicate position ${pos}`);
        } else seen.add(pos);
        if (pos <= last) {
          orderViolations++;
          if (samples.length < 3) samples.push(`partition ${batch.partition}: position ${pos} after ${last}`);
        } else last = pos;
        if (msg.key?.toString("utf8") !== ev.dag_id) badKeys++;
      }
      lastByPartition.set(batch.partition, last);
      post(
        {
          type: "batch",
          recvUs,
          count: n,
          latMs,
          minCommitUs,
          taskInstance,
          dagRun,
          churnLeaks,
          duplicates,
          orderViolations,
          badKeys,
          bytes,
          maxBytes,
          byState,
          samples,
        },
        [latMs.buffer as ArrayBuffer],
      );
    },
  });
}

if (parentPort) {
  // kafkajs 2.2.4 sets a negative timer in its request queue (harmless; Node >= 23 warns about it).
  process.removeAllListeners("warning");
  process.on("warning", (w) => {
    if (w.name !== "TimeoutNegativeWarning") process.stderr.write(`${w.name}: ${w.message}\n`);
  });
  main(workerData as ConsumerInit).catch((e: unknown) => {
    parentPort!.postMessage({ type: "error", message: e instanceof Error ? (e.stack ?? e.message) : String(e) } satisfies ConsumerMessage);
  });
}
