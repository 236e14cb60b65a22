/**
 * Where a process's garbage comes from and what collecting it cost, for `bench:compare`'s daemon
 * (or any node process). Two roles:
 *
 *   BENCH_DAEMON_NODE_ARGS="--import $PWD/bench/gc-probe.ts" node bench/compare.ts --systems daemon
 *       loaded before the daemon: samples allocations (V8's sampling heap profiler, counting
 *       objects the collector has freed too, which a plain --heap-prof leaves out) and records
 *       every collection (v8.GCProfiler); at exit writes bench/results/gc-probe-<pid>.json
 *   node bench/gc-probe.ts bench/results/gc-probe-<pid>.json [--top N]
 *       prints the collections by kind and the allocation sites by bytes
 *
 * Why not a CPU profile: it samples the JavaScript thread only, and a third or more of the daemon's
 * CPU is on V8's helper threads (concurrent marking, parallel scavenges), which this counts by
 * what they collected. Not part of the product; a measurement aid. Erasable TypeScript only.
 */
import { Session } from "node:inspector";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { GCProfiler } from "node:v8";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  callFrame: CallFrame;
  selfSize: number;
  children: ProfileNode[];
}
interface GcStat {
  gcType: string;
  cost: number;
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}
interface ProbeFile {
  pid: number;
  seconds: number;
  gc: GcStat[];
  allocation: ProfileNode | null;
}

/** Bytes between samples: the profiler's default (32 KiB) is coarse for 700-byte records; 16 KiB costs little. */
const SAMPLING_INTERVAL = 16_384;

function probe(): void {
  const started = Date.now();
  const session = new Session();
  session.connect();
  session.post("HeapProfiler.enable");
  session.post("HeapProfiler.startSampling", {
    samplingInterval: SAMPLING_INTERVAL,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  const gc = new GCProfiler();
  gc.start();
  let written = false;
  // At exit: the session is this thread's own, so its replies come synchronously, before the process ends.
  process.on("exit", () => {
    // A short-lived node (the launcher's version check, which NODE_OPTIONS reaches too) writes nothing.
    if (written || Date.now() - started < 1_000) return;
    written = true;
    const stats = gc.stop() as { statistics: GcStat[] } | undefined;
    session.post("HeapProfiler.stopSampling", (err, reply) => {
      const out: ProbeFile = {
        pid: process.pid,
        seconds: (Date.now() - started) / 1000,
        gc: stats?.statistics ?? [],
        allocation: err ? null : ((reply as { profile: { head: ProfileNode } }).profile.head ?? null),
      };
      const dir = path.resolve("bench/results");
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, `gc-probe-${process.pid}.json`), JSON.stringify(out));
    });
  });
}

function summarize(file: string, top: number): void {
  const p = JSON.parse(readFileSync(file, "utf8")) as ProbeFile;
  console.log(`${file}: pid ${p.pid}, ${p.seconds.toFixed(1)} s`);
  const kinds = new Map<string, { n: number; ms: number; freed: number }>();
  for (const g of p.gc) {
    const k = kinds.get(g.gcType) ?? { n: 0, ms: 0, freed: 0 };
    k.n++;
    k.ms += g.cost / 1000;
    k.freed += g.beforeGC.heapStatistics.usedHeapSize - g.afterGC.heapStatistics.usedHeapSize;
    kinds.set(g.gcType, k);
  }
  console.log("\ncollections (cost: time on the JavaScript thread; helper threads' work is not in it)");
  for (const [kind, k] of kinds)
    console.log(
      `  ${kind.padEnd(28)} ${String(k.n).padStart(6)}  ${k.ms.toFixed(0).padStart(7)} ms  freed ${(k.freed / 1e6).toFixed(0)} MB`,
    );
  if (p.allocation === null) return;
  const bySite = new Map<string, number>();
  let total = 0;
  const walk = (n: ProfileNode): void => {
    const cf = n.callFrame;
    const where = cf.url === "" ? "(native)" : cf.url.replace(/^.*\/(dist|node_modules)\//, "$1/").replace(/^file:\/\//, "");
    const site = `${cf.functionName || "(anonymous)"} ${where}:${cf.lineNumber + 1}`;
    bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
    total += n.selfSize;
    for (const c of n.children) walk(c);
  };
  walk(p.allocation);
  console.log(`\nallocated (sampled, freed objects included): ${(total / 1e6).toFixed(0)} MB; heaviest sites`);
  for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`  ${(bytes / 1e6).toFixed(1).padStart(8)} MB ${((100 * bytes) / total).toFixed(1).padStart(5)}%  ${site}`);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith("--"));
  if (file === undefined) {
    console.error("usage: node bench/gc-probe.ts bench/results/gc-probe-<pid>.json [--top N]");
    process.exit(2);
  }
  const i = args.indexOf("--top");
  summarize(file, i >= 0 ? Number(args[i + 1]) : 30);
} else probe();
