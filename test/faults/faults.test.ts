import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import {
  confirmedFlush,
  consume,
  createDatabase,
  daemonEnv,
  dropDatabase,
  services,
  sleep,
  spawnDaemon,
  uniqueName,
  waitFor,
  type DaemonProcess,
} from "../support/harness.js";
import { checkAgainstLedger, kafka, loadSeed, prng, summary, untilSentinels } from "../support/load.js";
import { waitForStateEqual } from "../support/state.js";
import { CutProxy } from "./proxy.js";
import { TolerantLoad } from "./tolerant-load.js";

/**
 * Fault injection under sustained load, both delivery modes. Faults, at seeded random moments:
 * - kill:        SIGKILL the daemon, start a new one;
 * - kafka-stop:  scripts/services.sh kafka-stop / kafka-start (broker gone, connections refused);
 * - kafka-freeze: SIGSTOP / SIGCONT of the broker process: the "network cut" for Kafka. A TCP proxy
 *                 cannot sit in front of Kafka, since the broker advertises 127.0.0.1:29092 in its
 *                 metadata and kafkajs goes there directly after bootstrap; a frozen broker leaves
 *                 every TCP connection open but silent, which is what a partition looks like;
 * - pg-restart:  scripts/services.sh pg-stop fast / pg-start (the load generator retries, resolving
 *                ambiguous COMMITs through a ledger table);
 * - pg-cut:      the daemon reaches PostgreSQL through a loopback proxy (PGPORT); while cut, the proxy
 *                resets existing connections and refuses new ones. The load connects directly.
 * Then an independent read_committed consumer checks everything against the ledger, and the
 * current-state topic, folded as a reader folds it, is compared with every row of the database.
 * FAULTS_PROFILE=short (default, CI) | soak | kill (SIGKILLs only, FAULTS_ROUNDS of them, default 5:
 * what a kill re-delivers, in the table's "dup/kill"). FAULTS_SEED / LOAD_SEED replay the choices;
 * FAULTS_KINDS (a comma list) plans only those kinds, FAULTS_ROUNDS times each.
 */

const PROFILE = process.env.FAULTS_PROFILE === "soak" ? "soak" : process.env.FAULTS_PROFILE === "kill" ? "kill" : "short";
const ROUNDS =
  PROFILE === "soak"
    ? Number(process.env.FAULTS_ROUNDS ?? 3)
    : PROFILE === "kill"
      ? Number(process.env.FAULTS_ROUNDS ?? 5)
      : Number(process.env.FAULTS_ROUNDS ?? 1);
const CUT_MS = PROFILE === "soak" ? [3_000, 15_000] : [3_000, 6_000];
const KINDS = ["kill", "kafka-stop", "kafka-freeze", "pg-restart", "pg-cut"] as const;
type Kind = (typeof KINDS)[number];
/** FAULTS_KINDS=kafka-stop,kill (say) plans only those kinds, FAULTS_ROUNDS times: to chase one fault. */
const PLANNED: readonly Kind[] = process.env.FAULTS_KINDS
  ? process.env.FAULTS_KINDS.split(",").map((k) => {
      if (!(KINDS as readonly string[]).includes(k)) throw new Error(`FAULTS_KINDS: unknown fault "${k}" (known: ${KINDS.join(", ")})`);
      return k as Kind;
    })
  : PROFILE === "kill"
    ? ["kill"]
    : KINDS;
const STREAMING = /"msg":"streaming"/;
const exec = promisify(execFile);

interface Row {
  mode: string;
  faults: Record<Kind, number>;
  checked: number;
  consumed: number;
  lost: number;
  duplicated: number;
  reordered: number;
  other: number;
  recovery: string[];
  /** Rows of the database the folded current-state topic does not equal (missing, extra, other state). */
  stateDiffers: number;
  seed: number;
  ambiguous: string;
}
const table: Row[] = [];

async function services_(...args: string[]): Promise<void> {
  await exec("bash", ["scripts/services.sh", ...args], { timeout: 180_000 });
}

/**
 * The pid of the broker the scripts run, as `scripts/services.sh status` reports it: it knows where
 * the services live (EVENTSTREAM_SERVICES_DIR, or <repo>/.services), and which ports are this
 * checkout's, so another broker on the machine is never stopped.
 */
async function kafkaPid(): Promise<number> {
  // status exits 1 when anything is unhealthy (PostgreSQL stopped by a fault, say): its report still counts.
  const out = await exec("bash", ["scripts/services.sh", "status"], { timeout: 60_000 }).then(
    (r) => r.stdout,
    (e: unknown) => String((e as { stdout?: unknown }).stdout ?? ""),
  );
  const m = /^kafka\s+running\s+\S+\s+pid (\d+)/m.exec(out);
  if (!m) throw new Error(`scripts/services.sh status reports no running Kafka:\n${out}`);
  return Number(m[1]);
}

/** Every daemon's output, one file, for a failed run to be read afterwards (CI keeps .services/logs). */
async function keepLogs(name: string, daemons: DaemonProcess[]): Promise<string> {
  const dir = join(process.env.EVENTSTREAM_SERVICES_DIR ?? join(process.cwd(), ".services"), "logs");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `faults-${name}.log`);
  await writeFile(file, daemons.map((x, i) => `=== daemon ${i} (pid ${x.proc.pid})\n${x.output.join("\n")}\n`).join(""));
  return file;
}

/** CI shows only what is printed: the lines that say where each session started and why it ended; the whole logs are kept. */
async function showLogs(mode: string, name: string, daemons: DaemonProcess[]): Promise<void> {
  const key = /"level":(40|50|60)|"msg":"(streaming|read back|reading back|exactly-once: resuming|no gap|replay|exactly-once: past)/;
  for (const [i, x] of daemons.entries())
    console.log(
      `=== daemon ${i}\n${x.output
        .filter((l) => key.test(l))
        .slice(-40)
        .join("\n")}`,
    );
  console.log(`faults ${mode}: the daemons' whole logs are in ${await keepLogs(name, daemons)}`);
}

function alive(d: DaemonProcess): boolean {
  return d.proc.exitCode === null && d.proc.signalCode === null;
}

async function runMode(mode: "at-least-once" | "exactly-once"): Promise<void> {
  const seed = Number(process.env.FAULTS_SEED) || loadSeed();
  const rand = prng(seed ^ 0xfa017);
  const db = uniqueName(mode === "exactly-once" ? "faults_eo" : "faults_alo");
  const dags = Array.from({ length: 20 }, (_, i) => `dag_${String(i).padStart(2, "0")}`);
  await createDatabase(db, "3");
  await TolerantLoad.prepare(db);
  const s = services();
  const proxy = new CutProxy(s.pg.host, s.pg.port);
  const port = await proxy.listen();
  const extra: Record<string, string> = { PGPORT: String(port) };
  if (mode === "exactly-once")
    Object.assign(extra, { EVENTSTREAM_DELIVERY: "exactly-once", EVENTSTREAM_CHECKPOINT_TOPIC: `${db}.checkpoints` });
  const env = daemonEnv(db, extra);
  const daemons: DaemonProcess[] = [];
  let d = spawnDaemon(env);
  daemons.push(d);
  const counts = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  const recovery: string[] = [];
  const plan: Kind[] = [];
  for (let r = 0; r < ROUNDS; r++) plan.push(...[...PLANNED].sort(() => rand() - 0.5));
  console.log(`faults ${mode}: profile ${PROFILE}, seed ${seed}, plan ${plan.join(",")}`);
  const load = new TolerantLoad({
    db,
    major: "3",
    dags,
    workers: 4,
    tasksPerRun: 6,
    maxRowsPerTx: 8,
    txDelayMs: PROFILE === "soak" ? 20 : 5,
    seed,
  });
  let kafkaDown = false;
  /** The broker stopped with SIGSTOP, while it is (status would hang asking it). */
  let frozenPid: number | null = null;
  try {
    await d.waitForLog(STREAMING, 60_000);
    load.start();
    for (const kind of plan) {
      await sleep(2_000 + rand() * 3_000);
      const cutMs = CUT_MS[0]! + rand() * (CUT_MS[1]! - CUT_MS[0]!);
      const before = load.ledger.count;
      let slotBack = 0n;
      switch (kind) {
        case "kill":
          d.proc.kill("SIGKILL");
          await d.exited;
          d = spawnDaemon(env);
          daemons.push(d);
          break;
        case "kafka-stop":
          kafkaDown = true;
          await kafka("kafka-stop");
          await sleep(cutMs);
          await kafka("kafka-start");
          kafkaDown = false;
          break;
        case "kafka-freeze": {
          const pid = await kafkaPid();
          frozenPid = pid;
          process.kill(pid, "SIGSTOP");
          await sleep(cutMs);
          process.kill(pid, "SIGCONT");
          frozenPid = null;
          break;
        }
        case "pg-restart": {
          // How far the restart puts the slot back, i.e. what the daemon decodes again: before 17 a
          // slot's confirmed position reaches disk only with a change of its restart_lsn/xmin, from 17
          // also at shutdown. Read right after the start, before the daemon's reconnection acknowledges.
          const acked = (await confirmedFlush(db, db)) ?? 0n;
          await services_("pg-stop", "fast");
          await sleep(Math.min(cutMs, 5_000));
          await services_("pg-start");
          slotBack = acked - ((await confirmedFlush(db, db)) ?? acked);
          break;
        }
        case "pg-cut":
          proxy.setCut(true);
          await sleep(cutMs);
          proxy.setCut(false);
          break;
      }
      counts[kind]++;
      // Recovery: from the fault's end until the slot's confirmed position moves past where it was
      // then (new changes, committed meanwhile by the load, are in Kafka and acknowledged).
      const end = Date.now();
      const base = await waitFor("slot position", async () => (await confirmedFlush(db, db)) ?? false, 60_000, 200);
      await waitFor(`daemon streaming again after ${kind}`, async () => ((await confirmedFlush(db, db)) ?? 0n) > base, 120_000, 100);
      const ms = Date.now() - end;
      recovery.push(kind === "pg-restart" ? `${kind} ${ms}ms (slot back ${slotBack} B)` : `${kind} ${ms}ms`);
      console.log(
        `  ${mode}: ${kind} (${(cutMs / 1000).toFixed(1)} s) after ${before} changes; streaming again ${ms} ms after the fault ended`,
      );
      if (!alive(d)) throw new Error(`daemon exited after ${kind}:\n${d.output.slice(-20).join("\n")}`);
    }
    await sleep(2_000);
    await load.stop();
    await load.commitSentinels();
    // A timeout is not let through: the ledger check below then fails on every missing change, and
    // says which, while the soak table still gets this round's row.
    const consumed = await consume([`${db}.events`], untilSentinels(dags), { timeoutMs: 180_000, allowTimeout: true });
    const result = checkAgainstLedger(consumed, load.ledger, { exactlyOnce: mode === "exactly-once" });
    // A restarted daemon may not know a row's previous state: not a delivery problem.
    const problems = result.problems.filter(
      (p) => !p.includes("previous_state_known=false without a restart") && !/^\d+ duplicate events, expected none$/.test(p),
    );
    // The current-state topic, folded as a reader folds it, against every row of the database.
    const state = await waitForStateEqual(db, 60_000);
    console.log(
      `faults ${mode}: current-state topic: ${state.rows} rows in the database, ${state.state.entries.size} keys folded from ${state.state.records} records in ${state.readMs} ms, ${state.problems.length} differ\n${summary(state.problems, 10).join("\n")}`,
    );
    const lost = problems.filter((p) => p.includes(": missing #")).length;
    const reordered = problems.filter((p) => p.includes("not commit order")).length;
    const row: Row = {
      mode,
      faults: counts,
      checked: load.ledger.count,
      consumed: result.consumed,
      lost,
      duplicated: result.duplicates,
      reordered,
      other: problems.length - lost - reordered,
      recovery,
      stateDiffers: state.problems.length,
      seed,
      ambiguous: `${load.ambiguous.committed}/${load.ambiguous.notCommitted}`,
    };
    table.push(row);
    console.log(
      `faults ${mode}: ${load.ledger.count} changes in ${load.ledger.transactions} tx, ${load.retries} retried tx; ${JSON.stringify(row)}\n${summary(problems, 15).join("\n")}`,
    );
    expect(summary(problems)).toEqual([]);
    expect(summary(state.problems)).toEqual([]);
    expect(result.unique).toBe(load.ledger.count);
    if (mode === "exactly-once") expect(result.duplicates).toBe(0);
    d.proc.kill("SIGTERM");
    expect(await d.exited).toBe(0);
  } catch (e: unknown) {
    await showLogs(mode, `${db}-${seed}`, daemons);
    throw e;
  } finally {
    if (frozenPid !== null) process.kill(frozenPid, "SIGCONT");
    if (kafkaDown) await kafka("kafka-start");
    await load.stop().catch(() => undefined);
    for (const x of daemons) if (alive(x)) x.proc.kill("SIGKILL");
    await proxy.close();
    await waitFor(
      "PostgreSQL up",
      async () => {
        await services_("pg-start");
        return true;
      },
      60_000,
      1000,
    ).catch(() => undefined);
    await dropDatabase(db).catch(() => undefined);
  }
}

describe(`faults under load (${PROFILE})`, () => {
  afterAll(() => {
    const head = [
      "mode",
      ...KINDS,
      "events",
      "consumed",
      "lost",
      "dup",
      "dup/kill",
      "reord",
      "other",
      "state differs",
      "ambiguous c/n",
      "seed",
      "recovery (ms, per fault)",
    ];
    const lines = table.map((r) => [
      r.mode,
      ...KINDS.map((k) => String(r.faults[k])),
      String(r.checked),
      String(r.consumed),
      String(r.lost),
      String(r.duplicated),
      PROFILE === "kill" && r.faults.kill > 0 ? (r.duplicated / r.faults.kill).toFixed(1) : "-",
      String(r.reordered),
      String(r.other),
      String(r.stateDiffers),
      r.ambiguous,
      String(r.seed),
      r.recovery.join(", "),
    ]);
    console.log([head, ...lines].map((l) => "| " + l.join(" | ") + " |").join("\n"));
  });
  it("at-least-once: nothing lost or reordered; duplicates repeat their original", () => runMode("at-least-once"));
  it("exactly-once: nothing lost, duplicated or reordered (read_committed)", () => runMode("exactly-once"));
});
