/**
 * Where a daemon's CPU goes: reads V8 .cpuprofile files (`npm run bench -- --cpu-prof` writes them to
 * bench/results/profiles/) and sums self time by category, from each sample's call frame (script URL,
 * function name). Builtins without a script (JSON.stringify, Buffer copies, Map lookups show up with an
 * empty URL) are charged to the category of the nearest caller that has one, except for the few whose
 * name says what they are (JSON, GC).
 *
 *   node bench/profile-breakdown.ts bench/results/profiles/daemon-X-2.cpuprofile [--events N] [--top 25]
 *
 * --events N divides each category's time by N (µs per event). --cpu-seconds S: the process's CPU seconds
 * as /proc counted them (bench/results/latest.json: daemon CPU s per 100k x events / 100k); the profiler
 * samples wall time, which on a loaded machine includes time the thread waited for a core, so the
 * shares are applied to S instead. --top lists the heaviest functions.
 */
import { readFileSync } from "node:fs";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** First match wins: [category, test on url, optional test on function name]. */
const RULES: [string, RegExp, RegExp?][] = [
  ["pgoutput decode (messages)", /\/decode\/pgoutput\.js$/],
  ["row values (decode/values, rows)", /\/decode\/(values|transactions)\.js$/],
  ["airflow model (mapper, state cache, events)", /\/airflow\//],
  ["current-state topic records", /\/sink\/state-topic\.js$/],
  ["publisher (batching, sizes)", /\/sink\/(publisher|batch|routing|checkpoint-store|checkpoint-topic|topics|client)\.js$/],
  ["kafkajs partitioner (murmur2, long.js)", /kafkajs\/src\/(producer\/partitioners|utils\/long)/],
  ["our partitioner (sink/partitioner)", /\/sink\/partitioner\.js$/],
  ["kafkajs encoding (protocol/, crc32c, varint)", /kafkajs\/src\/protocol\//],
  ["kafkajs request/response machinery", /kafkajs\//],
  ["per-message loop (session-loop, loop/, snapshot tap)", /\/(session-loop|loop\/[^/]+|snapshot\/[^/]+)\.js$/],
  ["checkpoint, ack rule", /\/checkpoint\/|\/lsn\.js$/],
  ["metrics, logging", /\/operate\/|\/log\.js$|prom-client|pino/],
  ["replication stream (node-postgres, source/)", /node_modules\/pg|\/source\//],
  [
    "node: sockets, streams, buffers",
    /^node:(net|stream|internal\/streams|buffer|internal\/buffer|events|internal\/stream_base_commons)|internal\/(net|stream)/,
  ],
  ["promises, timers, microtasks", /^node:internal\/(process\/task_queues|timers|async_hooks)|^node:timers/],
];

const SPECIAL: Record<string, string> = {
  "(garbage collector)": "GC",
  "(program)": "(program: V8/native, unattributed)",
  "(idle)": "(idle)",
  "(root)": "(program: V8/native, unattributed)",
};

function categoryOf(frame: CallFrame): string | null {
  const special = SPECIAL[frame.functionName];
  if (special !== undefined && frame.url === "") return special;
  if (frame.url === "") {
    if (frame.functionName === "stringify") return "JSON.stringify";
    if (frame.functionName === "parse") return "JSON.parse";
    return null;
  }
  for (const [name, url] of RULES) if (url.test(frame.url)) return name;
  if (frame.url.startsWith("node:")) return "node internals (other)";
  if (frame.url.includes("/dist/")) return "daemon (other src/)";
  return "other";
}

function breakdown(profile: Profile): { byCat: Map<string, number>; byFn: Map<string, number>; totalUs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const catOf = new Map<number, string>();
  const resolve = (id: number): string => {
    const known = catOf.get(id);
    if (known !== undefined) return known;
    const own = categoryOf(byId.get(id)!.callFrame);
    const p = parent.get(id);
    const cat = own ?? (p === undefined ? "(program: V8/native, unattributed)" : resolve(p));
    catOf.set(id, cat);
    return cat;
  };
  const byCat = new Map<string, number>();
  const byFn = new Map<string, number>();
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const dt = profile.timeDeltas[i] ?? 0;
    totalUs += dt;
    const cat = resolve(id);
    byCat.set(cat, (byCat.get(cat) ?? 0) + dt);
    const f = byId.get(id)!.callFrame;
    const fn = `${f.functionName || "(anonymous)"} ${f.url.replace(/^.*\/(node_modules|dist)\//, "$1/")}:${f.lineNumber + 1}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + dt);
  }
  return { byCat, byFn, totalUs };
}

function main(argv: string[]): void {
  const files: string[] = [];
  let events = 0;
  let top = 0;
  let cpuSeconds = 0;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--events") events = Number(argv[++i]);
    else if (a === "--top") top = Number(argv[++i]);
    else if (a === "--cpu-seconds") cpuSeconds = Number(argv[++i]);
    else files.push(a);
  }
  if (files.length === 0) {
    console.error("usage: node bench/profile-breakdown.ts FILE.cpuprofile... [--events N] [--top N]");
    process.exit(2);
  }
  const byCat = new Map<string, number>();
  const byFn = new Map<string, number>();
  let totalUs = 0;
  for (const f of files) {
    const r = breakdown(JSON.parse(readFileSync(f, "utf8")) as Profile);
    for (const [k, v] of r.byCat) byCat.set(k, (byCat.get(k) ?? 0) + v);
    for (const [k, v] of r.byFn) byFn.set(k, (byFn.get(k) ?? 0) + v);
    totalUs += r.totalUs;
  }
  const idle = byCat.get("(idle)") ?? 0;
  const busy = totalUs - idle;
  console.log(`profiled ${(totalUs / 1e6).toFixed(2)} s, busy ${(busy / 1e6).toFixed(2)} s (idle excluded below)`);
  // Each category's share of the samples, applied to the CPU time /proc measured (see --cpu-seconds).
  const scale = cpuSeconds > 0 ? (cpuSeconds * 1e6) / busy : 1;
  if (cpuSeconds > 0) console.log(`shares applied to ${cpuSeconds.toFixed(2)} CPU s measured`);
  const head = events > 0 ? "| category | CPU s | share | µs per event |" : "| category | CPU s | share |";
  console.log(head);
  console.log(events > 0 ? "|---|---|---|---|" : "|---|---|---|");
  const rows = [...byCat].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1]);
  for (const [k, v] of rows) {
    const cells = [k, ((v * scale) / 1e6).toFixed(2), `${((v / busy) * 100).toFixed(1)}%`];
    if (events > 0) cells.push(((v * scale) / events).toFixed(1));
    console.log(`| ${cells.join(" | ")} |`);
  }
  const total = ["**total (busy)**", ((busy * scale) / 1e6).toFixed(2), "100%"];
  if (events > 0) total.push(((busy * scale) / events).toFixed(1));
  console.log(`| ${total.join(" | ")} |`);
  if (top > 0) {
    console.log(`\nheaviest functions (self time):`);
    for (const [k, v] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(`${(v / 1e6).toFixed(3).padStart(8)} s  ${((v / busy) * 100).toFixed(1).padStart(5)}%  ${k}`);
    }
  }
}

main(process.argv.slice(2));
