import { afterEach, describe, expect, it, vi } from "vitest";
import { pino } from "pino";
import { loadConfig } from "../../../src/config.js";
import type { Logger } from "../../../src/log.js";
import { explainStandbySlotWait, onPrimaryOnly } from "../../../src/source/standby-setup.js";

const cfg = loadConfig({ PGHOST: "replica.example", PGPORT: "5433", PGDATABASE: "airflow", KAFKA_BROKERS: "127.0.0.1:9092" });

function capture(): { log: Logger; lines: { msg: string; waitedSeconds?: number }[] } {
  const lines: { msg: string; waitedSeconds?: number }[] = [];
  const log = pino({ level: "info" }, { write: (l: string) => lines.push(JSON.parse(l) as { msg: string }) });
  return { log, lines };
}

describe("decoding from a standby: what the setup says", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("names the server, that it is a standby, and the SQL to run on the primary", () => {
    const m = onPrimaryOnly(cfg, 'publication "p" does not exist', 'CREATE PUBLICATION "p" FOR TABLE "public"."dag_run";');
    expect(m).toContain('publication "p" does not exist, and replica.example:5433 is a standby (in recovery)');
    expect(m).toContain(`On the primary, as the owner of Airflow's tables, run: CREATE PUBLICATION "p" FOR TABLE "public"."dag_run";`);
  });

  it("says why a slot creation on a standby waits, at once and every 15 s until it is done", () => {
    vi.useFakeTimers();
    const { log, lines } = capture();
    const stop = explainStandbySlotWait(cfg, log);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.msg).toMatch(/waits for a running-transactions record from the primary/);
    expect(lines[0]!.msg).toContain("pg_log_standby_snapshot()");
    vi.advanceTimersByTime(14_999);
    expect(lines).toHaveLength(1);
    vi.advanceTimersByTime(1);
    vi.advanceTimersByTime(15_000);
    expect(lines.slice(1).map((l) => [l.msg.startsWith("still creating the replication slot on the standby"), l.waitedSeconds])).toEqual([
      [true, 15],
      [true, 30],
    ]);
    stop();
    vi.advanceTimersByTime(60_000);
    expect(lines).toHaveLength(3);
  });
});
