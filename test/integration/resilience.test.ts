import { describe, expect, it } from "vitest";
import type pg from "pg";
import { formatLsn } from "../../src/lsn.js";
import {
  confirmedFlush,
  consume,
  createDatabase,
  daemonConfig,
  daemonEnv,
  dropDatabase,
  pgClient,
  sleep,
  spawnDaemon,
  startDaemon,
  type AirflowMajor,
  type DaemonProcess,
  uniqueName,
  waitFor,
  waitForStreaming,
  withPg,
} from "../support/harness.js";
import {
  LoadGenerator,
  brokerReachable,
  checkAgainstLedger,
  endOffsets,
  kafka,
  loadSeed,
  memoryOf,
  parseLsnText,
  positionLsn,
  prng,
  summary,
  untilSentinels,
} from "../support/load.js";

/**
 * The daemon under load while things go wrong: SIGKILL, Kafka down, SIGTERM, and a database whose
 * captured tables are quiet while others are busy. Each test checks what an independent consumer
 * reads against the ledger of what the test committed: every change at least once, each DAG's
 * events in commit order, a re-delivery identical to its original.
 */

const STREAMING = /"msg":"streaming"/;

function dagNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `dag_${String(i).padStart(2, "0")}`);
}

function alive(d: DaemonProcess): boolean {
  return d.proc.exitCode === null && d.proc.signalCode === null;
}

/** Kills whatever daemon processes a test left running (by their own pid). */
function reap(daemons: DaemonProcess[]): void {
  for (const d of daemons) if (alive(d)) d.proc.kill("SIGKILL");
}

interface SlotSample {
  confirmed: bigint;
  /** What the walsender has sent (pg_stat_replication.sent_lsn), null while no walsender is attached. */
  sent: bigint | null;
  current: bigint;
}

async function slotSample(c: pg.Client, slot: string): Promise<SlotSample> {
  const { rows } = await c.query<{ confirmed: string; sent: string | null; current: string }>(
    `SELECT s.confirmed_flush_lsn::text AS confirmed, r.sent_lsn::text AS sent, pg_current_wal_lsn()::text AS current
       FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
      WHERE s.slot_name = $1`,
    [slot],
  );
  const r = rows[0];
  if (!r) throw new Error(`no slot ${slot}`);
  return { confirmed: parseLsnText(r.confirmed), sent: r.sent === null ? null : parseLsnText(r.sent), current: parseLsnText(r.current) };
}

const mb = (bytes: bigint) => (Number(bytes) / 1024 / 1024).toFixed(1);

describe("resilience under load", () => {
  it("SIGKILL while events flow (3 times): every committed change arrives at least once, in order, re-deliveries identical", async () => {
    const major: AirflowMajor = "3";
    const db = uniqueName("kill");
    const dags = dagNames(30);
    const seed = loadSeed();
    const rand = prng(seed ^ 0x5eed);
    await createDatabase(db, major);
    const env = daemonEnv(db);
    const daemons: DaemonProcess[] = [];
    try {
      let d = spawnDaemon(env);
      daemons.push(d);
      await d.waitForLog(STREAMING);
      const gen = new LoadGenerator({
        db,
        major,
        dags,
        workers: 4,
        tasksPerRun: 8,
        activePerWorker: 40,
        maxRowsPerTx: 20,
        multiRowShare: 0.7,
        seed,
      });
      gen.start();
      const kills: string[] = [];
      for (let k = 0; k < 3; k++) {
        // A random moment while the daemon streams and the load runs.
        await sleep(700 + rand() * 2300);
        const at = gen.ledger.count;
        d.proc.kill("SIGKILL");
        await d.exited;
        expect(d.proc.signalCode).toBe("SIGKILL");
        const t = Date.now();
        d = spawnDaemon(env);
        daemons.push(d);
        await d.waitForLog(STREAMING, 30_000);
        kills.push(`after ${at} changes, streaming again in ${Date.now() - t} ms`);
      }
      await sleep(1500);
      await gen.stop();
      await gen.commitSentinels();

      const consumed = await consume([`${db}.events`], untilSentinels(dags), 90_000);
      const result = checkAgainstLedger(consumed, gen.ledger, { exactlyOnce: false });
      const unknownPrev = consumed.filter((m) => m.event.op === "update" && !m.event.previous_state_known).length;
      console.log(
        `SIGKILL (seed ${seed}): ${gen.ledger.count} changes in ${gen.ledger.transactions} transactions at ${gen.rate.toFixed(0)}/s; kills: ${kills.join("; ")}; ` +
          `read ${result.consumed} events: ${result.unique} distinct, ${result.duplicates} re-delivered, ${unknownPrev} updates with previous_state_known=false`,
      );
      expect(summary(result.problems)).toEqual([]);
      expect(result.unique).toBe(gen.ledger.count);
      // The restarts happened under load, and each start read back what Kafka held: nothing it held
      // was published again, and every row it named kept its state (see docs/delivery.md, "Restarts").
      expect(result.duplicates).toBe(0);
      expect(unknownPrev).toBe(0);

      d.proc.kill("SIGTERM");
      expect(await d.exited).toBe(0);
    } finally {
      reap(daemons);
      await dropDatabase(db);
    }
  });

  // Also without gap detection: with it, PostgreSQL is told nothing a durable checkpoint does not
  // cover, which would hide a tracker that acknowledges events Kafka does not have.
  it.each([
    ["with gap detection", "true"],
    ["without gap detection", "false"],
  ])(
    "Kafka down for a while under load (%s): bounded memory, the slot stays put, the process keeps retrying; everything arrives once Kafka is back",
    async (_, gapDetection) => {
      const major: AirflowMajor = "2";
      const db = uniqueName("outage");
      const topic = `${db}.events`;
      const dags = dagNames(20);
      const seed = loadSeed();
      const capEvents = 2000;
      await createDatabase(db, major);
      const env = daemonEnv(db, {
        EVENTSTREAM_MAX_INFLIGHT_EVENTS: String(capEvents),
        EVENTSTREAM_MAX_INFLIGHT_BYTES: "2000000",
        EVENTSTREAM_GAP_DETECTION: gapDetection,
      });
      const d = spawnDaemon(env);
      const pid = d.proc.pid!;
      const monitor = pgClient("postgres");
      await monitor.connect();
      // RSS of the daemon every 200 ms, by phase.
      const peak = { load: 0, outage: 0, catchUp: 0 };
      let phase: keyof typeof peak = "load";
      const sampler = setInterval(() => {
        const m = memoryOf(pid);
        if (m) peak[phase] = Math.max(peak[phase], m.rssMb);
      }, 200);
      let kafkaStopped = false;
      try {
        await d.waitForLog(STREAMING);
        const gen = new LoadGenerator({
          db,
          major,
          dags,
          workers: 4,
          tasksPerRun: 10,
          activePerWorker: 60,
          maxRowsPerTx: 30,
          multiRowShare: 0.8,
          txDelayMs: 4,
          seed,
        });
        gen.start();
        await sleep(3000);
        const atStop = gen.ledger.count;

        kafkaStopped = true;
        const tStop = Date.now();
        await kafka("kafka-stop");
        const stopTookMs = Date.now() - tStop;
        // What was in flight when Kafka went away is settled (acknowledged or not) by now.
        await sleep(3000);
        const rssSettled = memoryOf(pid)!.rssMb;
        phase = "outage";
        const settled = await slotSample(monitor, db);
        const confirmedDuring = new Set<bigint>();
        // At least 12 s more, and until more WAL than the socket buffers hold was written (below).
        const outageMin = Date.now() + 12_000;
        // Up to 45 s: a loaded machine writes the WAL more slowly.
        const outageMax = Date.now() + 45_000;
        let last = settled;
        let maxSent: bigint | null = null;
        // Seconds since kafka-stop, RSS MiB, WAL MiB written / sent since the outage settled.
        const timeline: string[] = [];
        while (Date.now() < outageMax && (Date.now() < outageMin || last.current - settled.current < 64n * 1024n * 1024n)) {
          await sleep(500);
          expect(alive(d), "the daemon exited while Kafka was down").toBe(true);
          // The services are shared: another `services.sh up` / `kafka-start` would end the outage early.
          expect(await brokerReachable(), "Kafka was started again during the outage, by something other than this test").toBe(false);
          last = await slotSample(monitor, db);
          // The most the walsender sent: none is attached while the daemon is between sessions (its
          // produce retries run out during a long outage and the session restarts).
          if (last.sent !== null) maxSent = last.sent > (maxSent ?? 0n) ? last.sent : maxSent;
          confirmedDuring.add(last.confirmed);
          const sentSoFar = last.sent !== null && settled.sent !== null ? mb(last.sent - settled.sent) : "?";
          timeline.push(
            `${((Date.now() - tStop) / 1000).toFixed(1)}s rss ${memoryOf(pid)?.rssMb.toFixed(0)} wal ${mb(last.current - settled.current)} sent ${sentSoFar}`,
          );
        }
        const duringOutage = gen.ledger.count - atStop;
        const outageMs = Date.now() - tStop;
        await gen.stop();
        await gen.commitSentinels();

        // Freeze the daemon while Kafka comes back, to see what Kafka held during the outage.
        d.proc.kill("SIGSTOP");
        let frozen: Map<number, bigint>;
        const tStart = Date.now();
        try {
          await kafka("kafka-start");
          kafkaStopped = false;
          // Right after a restart the partitions may have no leader yet.
          frozen = await waitFor("the topic's end offsets", () => endOffsets(topic), 30_000, 500);
        } finally {
          d.proc.kill("SIGCONT");
        }
        const startTookMs = Date.now() - tStart;
        phase = "catchUp";
        expect(alive(d)).toBe(true);

        const tRecover = Date.now();
        const consumed = await consume([topic], untilSentinels(dags), 150_000);
        const recoverMs = Date.now() - tRecover;
        const result = checkAgainstLedger(consumed, gen.ledger, { exactlyOnce: false });
        const hwmMb = memoryOf(pid)?.hwmMb ?? NaN;
        const restarts = d.output.filter((l) => l.includes("session ended")).length;
        const walWritten = last.current - settled.current;
        const walSent = maxSent !== null && settled.sent !== null ? maxSent - settled.sent : null;
        console.log(
          `Kafka outage (seed ${seed}): ${gen.ledger.count} changes at ${gen.rate.toFixed(0)}/s, ${duringOutage} committed while Kafka was down (cap ${capEvents}); ` +
            `Kafka down ${outageMs} ms (kafka-stop took ${stopTookMs} ms), kafka-start ${startTookMs} ms, everything read ${recoverMs} ms after Kafka was back; ` +
            `RSS peak under load ${peak.load.toFixed(1)} MiB, when the outage settled ${rssSettled.toFixed(1)} MiB, peak during the outage ${peak.outage.toFixed(1)} MiB, ` +
            `peak catching up ${peak.catchUp.toFixed(1)} MiB, VmHWM ${hwmMb.toFixed(1)} MiB; ` +
            `WAL written during the outage ${mb(walWritten)} MiB, sent to the daemon ${walSent === null ? "?" : mb(walSent)} MiB; ` +
            `slot confirmed ${[...confirmedDuring].map(formatLsn).join(", ")} during the outage; ${result.duplicates} re-delivered; ${restarts} session restarts`,
        );
        const warnings = d.output.filter((l) => /"level":(40|50|60)/.test(l));
        console.log(`outage timeline: ${timeline.filter((_, i) => i % 4 === 0 || i === timeline.length - 1).join(" | ")}`);
        console.log(
          `daemon warnings/errors: ${warnings.length}; last: ${warnings
            .slice(-3)
            .map((l) => l.slice(0, 300))
            .join("\n  ")}`,
        );

        // Never exited: it kept retrying.
        expect(alive(d)).toBe(true);
        // The slot did not move while Kafka was down.
        expect([...confirmedDuring]).toEqual([settled.confirmed]);
        // ... and it had not got ahead of Kafka: every event before it was already in Kafka.
        const beforeConfirmed = consumed.filter((m) => positionLsn(m.event.source.position) < settled.confirmed);
        expect(beforeConfirmed.length).toBeGreaterThan(0);
        const inKafkaThen = new Set(
          consumed.filter((m) => BigInt(m.offset) < (frozen.get(m.partition) ?? 0n)).map((m) => m.event.source.position),
        );
        const missingThen = beforeConfirmed.filter((m) => !inKafkaThen.has(m.event.source.position)).map((m) => m.event.source.position);
        expect(missingThen).toEqual([]);
        // The load outran the caps many times over while Kafka was down, and wrote more WAL than the
        // socket buffers between PostgreSQL and the daemon hold (here tcp_rmem max 32 MiB + tcp_wmem
        // max 4 MiB) ...
        expect(duringOutage).toBeGreaterThan(10 * capEvents);
        expect(walWritten).toBeGreaterThan(48n * 1024n * 1024n);
        // ... yet the walsender could send no more than those buffers: the daemon stopped reading.
        expect(walSent).not.toBeNull();
        expect(walSent!).toBeLessThan(40n * 1024n * 1024n);
        // Bounded memory. Node + kafkajs + pg under this load sit at ~100-170 MiB (most of it
        // garbage not yet collected); the caps allow 2000 events / 2 MB of JSON in flight. Reading on
        // regardless would hold every event of the outage (~1.5 KB each, tens of thousands).
        expect(peak.outage).toBeLessThan(200);
        expect(peak.outage - rssSettled).toBeLessThan(50);
        // Nothing lost, each DAG in commit order.
        expect(summary(result.problems)).toEqual([]);
        expect(result.unique).toBe(gen.ledger.count);

        d.proc.kill("SIGTERM");
        expect(await d.exited).toBe(0);
      } finally {
        clearInterval(sampler);
        if (kafkaStopped) await kafka("kafka-start");
        if (alive(d)) {
          d.proc.kill("SIGCONT");
          d.proc.kill("SIGKILL");
        }
        await monitor.end();
        await dropDatabase(db);
      }
      // Kafka down up to ~51 s, restarted, then the backlog: bounded, but above the default 120 s.
      // 207 s in a CI run on a busy machine (Kafka's stop 19 s and start 48 s of it): room to 420 s.
    },
    420_000,
  );

  it("captured tables quiet while other tables take writes: the slot's confirmed position follows the WAL", async () => {
    const db = uniqueName("quiet");
    await createDatabase(db, "2");
    const daemon = startDaemon(daemonConfig(db));
    try {
      await waitForStreaming(db);
      const start = await confirmedFlush(db, db);
      let lastLsn = 0n;
      let transactions = 0;
      await withPg(db, async (c) => {
        await c.query("CREATE TABLE other (id bigserial PRIMARY KEY, payload text NOT NULL)");
        const until = Date.now() + 5_000;
        while (Date.now() < until) {
          await c.query("INSERT INTO other (payload) SELECT repeat('x', 200) FROM generate_series(1, 100)");
          transactions++;
          await sleep(20);
        }
        const { rows } = await c.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
        lastLsn = parseLsnText(rows[0]!.lsn);
      });
      const midway = await confirmedFlush(db, db);
      const t0 = Date.now();
      const reached = await waitFor(
        `confirmed_flush_lsn to reach ${formatLsn(lastLsn)}`,
        async () => {
          const f = await confirmedFlush(db, db);
          return f !== null && f >= lastLsn ? f : null;
        },
        15_000,
        100,
      );
      console.log(
        `quiet captured tables: ${transactions} transactions on another table; slot confirmed ${formatLsn(start ?? 0n)} before, ${formatLsn(midway ?? 0n)} right after the writes, ` +
          `${formatLsn(reached)} (>= ${formatLsn(lastLsn)}, the WAL end after the last write) ${Date.now() - t0} ms later`,
      );
      expect(reached).toBeGreaterThanOrEqual(lastLsn);
      // Nothing of that is an Airflow event.
      const offsets = await endOffsets(`${db}.events`);
      expect([...offsets.values()].reduce((a, b) => a + b, 0n)).toBe(0n);
    } finally {
      await daemon.stop();
      await dropDatabase(db);
    }
  });

  it("SIGTERM while events flow: exits 0 within the shutdown timeout; the restarted daemon delivers the rest", async () => {
    const major: AirflowMajor = "2";
    const db = uniqueName("term");
    const dags = dagNames(20);
    const seed = loadSeed();
    const rand = prng(seed ^ 0x7e57);
    const shutdownTimeoutMs = 10_000;
    await createDatabase(db, major);
    const env = daemonEnv(db, { EVENTSTREAM_SHUTDOWN_TIMEOUT_SECONDS: String(shutdownTimeoutMs / 1000) });
    const daemons: DaemonProcess[] = [];
    try {
      const d1 = spawnDaemon(env);
      daemons.push(d1);
      await d1.waitForLog(STREAMING);
      const gen = new LoadGenerator({
        db,
        major,
        dags,
        workers: 4,
        tasksPerRun: 6,
        activePerWorker: 24,
        maxRowsPerTx: 8,
        txDelayMs: 2,
        seed,
      });
      gen.start();
      await sleep(1500 + rand() * 1500);
      const atTerm = gen.ledger.count;
      const t = Date.now();
      d1.proc.kill("SIGTERM");
      const code = await d1.exited;
      const stopMs = Date.now() - t;
      expect(code).toBe(0);
      expect(stopMs).toBeLessThan(shutdownTimeoutMs);
      await d1.waitForLog(/"msg":"stopped"/, 1_000);
      const confirmedAtExit = await confirmedFlush(db, db);

      // The load goes on while no daemon runs; then a new one catches up.
      await sleep(1000);
      const d2 = spawnDaemon(env);
      daemons.push(d2);
      await d2.waitForLog(STREAMING, 30_000);
      await sleep(2000);
      await gen.stop();
      await gen.commitSentinels();

      const consumed = await consume([`${db}.events`], untilSentinels(dags), 90_000);
      const result = checkAgainstLedger(consumed, gen.ledger, { exactlyOnce: false });
      console.log(
        `SIGTERM (seed ${seed}): after ${atTerm} changes; exited 0 in ${stopMs} ms, slot confirmed ${formatLsn(confirmedAtExit ?? 0n)}; ` +
          `${gen.ledger.count} changes in total; read ${result.consumed}: ${result.unique} distinct, ${result.duplicates} re-delivered from ${result.duplicateXids.size} transaction(s)`,
      );
      expect(summary(result.problems)).toEqual([]);
      expect(result.unique).toBe(gen.ledger.count);
      // A graceful stop acknowledges everything Kafka has: at most the transaction it was in the
      // middle of reading comes again.
      expect(result.duplicateXids.size).toBeLessThanOrEqual(1);

      d2.proc.kill("SIGTERM");
      expect(await d2.exited).toBe(0);
    } finally {
      reap(daemons);
      await dropDatabase(db);
    }
  });
});
