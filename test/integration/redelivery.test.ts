import { describe, expect, it } from "vitest";
import type pg from "pg";
import { CutProxy } from "../faults/proxy.js";
import { insertDagRun, insertTi, updateDagRun, updateTi, type TiKey } from "../support/airflow-rows.js";
import {
  confirmedFlush,
  consume,
  createDatabase,
  daemonEnv,
  dropDatabase,
  pgClient,
  services,
  spawnDaemon,
  uniqueName,
  waitFor,
  type Consumed,
  type DaemonProcess,
} from "../support/harness.js";
import { endOffsets, parseLsnText, positionLsn } from "../support/load.js";

/**
 * What a restart publishes again, and what it remembers (at-least-once, and exactly-once read
 * read_committed). A SIGKILL leaves the slot behind what Kafka holds; the next start replays from
 * the slot. What Kafka holds already must not be published a second time, and rows whose state was
 * published before must not come out as "previous state unknown" (nor a 3.x heartbeat of a running
 * task as an event). And the window itself is short: PostgreSQL hears that an event is in Kafka
 * soon after Kafka has it.
 *
 * The window is made wide on purpose: the daemon reaches PostgreSQL through a proxy that, while
 * muted, drops the daemon's status updates, so the slot stays where it was while events flow.
 */

const STREAMING = /"msg":"streaming"/;
const TASKS = ["t0", "t1", "t2", "t3"];
const DAGS = ["d0", "d1", "d2"];

function alive(d: DaemonProcess): boolean {
  return d.proc.exitCode === null && d.proc.signalCode === null;
}

async function walNow(c: pg.Client): Promise<bigint> {
  const { rows } = await c.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
  return parseLsnText(rows[0]!.lsn);
}

async function eachTask(c: pg.Client, runs: Map<string, string>, tasks: string[], set: Record<string, unknown>): Promise<void> {
  for (const dag of DAGS) {
    await c.query("BEGIN");
    for (const task of tasks) await updateTi(c, key(dag, task, runs), set);
    await c.query("COMMIT");
  }
}

function key(dag: string, task: string, runs: Map<string, string>): TiKey {
  return { dag_id: dag, task_id: task, run_id: runs.get(dag)! };
}

/**
 * The records in `topics` once their count reaches `atLeast` and stays put for a while (late
 * duplicates included). Exactly-once: offsets also count transaction markers and aborted records,
 * which a read_committed consumer never receives, so the end offsets only say when writing
 * stopped; the read then waits for `atLeast` events, and with `final` goes on until one more
 * arrives (a duplicate, say) or nothing more comes, and the caller checks the count.
 */
async function settled(
  topics: () => Promise<string[]>,
  atLeast: number,
  delivery: Delivery = "at-least-once",
  final = false,
): Promise<Consumed[]> {
  let last = -1;
  let since = Date.now();
  const total = await waitFor(
    `${atLeast} events in Kafka, and no more arriving`,
    async () => {
      let n = 0;
      for (const t of await topics()) for (const high of (await endOffsets(t)).values()) n += Number(high);
      if (n !== last) {
        last = n;
        since = Date.now();
        return false;
      }
      return n >= atLeast && Date.now() - since >= 2_000 ? n : false;
    },
    60_000,
    250,
  );
  if (delivery === "at-least-once") return consume(await topics(), (all) => all.length >= total, 60_000);
  if (!final) return consume(await topics(), (all) => all.length >= atLeast, 60_000);
  return consume(await topics(), (all) => all.length > atLeast, { timeoutMs: 15_000, allowTimeout: true });
}

async function eventTopics(db: string, perDag: boolean): Promise<string[]> {
  if (!perDag) return [`${db}.events`];
  const { Kafka, logLevel } = await import("kafkajs");
  const admin = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    return (await admin.listTopics()).filter((t) => t.startsWith(`${db}.`));
  } finally {
    await admin.disconnect();
  }
}

function duplicates(consumed: Consumed[]): string[] {
  const seen = new Set<string>();
  const dup: string[] = [];
  for (const m of consumed) {
    const p = m.event.source.position;
    if (seen.has(p)) dup.push(`${m.topic}/${m.partition}@${m.offset} ${p} ${m.event.type} ${m.event.op}`);
    seen.add(p);
  }
  return dup;
}

type Delivery = "at-least-once" | "exactly-once";

async function killAndRestart(layout: "one topic" | "topic per DAG", delivery: Delivery = "at-least-once"): Promise<void> {
  const perDag = layout === "topic per DAG";
  const eos = delivery === "exactly-once";
  const db = uniqueName(`${eos ? "eos_" : ""}${perDag ? "redeliver_tpd" : "redeliver"}`);
  await createDatabase(db, "3");
  const s = services();
  const proxy = new CutProxy(s.pg.host, s.pg.port);
  const port = await proxy.listen();
  const env = daemonEnv(db, {
    PGPORT: String(port),
    ...(eos ? { EVENTSTREAM_DELIVERY: "exactly-once" } : {}),
    ...(perDag ? { EVENTSTREAM_TOPIC_TEMPLATE: `${db}.{dag_id}` } : {}),
  });
  const daemons: DaemonProcess[] = [];
  const c = pgClient(db);
  await c.connect();
  try {
    // A task instance from before the slot: the daemon never sees its row, so on 3.x its DELETE
    // names it by id alone, with no dag_id and so no Kafka key (see below).
    await insertDagRun(c, "3", "pre", "manual__pre");
    await insertTi(c, "3", { dag_id: "pre", task_id: "orphan", run_id: "manual__pre" });
    let d = spawnDaemon(env);
    daemons.push(d);
    await d.waitForLog(STREAMING, 60_000);
    const topics = () => eventTopics(db, perDag);

    // Phase 1, acknowledged: every task running; t3 fails its first try and is set up for a retry,
    // which on 3.x gives the row a new id in a second UPDATE (the event carries the old one).
    const runs = new Map<string, string>();
    const runIds = new Map<string, number>();
    for (const dag of DAGS) {
      runs.set(dag, `manual__${dag}`);
      runIds.set(dag, await insertDagRun(c, "3", dag, runs.get(dag)!));
      for (const task of TASKS) await insertTi(c, "3", key(dag, task, runs));
    }
    for (const state of ["scheduled", "queued", "running"])
      await eachTask(c, runs, TASKS, { state, ...(state === "running" ? { try_number: 1 } : {}) });
    for (const dag of DAGS) {
      await c.query("BEGIN");
      await updateTi(c, key(dag, "t3", runs), { state: "up_for_retry" });
      await updateTi(c, key(dag, "t3", runs), { id: (await c.query<{ id: string }>("SELECT gen_random_uuid()::text AS id")).rows[0]!.id });
      await c.query("COMMIT");
    }
    const phase1 = await walNow(c);
    await waitFor("the slot confirmed past phase 1", async () => ((await confirmedFlush(db, db)) ?? 0n) >= phase1, 60_000, 100);
    const phase1Events = DAGS.length + DAGS.length * TASKS.length * 4 + DAGS.length;

    // Phase 2, in Kafka but never acknowledged to PostgreSQL: t0 succeeds, t1 heartbeats, d0's run
    // starts. (t2 is left alone: after the restart only what was read back says it is running.)
    proxy.setMuted(true);
    await eachTask(c, runs, ["t0"], { state: "success" });
    await eachTask(c, runs, ["t1"], { last_heartbeat_at: new Date().toISOString() });
    await updateDagRun(c, runIds.get("d0")!, { state: "running" });
    // Last: an event without a key lands in any partition, so at-least-once counts it as in Kafka
    // only when every partition is past it, and here not all are: the one re-delivery that cannot
    // be told apart. Exactly-once's checkpoint covers it like any other.
    await c.query("DELETE FROM task_instance WHERE dag_id = 'pre'");
    const phase2Events = DAGS.length + 2;
    await settled(topics, phase1Events + phase2Events, delivery);
    d.proc.kill("SIGKILL");
    await d.exited;
    proxy.setMuted(false);

    d = spawnDaemon(env);
    daemons.push(d);
    await d.waitForLog(STREAMING, 60_000);

    // Phase 3, after the restart: running tasks heartbeat (no event: not a transition), t1
    // succeeds, the retried t3 is scheduled again (by its new id), d1's run starts.
    await eachTask(c, runs, ["t1", "t2"], { last_heartbeat_at: new Date().toISOString() });
    await eachTask(c, runs, ["t1"], { state: "success" });
    await eachTask(c, runs, ["t3"], { state: "scheduled" });
    await updateDagRun(c, runIds.get("d1")!, { state: "running" });
    const phase3Events = DAGS.length * 2 + 1;

    const redelivered = eos ? 0 : 1;
    const all = await settled(topics, phase1Events + phase2Events + phase3Events + redelivered, delivery, true);
    const started = d.output.find((l) => l.includes("read back the event topics"));
    console.log(`${delivery}, ${layout}: ${all.length} events read; restart: ${started ?? "(no read-back logged)"}`);
    // Every row was seen from its INSERT on, by this daemon or its predecessor (but the orphan).
    const unknown = all
      .filter((m) => !m.event.previous_state_known && m.event.dag_id !== null)
      .map((m) => `${m.event.source.position} ${m.event.type} ${"task_id" in m.event ? m.event.task_id : m.event.run_id} ${m.event.state}`);
    expect(unknown).toEqual([]);
    const orphan = all.filter((m) => m.event.type === "task_instance" && m.event.op === "delete");
    expect(orphan.length).toBe(1 + redelivered);
    expect(orphan[0]!.event.dag_id).toBeNull();
    // Re-delivered, it is its first copy exactly.
    if (!eos) expect(JSON.stringify(orphan[1]!.event)).toBe(JSON.stringify(orphan[0]!.event));
    expect(duplicates(all.filter((m) => m !== orphan[1]))).toEqual([]);
    // And no other event: a heartbeat after the restart is none.
    expect(all.length).toBe(phase1Events + phase2Events + phase3Events + redelivered);
    const retried = all.filter(
      (m) =>
        m.event.type === "task_instance" &&
        m.event.task_id === "t3" &&
        m.event.state === "scheduled" &&
        positionLsn(m.event.source.position) > phase1,
    );
    expect(retried.map((m) => m.event.previous_state)).toEqual(DAGS.map(() => "up_for_retry"));
    expect(alive(d)).toBe(true);
    d.proc.kill("SIGTERM");
    expect(await d.exited).toBe(0);
  } finally {
    for (const x of daemons) if (alive(x)) x.proc.kill("SIGKILL");
    await c.end();
    await proxy.close();
    await dropDatabase(db).catch(() => undefined);
  }
}

describe("re-delivery after a restart (at-least-once)", () => {
  it(
    "SIGKILL with events in Kafka the slot has not confirmed: none published again, no previous state forgotten (one topic)",
    () => killAndRestart("one topic"),
    240_000,
  );
  it("the same with a topic per DAG (EVENTSTREAM_TOPIC_TEMPLATE)", () => killAndRestart("topic per DAG"), 240_000);
});

describe("re-delivery after a restart (exactly-once, read_committed)", () => {
  it(
    "SIGKILL with committed events the slot has not confirmed: none published again, no previous state forgotten, a heartbeat is no event (one topic)",
    () => killAndRestart("one topic", "exactly-once"),
    240_000,
  );
  it("the same with a topic per DAG (EVENTSTREAM_TOPIC_TEMPLATE)", () => killAndRestart("topic per DAG", "exactly-once"), 240_000);
});

describe("acknowledgement window (at-least-once)", () => {
  it("PostgreSQL hears that a transaction's events are in Kafka soon after, though the status interval is 10 s", async () => {
    const db = uniqueName("ackwindow");
    await createDatabase(db, "3");
    const daemons: DaemonProcess[] = [];
    const c = pgClient(db);
    await c.connect();
    try {
      const d = spawnDaemon(daemonEnv(db, { EVENTSTREAM_STATUS_INTERVAL_SECONDS: "10" }));
      daemons.push(d);
      await d.waitForLog(STREAMING, 60_000);
      const first = await insertDagRun(c, "3", "quiet", "r1");
      const afterFirst = await walNow(c);
      await waitFor("the first transaction acknowledged", async () => ((await confirmedFlush(db, db)) ?? 0n) >= afterFirst, 30_000, 100);
      // The next one right after: a checkpoint was just written, so only one asked for because
      // this transaction's events are in Kafka acknowledges it before the status interval is up.
      await updateDagRun(c, first, { state: "running" });
      const consumed = await consume([`${db}.events`], (all) => all.some((m) => m.event.state === "running"), 30_000);
      const event = consumed.find((m) => m.event.state === "running")!;
      const commit = positionLsn(event.event.source.position);
      const acknowledged = await waitFor(
        "the slot confirmed past the second transaction's commit",
        async () => {
          const lsn = (await confirmedFlush(db, db)) ?? 0n;
          return lsn > commit ? lsn : false;
        },
        3_000,
        50,
      ).catch(() => null);
      expect(acknowledged, "the slot's confirmed_flush_lsn did not pass the commit of an event Kafka holds within 3 s").not.toBeNull();
      d.proc.kill("SIGTERM");
      expect(await d.exited).toBe(0);
    } finally {
      for (const x of daemons) if (alive(x)) x.proc.kill("SIGKILL");
      await c.end();
      await dropDatabase(db).catch(() => undefined);
    }
  }, 120_000);
});
