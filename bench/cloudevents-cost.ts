/**
 * CPU per record of EVENTSTREAM_CLOUDEVENTS=binary, without Kafka: what the option adds on the
 * daemon's thread for one task-instance event: making its headers (CloudEvents.headersFor), counting
 * them (the size check and the publisher's recordBytes), and kafkajs encoding them into the record.
 * Measured in CPU time (process.cpuUsage), alternating rounds with and without, best round of each.
 *
 *   npm run build && node bench/cloudevents-cost.ts [records per round, default 200000]
 */
import { createRequire } from "node:module";
import type * as Batch from "../src/sink/batch.js";
import type * as CloudEventsModule from "../src/sink/cloudevents.js";

// The built modules (npm run build), loaded by path so that type-checking never needs dist/.
const dist = new URL("../dist/sink/", import.meta.url).href;
const { CloudEvents } = (await import(`${dist}cloudevents.js`)) as typeof CloudEventsModule;
const { headersBytes, recordBytes } = (await import(`${dist}batch.js`)) as typeof Batch;

const require = createRequire(import.meta.url);
const encodeRecord = require("kafkajs/src/protocol/recordBatch/record/v0") as (r: {
  key: Buffer;
  value: Buffer;
  headers?: Record<string, string>;
}) => { buffer: Buffer };

const n = Number(process.argv[2] ?? 200_000);
const ce = new CloudEvents("urn:airflow-eventstream:7441803921405730861:airflow");
const events = Array.from({ length: 1000 }, (_, i) => ({
  type: "task_instance" as const,
  op: "update" as const,
  dag_id: `dag_${i % 50}`,
  task_id: `task_${i}`,
  run_id: `scheduled__2026-12-03T${String(i % 24).padStart(2, "0")}:00:00+00:00`,
  map_index: i % 7 === 0 ? i % 16 : -1,
  try_number: 1,
  max_tries: 2,
  state: "running",
  previous_state: "queued",
  previous_state_known: true,
  previous_try_number: 1,
  ti_id: "ced41411-de11-4bce-b846-5a029e8cf714",
  start_date: "2026-12-03T08:36:25.220696Z",
  end_date: null,
  duration: null,
  hostname: "worker-1",
  operator: "PythonOperator",
  queue: "default",
  pool: "default_pool",
  logical_date: "2026-12-03T08:00:00Z",
  run_type: "scheduled",
  data_interval_start: null,
  data_interval_end: null,
  clear_number: 0,
  source: {
    commit_lsn: "0/36B1CD8",
    xid: 1111 + i,
    index: 0,
    position: `00000000036B${String(1000 + i).padStart(4, "0")}-00000000`,
    commit_time: "2026-12-03T08:36:25.224381Z",
  },
}));
const values = events.map((e) => JSON.stringify(e));

/** CPU µs for n records: the daemon's per-record work that headers touch, with or without them. */
function round(withHeaders: boolean): number {
  const t0 = process.cpuUsage();
  let sink = 0;
  for (let i = 0; i < n; i++) {
    const e = events[i % 1000]!;
    const value = values[i % 1000]!;
    const headers = withHeaders ? ce.headersFor(e) : undefined;
    sink += headersBytes(headers) + recordBytes(value, e.dag_id, headers);
    sink += encodeRecord({ key: Buffer.from(e.dag_id), value: Buffer.from(value), headers }).buffer.length;
  }
  const t = process.cpuUsage(t0);
  if (sink === 0) throw new Error("unreachable");
  return t.user + t.system;
}

const best = { off: Infinity, binary: Infinity };
for (let r = 0; r < 6; r++) {
  best.off = Math.min(best.off, round(false));
  best.binary = Math.min(best.binary, round(true));
}
const perOff = best.off / n;
const perOn = best.binary / n;
console.log(
  JSON.stringify({
    records: n,
    cpu_us_per_record_off: +perOff.toFixed(3),
    cpu_us_per_record_binary: +perOn.toFixed(3),
    added_us_per_record: +(perOn - perOff).toFixed(3),
    added_cpu_s_per_100k: +(((perOn - perOff) * 100_000) / 1e6).toFixed(3),
  }),
);
