/**
 * Measurements for `npm run bench:compare`: a process tree's CPU and RSS from /proc, sampled every
 * 100 ms, and a topic read back for its record count, byte count and first/last append time.
 * Erasable TypeScript only (Node runs it by type stripping).
 */
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { Kafka, logLevel } from "kafkajs";

const CLK_TCK = 100;

interface Sample {
  /** Date.now() of the sample. */
  at: number;
  /** utime+stime of the tree so far, seconds (exited members keep their last figure). */
  cpuS: number;
  /** utime+stime of the root's main thread so far, seconds: for the daemon, the JavaScript thread; the rest of its CPU is V8's helper threads (garbage collection, compilation) and libuv's. */
  mainS: number;
  rssKb: number;
}

/** utime+stime in a /proc stat file (a process's or one thread's), clock ticks. */
function statTicks(file: string): number {
  const stat = readFileSync(file, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // f[0] is field 3 (state): utime, stime are fields 14, 15. Not cutime/cstime: the children are
  // sampled themselves, and a reaped child's time would then count twice.
  return Number(f[11]) + Number(f[12]);
}

/** utime+stime of one thread, clock ticks; null when it is gone. */
function threadTicks(pid: number, tid: number): number | null {
  try {
    return statTicks(`/proc/${pid}/task/${tid}/stat`);
  } catch {
    return null;
  }
}

function statOf(pid: number): { ticks: number; rssKb: number; hwmKb: number } | null {
  try {
    const ticks = statTicks(`/proc/${pid}/stat`);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return { ticks, rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0), hwmKb: Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) };
  } catch {
    return null;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/)) if (tid !== "") out.push(Number(tid));
  } catch {
    /* gone, or a kernel without the children file: the root alone */
  }
  return out;
}

/**
 * Samples a process and its descendants every 100 ms (the daemon's launcher execs node and the
 * JVMs are started directly, so the tree is usually one process). A member that exits keeps its
 * last CPU figure; one that lives less than 100 ms is missed.
 */
export class TreeSampler {
  readonly samples: Sample[] = [];
  /**
   * The larger of the tree's summed RSS at a sample and its members' own high-water marks (VmHWM,
   * the kernel's peak RSS of each process) summed. Samples 100 ms apart missed peaks: a daemon
   * run sampled every 50 ms beside the bench peaked 4.5 MB above the figure the samples gave.
   * For a tree of several processes the summed marks are an upper bound (they need not have
   * peaked together); the systems measured here are one process each.
   */
  peakRssKb = 0;
  private readonly hwmKb = new Map<number, number>();
  private readonly lastTicks = new Map<number, number>();
  private mainTicks = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly root: number;
  extraPids: number[] = [];

  constructor(root: number) {
    this.root = root;
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
    this.sample();
  }

  sample(): void {
    let rss = 0;
    const seen = new Set<number>();
    const walk = (pid: number): void => {
      if (seen.has(pid)) return;
      seen.add(pid);
      const s = statOf(pid);
      if (!s) return;
      rss += s.rssKb;
      this.hwmKb.set(pid, Math.max(this.hwmKb.get(pid) ?? 0, s.hwmKb));
      this.lastTicks.set(pid, Math.max(this.lastTicks.get(pid) ?? 0, s.ticks));
      for (const c of childrenOf(pid)) walk(c);
    };
    walk(this.root);
    for (const p of this.extraPids) walk(p);
    let ticks = 0;
    for (const t of this.lastTicks.values()) ticks += t;
    // The main thread's id is the process's pid.
    this.mainTicks = Math.max(this.mainTicks, threadTicks(this.root, this.root) ?? 0);
    this.samples.push({ at: Date.now(), cpuS: ticks / CLK_TCK, mainS: this.mainTicks / CLK_TCK, rssKb: rss });
    let hwm = 0;
    for (const k of this.hwmKb.values()) hwm += k;
    this.peakRssKb = Math.max(this.peakRssKb, rss, hwm);
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }

  /** CPU seconds between two instants (Date.now() clock), from the samples around them: the tree's, or its root's main thread's. */
  cpuBetween(fromMs: number, toMs: number, of: "tree" | "main" = "tree"): number {
    return between(this.samples, fromMs, toMs, of === "tree" ? (s) => s.cpuS : (s) => s.mainS);
  }

  get totalCpuS(): number {
    return this.samples[this.samples.length - 1]?.cpuS ?? 0;
  }
}

/**
 * A running total's growth between two instants (Date.now() clock): its last sample at or before
 * `fromMs` to its first at or after `toMs` (the last one when none is), so a window between two
 * 100 ms samples is never undercounted.
 */
function between<S extends { at: number }>(samples: readonly S[], fromMs: number, toMs: number, total: (s: S) => number): number {
  let start = 0;
  for (const s of samples) {
    if (s.at > fromMs) break;
    start = total(s);
  }
  const after = samples.find((s) => s.at >= toMs) ?? samples[samples.length - 1];
  return (after === undefined ? 0 : total(after)) - start;
}

/**
 * The whole machine's busy CPU (every process, the kernel's interrupts included), from /proc/stat
 * every 100 ms: how many of the cores a run kept busy. PostgreSQL's walsender, Kafka's broker and
 * the system measured share them, so a run that keeps them all busy is held back by the machine.
 */
export class MachineSampler {
  private readonly samples: { at: number; busyS: number }[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
    this.sample();
  }

  private sample(): void {
    // "cpu  user nice system idle iowait irq softirq steal ...", in clock ticks: busy is all but idle and iowait.
    const f = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
    this.samples.push({ at: Date.now(), busyS: busy / CLK_TCK });
  }

  /** Cores busy on average between two instants. */
  coresBetween(fromMs: number, toMs: number): number {
    return between(this.samples, fromMs, toMs, (s) => s.busyS) / Math.max(0.001, (toMs - fromMs) / 1000);
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}

/**
 * The pid of the process listening on a loopback TCP port (the bench's own Kafka broker), from
 * /proc/net/tcp{,6} and the processes' socket descriptors; null when none is seen (another user's
 * process, or not on this machine).
 */
export function listenerPid(port: number): number | null {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      // sl local_address rem_address st ... inode: state 0A is LISTEN.
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === "0A" && parseInt(f[1]!.split(":")[1]!, 16) === port) inodes.add(f[9]!);
    }
  }
  if (inodes.size === 0) return null;
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m && inodes.has(m[1]!)) return Number(pid);
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return null;
}

export interface TopicRead {
  records: number;
  bytes: number;
  /** LogAppendTime of the first and last record, ms; null when empty. */
  firstMs: number | null;
  lastMs: number | null;
  perTopic: Record<string, number>;
}

/** Records in the topics now (sum of the partitions' high watermarks: the topics are fresh). */
export async function topicCount(kafka: Kafka, topics: string[]): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    let n = 0;
    for (const t of topics) for (const p of await admin.fetchTopicOffsets(t)) n += Number(p.high);
    return n;
  } finally {
    await admin.disconnect();
  }
}

/**
 * Reads the topics from the start to their current end: count, key+value bytes, first and last
 * append time (the topics are created with message.timestamp.type=LogAppendTime, so a record's
 * timestamp is when the broker appended it, whatever the producer set).
 */
export async function readTopics(kafka: Kafka, topics: string[], group: string): Promise<TopicRead> {
  const admin = kafka.admin();
  await admin.connect();
  const remaining = new Map<string, number>();
  const perTopic: Record<string, number> = {};
  try {
    for (const t of topics) {
      perTopic[t] = 0;
      for (const p of await admin.fetchTopicOffsets(t)) if (Number(p.high) > 0) remaining.set(`${t}/${p.partition}`, Number(p.high));
    }
  } finally {
    await admin.disconnect();
  }
  const out: TopicRead = { records: 0, bytes: 0, firstMs: null, lastMs: null, perTopic };
  if (remaining.size === 0) return out;
  const consumer = kafka.consumer({ groupId: group, maxBytes: 50 * 1024 * 1024, maxBytesPerPartition: 10 * 1024 * 1024 });
  await consumer.connect();
  try {
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const key = `${batch.topic}/${batch.partition}`;
        const high = remaining.get(key);
        if (high === undefined) return;
        for (const m of batch.messages) {
          if (Number(m.offset) >= high) break;
          const ts = Number(m.timestamp);
          if (out.firstMs === null || ts < out.firstMs) out.firstMs = ts;
          if (out.lastMs === null || ts > out.lastMs) out.lastMs = ts;
          out.records++;
          perTopic[batch.topic]!++;
          out.bytes += (m.value?.length ?? 0) + (m.key?.length ?? 0);
          if (Number(m.offset) === high - 1) {
            remaining.delete(key);
            if (remaining.size === 0) done();
          }
        }
      },
    });
    const timeout = setTimeout(done, 300_000);
    await finished;
    clearTimeout(timeout);
  } finally {
    await consumer.disconnect();
  }
  return out;
}

export function kafkaClient(brokers: string[]): Kafka {
  return new Kafka({ clientId: "eventstream-compare", brokers, logLevel: logLevel.NOTHING });
}
