import pg from "pg";
import type { Config } from "../config.js";
import { parseLsn } from "../lsn.js";
import { connectOrExplain, pgClientConfig } from "../source/connection.js";
import { readServerKind, wantFailover } from "../source/failover-slot.js";
import type { PgHost } from "../source/target.js";
import { bytes } from "./source-facts.js";
import { finding, type Finding } from "./report.js";

/**
 * `check` on PostgreSQL 17+: can a standby take over the slot? The slot's failover flag, the
 * primary's synchronized_standby_slots and the physical slots it names, and each standby of the
 * PGHOST list with its copy of the slot (docs/failover.md).
 */
export async function failoverFindings(cfg: Config, primary: pg.Client): Promise<Finding[]> {
  const server = await readServerKind(primary);
  if (server.versionNum < 170000 || server.inRecovery) return [];
  const { rows } = await primary.query<{ failover: string | null; lsn: string | null }>(
    "SELECT to_jsonb(s) ->> 'failover' AS failover, confirmed_flush_lsn::text AS lsn FROM pg_replication_slots s WHERE slot_name = $1",
    [cfg.slot],
  );
  const slot = rows[0] ?? null;
  const failover = slot === null ? null : slot.failover === "true";
  const out: Finding[] = [await finding("failover slot", async () => flagText(cfg, server, failover))];
  const on = failover ?? wantFailover(cfg, server);
  out.push(await finding("synchronized_standby_slots", () => standbySlotsText(primary, on)));
  const used = `${primary.host}:${primary.port}`;
  for (const host of cfg.pg.hosts.filter((h) => `${h.host}:${h.port}` !== used)) {
    out.push(await finding(`standby ${host.host}:${host.port}`, () => standbyCopyText(cfg, host, slot?.lsn ?? null)));
  }
  return out;
}

async function flagText(cfg: Config, server: { versionNum: number; inRecovery: boolean }, failover: boolean | null) {
  const want = wantFailover(cfg, server);
  if (failover === null) return `slot "${cfg.slot}" does not exist yet: a start creates it with failover ${want ? "on" : "off"}`;
  if (failover === want)
    return failover
      ? `slot "${cfg.slot}" has failover set: standbys with sync_replication_slots=on keep a copy`
      : "off (EVENTSTREAM_FAILOVER_SLOT=false)";
  return {
    warning: `slot "${cfg.slot}" has failover=${failover}; the next start changes it to ${want} (EVENTSTREAM_FAILOVER_SLOT=${cfg.failoverSlot})`,
  };
}

/**
 * The physical slots logical decoding waits for. Without any, the daemon can publish a transaction
 * a standby has not received yet.
 */
async function standbySlotsText(primary: pg.Client, failover: boolean): Promise<string | { warning: string }> {
  const { rows } = await primary.query<{ v: string | null }>("SELECT current_setting('synchronized_standby_slots', true) AS v");
  const names = (rows[0]?.v ?? "")
    .split(",")
    .map((n) => n.trim().replace(/^"(.*)"$/, "$1"))
    .filter((n) => n !== "");
  if (names.length === 0) {
    if (!failover) return "empty (the slot has no failover flag)";
    return {
      warning:
        "empty: the daemon may publish transactions a standby has not received yet. Promoted, that standby lacks them (Airflow lost those writes in the failover) or its copy of the slot is behind, so consumers see events again (duplicates) or saw events of writes the new primary never had. Set synchronized_standby_slots on the primary to the physical slots of the standbys that sync the slot (docs/failover.md)",
    };
  }
  const states: string[] = [];
  let missing = false;
  let inactive = false;
  for (const name of names) {
    const s = await primary.query<{ slot_type: string; active: boolean }>(
      "SELECT slot_type, active FROM pg_replication_slots WHERE slot_name = $1",
      [name],
    );
    const row = s.rows[0];
    if (!row || row.slot_type !== "physical") {
      missing = true;
      states.push(`${name}: no such physical slot`);
    } else {
      inactive ||= !row.active;
      states.push(`${name}: ${row.active ? "active" : "not active (its standby is not connected)"}`);
    }
  }
  const text = states.join("; ");
  if (missing) {
    throw new Error(
      `${text}. Logical decoding waits for every slot named there: create the missing ones (SELECT pg_create_physical_replication_slot('name')) and point each standby's primary_slot_name at its own, or take them out of synchronized_standby_slots`,
    );
  }
  if (inactive)
    return { warning: `${text}. The daemon receives nothing newer than what those standbys confirmed: events stop while one is down` };
  return text;
}

/** One standby of the host list: its copy of the slot, and how far it is behind the primary's. */
async function standbyCopyText(cfg: Config, host: PgHost, primaryLsn: string | null): Promise<string | { warning: string }> {
  const client = new pg.Client(pgClientConfig(cfg.pg, { replication: false, applicationName: "airflow-eventstream-check" }, host));
  client.on("error", () => undefined);
  await connectOrExplain(client, cfg);
  try {
    const server = await readServerKind(client);
    if (!server.inRecovery) return { warning: "is a primary too, not a standby: check that only one of the PGHOST hosts accepts writes" };
    const { rows } = await client.query<{ synced: string | null; temporary: boolean; lsn: string | null }>(
      "SELECT to_jsonb(s) ->> 'synced' AS synced, temporary, confirmed_flush_lsn::text AS lsn FROM pg_replication_slots s WHERE slot_name = $1",
      [cfg.slot],
    );
    const copy = rows[0];
    if (!copy)
      return {
        warning: `has no copy of slot "${cfg.slot}": promoted, it would leave a gap. Set sync_replication_slots=on there (docs/failover.md)`,
      };
    if (copy.synced !== "true" || copy.temporary) {
      return {
        warning: `its copy of slot "${cfg.slot}" is ${copy.synced !== "true" ? "not synced from the primary" : "temporary (not yet synchronised: the primary's slot must move past the standby's position first)"}: promoted, it would leave a gap`,
      };
    }
    const behind = primaryLsn !== null && copy.lsn !== null ? parseLsn(primaryLsn) - parseLsn(copy.lsn) : null;
    return `its copy of slot "${cfg.slot}" is synced, at ${copy.lsn ?? "?"}, ${behind === null ? "an unknown distance" : bytes(behind < 0n ? 0n : behind)} behind the primary's confirmed position`;
  } finally {
    await client.end().catch(() => undefined);
  }
}
