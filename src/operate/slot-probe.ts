import type pg from "pg";
import { z } from "zod";
import type { Config } from "../config.js";
import { connectSource } from "../source/connection.js";
import { describeError } from "../errors.js";
import type { Logger } from "../log.js";
import type { Metrics } from "./metrics.js";

/** A probe that takes longer than this is abandoned: a slow server must not pile up queries. */
const STATEMENT_TIMEOUT_MS = 2_000;

const SlotRow = z.object({
  lag: z.coerce.number().nullable(),
  retained: z.coerce.number().nullable(),
  active: z.boolean(),
});

/**
 * Reads the slot's lag and retained WAL on its own connection, on a timer, into `metrics`. A scrape
 * only reads what the last probe found, so it never waits on PostgreSQL, and the replication
 * connection never carries a query. Probes do not overlap: the next is scheduled when one ends.
 */
export class SlotProbe {
  private client: pg.Client | null = null;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private warned = false;

  constructor(
    private readonly cfg: Config,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer = setTimeout(() => void this.tick(), 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.drop();
  }

  private async tick(): Promise<void> {
    try {
      this.metrics.probed(await this.probe());
      this.warned = false;
    } catch (e: unknown) {
      const err = describeError(e);
      this.metrics.probed(null, err);
      if (!this.warned) this.log.warn({ err, slot: this.cfg.slot }, "could not read the slot's lag; retrying");
      this.warned = true;
      await this.drop();
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.intervalMs);
  }

  private async probe(): Promise<{ lagBytes: number; retainedBytes: number; active: boolean } | null> {
    const client = await this.connected();
    const res = await client.query(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) AS lag,
              pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) AS retained, active
         FROM pg_replication_slots WHERE slot_name = $1`,
      [this.cfg.slot],
    );
    if (res.rows.length === 0) return null;
    const row = SlotRow.parse(res.rows[0]);
    return { lagBytes: row.lag ?? 0, retainedBytes: row.retained ?? 0, active: row.active };
  }

  private async connected(): Promise<pg.Client> {
    if (this.client !== null) return this.client;
    // An error after connecting (the server went away) surfaces on the next query.
    const { client } = await connectSource(this.cfg, {
      replication: false,
      applicationName: "airflow-eventstream-metrics",
      extra: () => ({
        statement_timeout: STATEMENT_TIMEOUT_MS,
        query_timeout: STATEMENT_TIMEOUT_MS + 1_000,
        connectionTimeoutMillis: STATEMENT_TIMEOUT_MS * 2,
      }),
    });
    this.client = client;
    const v = await client.query("SHOW server_version");
    this.metrics.postgres = String(v.rows[0]?.server_version ?? "unknown").split(" ")[0]!;
    return client;
  }

  private async drop(): Promise<void> {
    const c = this.client;
    this.client = null;
    await c?.end().catch(() => undefined);
  }
}
