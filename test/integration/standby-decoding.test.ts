import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { airflowFixture, consume, daemonEnv, spawnDaemon, uniqueName, waitFor, type Consumed, type DaemonProcess } from "../support/harness.js";
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
  });

  it("streams the primary's transitions under load, and carries on from its own slot when the standby is promoted", async () => {
    const d = spawnDaemon(env);
    daemons.push(d);
    await d.waitForLog(/creating the replication slot on a standby: PostgreSQL waits for a running-transactions record/);
    if (major === 16) {
      // An idle primary logs no running-transactions record: the daemon says it still waits, and why.
      await d.waitForLog(/still creating the replication slot on the standby/, 25_000);
    }
    const [, slotMs] = await timed(
      (async () => {
        await pair.primary.query("SELECT pg_log_standby_snapshot()");
        await d.waitForLog(/created replication slot/, 30_000);
      })(),
    );
    await waitFor(
      "the daemon streaming from its slot on the standby",
      async () => (await pair.standby.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active", [db])).length > 0,
    );

    const dagsA = ["std_a1", "std_a2", "std_a3", "std_a4"];
    const loadA = loadOn(pair.primary, db, dagsA);
    loadA.start();
    await new Promise((r) => setTimeout(r, 10_000));
    await loadA.stop();
    await loadA.commitSentinels();
    await pair.waitCaughtUp();
    const standbyWal = await walWritten(pair.standby);

    // The failover: the standby promoted, the old primary gone without a clean shutdown.
    const [, promoteMs] = await timed(pair.standby.promote());
    pair.primary.stop("immediate");
    const dagsB = ["std_b1", "std_b2", "std_b3", "std_b4"];
    const loadB = loadOn(pair.standby, db, dagsB);
    loadB.start();
    await new Promise((r) => setTimeout(r, 8_000));
    await loadB.stop();
    await loadB.commitSentinels();

    const consumed = await consume([`${db}.events`], untilSentinels([...dagsA, ...dagsB]), {
      timeoutMs: 90_000,
      waitingFor: "the sentinel run of every DAG, before and after the promotion",
    });
    const of = (dags: string[]) => consumed.filter((m: Consumed) => dags.includes(m.event.dag_id));
    const before = checkAgainstLedger(of(dagsA), loadA.ledger, { exactlyOnce: false });
    const after = checkAgainstLedger(of(dagsB), loadB.ledger, { exactlyOnce: false });
    const out = d.output.join("\n");
    const reconnects = d.output.filter((l) => /reconnecting|session ended/.test(l));
    console.log(
      `PostgreSQL ${major} standby decoding (seed ${SEED}): slot created ${slotMs} ms after pg_log_standby_snapshot(); ` +
        `before promotion ${loadA.ledger.count} changes (${loadA.rate.toFixed(0)}/s, ${before.unique} events, ${before.duplicates} duplicates); ` +
        `promotion ${promoteMs} ms; after it ${loadB.ledger.count} changes (${loadB.rate.toFixed(0)}/s, ${after.unique} events, ${after.duplicates} duplicates); ` +
        `standby WAL replayed ${standbyWal}; daemon session restarts: ${reconnects.length}\n${reconnects.join("\n")}`,
    );
    expect(summary(before.problems)).toEqual([]);
    expect(summary(after.problems)).toEqual([]);
    expect(before.unique).toBe(loadA.ledger.count);
    expect(after.unique).toBe(loadB.ledger.count);
    expect(out).not.toMatch(/SlotGapError|gap in the event stream/);
    // The slot survived the promotion: created once, by the first start, never again.
    expect(d.output.filter((l) => /created replication slot/.test(l))).toHaveLength(1);
    expect(d.proc.exitCode).toBeNull();
  }, 240_000);
});

async function walWritten(node: PgNode): Promise<string> {
  const [r] = await node.query<{ lsn: string }>("SELECT pg_last_wal_replay_lsn()::text AS lsn");
  return r?.lsn ?? "?";
}
