import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import pg from "pg";
import {
  airflowFixture,
  consume,
  daemonEnv,
  sleep,
  spawnDaemon,
  uniqueName,
  waitFor,
  type Consumed,
  type DaemonProcess,
} from "../support/harness.js";
import { checkAgainstLedger, LoadGenerator, loadSeed, summary, untilSentinels, type LoadOptions } from "../support/load.js";
import { startPgPair, type PgNode, type PgPair } from "../support/pg-pair.js";

/**
 * Decoding from a hot standby (PostgreSQL 16+, docs/standby.md): the daemon is pointed at the
 * standby alone, Airflow's load runs on the primary. A start on the standby creates nothing there
 * (read-only): a missing publication is an error naming the SQL for the primary; the slot is the
 * standby's own, and its creation says in the log why it waits. Under load, the events equal the
 * primary's transitions. Then the standby is promoted and the old primary stopped (immediate), and
 * load goes on against the promoted server, at the same address: the daemon carries on from the
 * same slot, with no gap and nothing lost. Real PostgreSQL pairs (test/support/pg-pair.ts), real
 * Kafka, the daemon as its own process.
 */

const MAJORS = [16, 18] as const;
const SEED = loadSeed();

function clientOf(node: PgNode): (database: string) => pg.Client {
  return (database) => new pg.Client({ host: node.host, port: node.port, user: "postgres", database });
}

function loadOn(node: PgNode, db: string, dags: string[]): LoadGenerator {
  const o: LoadOptions = {
    db,
    major: "3",
    dags,
    workers: 4,
    tasksPerRun: 4,
    activePerWorker: 8,
    maxRowsPerTx: 4,
    txDelayMs: 5,
    seed: SEED,
    connect: clientOf(node),
  };
  return new LoadGenerator(o);
}

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t0 = Date.now();
  const v = await p;
  return [v, Date.now() - t0];
}

describe.each(MAJORS)("decoding from a standby of PostgreSQL %i", (major) => {
  let pair: PgPair;
  let db: string;
  let env: Record<string, string>;
  const daemons: DaemonProcess[] = [];

  beforeAll(async () => {
    pair = await startPgPair({ major });
    db = uniqueName("standby");
    await pair.primary.query(`CREATE DATABASE ${db}`);
    await pair.primary.query(airflowFixture("3").sql, [], db);
    await pair.waitCaughtUp();
    env = daemonEnv(db, { PGHOST: pair.standby.host, PGPORT: String(pair.standby.port), PGUSER: "postgres", PGPASSWORD: "" });
  });

  afterAll(async () => {
    for (const d of daemons) d.proc.kill("SIGKILL");
    await Promise.all(daemons.map((d) => d.exited));
    await pair?.destroy();
  });

  it("creates nothing on the standby: a missing publication is an error naming the SQL to run on the primary", async () => {
    const d = spawnDaemon(env);
    daemons.push(d);
    expect(await d.exited).toBe(2);
    const out = d.output.join("\n");
    expect(out).toContain(`publication "${db}" does not exist`);
    expect(out).toContain("is a standby (in recovery)");
    expect(out).toContain(`On the primary, as the owner of Airflow's tables, run: CREATE PUBLICATION "${db}" FOR TABLE`);
    expect(out).not.toContain("read-only transaction");
    const slots = await pair.standby.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [db]);
    expect(slots).toHaveLength(0);
    // `check` says the same, as a problem (a start on this server would refuse), not "a start creates it".
    const check = spawnDaemon(env, ["check"]);
    daemons.push(check);
    expect(await check.exited).toBe(1);
    const checkOut = check.output.join("\n");
    expect(checkOut).toMatch(
      /PROBLEM +publication: .*is a standby \(in recovery\).*On the primary, as the owner of Airflow's tables, run: CREATE PUBLICATION/,
    );
    expect(checkOut).not.toContain("a start creates it");

    // The operator's fix (docs/standby.md), run on the primary; but without xcom, which the daemon
    // also captures: the next start must ask for that too, again on the primary.
    await pair.primary.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run`, [], db);
    await pair.waitCaughtUp();
    const again = spawnDaemon(env);
    daemons.push(again);
    expect(await again.exited).toBe(2);
    expect(again.output.join("\n")).toContain(`run: ALTER PUBLICATION "${db}" ADD TABLE "public"."xcom";`);
    await pair.primary.query(`ALTER PUBLICATION ${db} ADD TABLE xcom`, [], db);
    await pair.waitCaughtUp();

    // REPLICA IDENTITY FULL asked for, and not set: no ALTER TABLE on the standby either.
    const full = spawnDaemon({ ...env, EVENTSTREAM_REPLICA_IDENTITY: "full" });
    daemons.push(full);
    expect(await full.exited).toBe(2);
    const fullOut = full.output.join("\n");
    expect(fullOut).toContain("is a standby (in recovery)");
    expect(fullOut).toContain(
      'run: ALTER TABLE "public"."task_instance" REPLICA IDENTITY FULL; ALTER TABLE "public"."dag_run" REPLICA IDENTITY FULL;',
    );
    expect(fullOut).not.toContain("read-only transaction");
  });

  it("streams the primary's transitions under load, and carries on from its own slot when the standby is promoted", async () => {
    const d = spawnDaemon(env);
    daemons.push(d);
    await d.waitForLog(/creating the (replication )?slot on a standby: PostgreSQL waits for .*running-transactions record/);
    // The primary writes a running-transactions record about every 15 s, and only if it wrote WAL
    // since the last one: whether it comes on its own depends on timing. Either it does, or the
    // daemon says it still waits (after 15 s) and pg_log_standby_snapshot() ends the wait.
    const waitStart = Date.now();
    const onItsOwn = await d.waitForLog(/created replication slot/, 17_000).then(
      () => true,
      () => false,
    );
    let slotNote = `created by the primary's own running-transactions record after ${Date.now() - waitStart} ms`;
    if (!onItsOwn) {
      expect(d.output.some((l) => /still creating the replication slot on the standby/.test(l))).toBe(true);
      const [, ms] = await timed(
        (async () => {
          await pair.primary.query("SELECT pg_log_standby_snapshot()");
          await d.waitForLog(/created replication slot/, 30_000);
        })(),
      );
      slotNote = `still waiting after 17 s (the log said so); created ${ms} ms after pg_log_standby_snapshot()`;
    }
    await waitFor(
      "the daemon streaming from its slot on the standby",
      async () => (await pair.standby.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active", [db])).length > 0,
    );

    const dagsA = ["std_a1", "std_a2", "std_a3", "std_a4"];
    const loadA = loadOn(pair.primary, db, dagsA);
    const cpuBefore = await walsenderCpu(pair.standby, db);
    const walBefore = await replayed(pair.standby);
    loadA.start();
    await sleep(10_000);
    await loadA.stop();
    await loadA.commitSentinels();
    await pair.waitCaughtUp();
    await waitFor("the slot on the standby confirming everything the primary wrote", async () => {
      const [r] = await pair.standby.query<{ ok: boolean }>(
        "SELECT confirmed_flush_lsn >= pg_last_wal_replay_lsn() AS ok FROM pg_replication_slots WHERE slot_name = $1",
        [db],
      );
      return r?.ok;
    });
    const cpuMs = (await walsenderCpu(pair.standby, db)) - cpuBefore;
    const walMb = Number((await replayed(pair.standby)) - walBefore) / 1048576;
    const primarySenders = await pair.primary.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM pg_stat_replication WHERE application_name <> 'standby'",
    );

    // The failover: the standby promoted, the old primary gone without a clean shutdown.
    const [, promoteMs] = await timed(pair.standby.promote());
    pair.primary.stop("immediate");
    const dagsB = ["std_b1", "std_b2", "std_b3", "std_b4"];
    const loadB = loadOn(pair.standby, db, dagsB);
    loadB.start();
    // A failover usually drops connections (a proxy or virtual address moving): the daemon's
    // replication connection to the promoted server is cut, and the daemon reconnects by itself.
    await sleep(2_000);
    await pair.standby.query("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1", [db]);
    await d.waitForLog(/replication stream ended; reconnecting|session ended; restarting/, 30_000);
    await sleep(3_000);
    // And a daemon killed and started again, as after a redeployment: same address, same slot.
    d.proc.kill("SIGKILL");
    await d.exited;
    const d2 = spawnDaemon(env);
    daemons.push(d2);
    await sleep(3_000);
    await loadB.stop();
    await loadB.commitSentinels();

    const consumed = await consume([`${db}.events`], untilSentinels([...dagsA, ...dagsB]), {
      timeoutMs: 90_000,
      waitingFor: "the sentinel run of every DAG, before and after the promotion",
    });
    const of = (dags: string[]) => consumed.filter((m: Consumed) => dags.includes(m.event.dag_id ?? ""));
    const before = checkAgainstLedger(of(dagsA), loadA.ledger, { exactlyOnce: false });
    const after = checkAgainstLedger(of(dagsB), loadB.ledger, { exactlyOnce: false });
    const out = [...d.output, ...d2.output].join("\n");
    const reconnects = d.output.filter((l) => /reconnecting|session ended/.test(l));
    console.log(
      `PostgreSQL ${major} standby decoding (seed ${SEED}): slot ${slotNote}; ` +
        `before promotion ${loadA.ledger.count} changes (${loadA.rate.toFixed(0)}/s, ${before.unique} events, ${before.duplicates} duplicates); ` +
        `promotion ${promoteMs} ms; after it ${loadB.ledger.count} changes (${loadB.rate.toFixed(0)}/s, ${after.unique} events, ${after.duplicates} duplicates); ` +
        `decoding on the standby: walsender CPU ${cpuMs} ms for ${walMb.toFixed(1)} MB of WAL; logical walsenders on the primary: ${primarySenders[0]?.n}; ` +
        `daemon session restarts before the SIGKILL: ${reconnects.length}\n${reconnects.map((l) => l.slice(0, 300)).join("\n")}`,
    );
    expect(summary(before.problems)).toEqual([]);
    expect(summary(after.problems)).toEqual([]);
    expect(before.unique).toBe(loadA.ledger.count);
    expect(after.unique).toBe(loadB.ledger.count);
    expect(out).not.toMatch(/SlotGapError|gap in the event stream/);
    expect(primarySenders[0]?.n).toBe("0");
    // The slot survived the promotion: created once, by the first start, never again.
    expect(out.match(/created replication slot/g)).toHaveLength(1);
    expect(d2.output.join("\n")).toMatch(/no gap between the checkpoint and the slot/);
    d2.proc.kill("SIGTERM");
    expect(await d2.exited).toBe(0);
  }, 240_000);
});

/** How far the standby has replayed, in bytes. */
async function replayed(node: PgNode): Promise<bigint> {
  const [r] = await node.query<{ b: string }>("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::text AS b");
  return BigInt(r!.b.split(".")[0]!);
}

/** CPU time (user + system, ms) of the walsender decoding for the slot: the work a standby takes off the primary. */
async function walsenderCpu(node: PgNode, slot: string): Promise<number> {
  const [r] = await node.query<{ pid: number }>("SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1", [slot]);
  const fields = readFileSync(`/proc/${r!.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  // utime and stime are fields 14 and 15 of /proc/<pid>/stat (11 and 12 after "pid (comm) "), in clock ticks of 10 ms.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

describe("a rebuilt standby (PostgreSQL 16)", () => {
  let pair: PgPair;
  const daemons: DaemonProcess[] = [];

  beforeAll(async () => {
    pair = await startPgPair({ major: 16 });
  });

  afterAll(async () => {
    for (const d of daemons) d.proc.kill("SIGKILL");
    await Promise.all(daemons.map((d) => d.exited));
    await pair?.destroy();
  });

  it("has no slot: the gap check stops the daemon, and reset-checkpoint lets it start a new slot there", async () => {
    const db = uniqueName("rebuilt");
    await pair.primary.query(`CREATE DATABASE ${db}`);
    await pair.primary.query(airflowFixture("3").sql, [], db);
    await pair.primary.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run, xcom`, [], db);
    await pair.waitCaughtUp();
    const env = daemonEnv(db, { PGHOST: pair.standby.host, PGPORT: String(pair.standby.port), PGUSER: "postgres", PGPASSWORD: "" });
    const first = spawnDaemon(env);
    daemons.push(first);
    await first.waitForLog(/creating the (replication )?slot on a standby/);
    await pair.primary.query("SELECT pg_log_standby_snapshot()");
    await first.waitForLog(/no gap between the checkpoint and the slot/, 60_000);
    first.proc.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    // A standby rebuilt from the primary (a new base backup) comes without the slot: the same
    // cluster (system identifier) and the daemon's checkpoint, but no slot.
    await pair.standby.query("SELECT pg_drop_replication_slot($1)", [db]);
    const after = spawnDaemon(env);
    daemons.push(after);
    expect(await after.exited).toBe(2);
    const out = after.output.join("\n");
    expect(out).toMatch(/gap in the event stream/);
    expect(out).toContain(`replication slot "${db}" does not exist`);
    expect(out).toContain("reset-checkpoint");
    expect(await pair.standby.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [db])).toHaveLength(0);

    const reset = spawnDaemon(env, ["reset-checkpoint"]);
    daemons.push(reset);
    expect(await reset.exited).toBe(0);
    const again = spawnDaemon(env);
    daemons.push(again);
    await again.waitForLog(/creating the (replication )?slot on a standby/);
    await pair.primary.query("SELECT pg_log_standby_snapshot()");
    await again.waitForLog(/created replication slot/, 30_000);
    again.proc.kill("SIGTERM");
    expect(await again.exited).toBe(0);
  }, 120_000);
});
