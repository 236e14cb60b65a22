import type pg from "pg";
import type { Config } from "../config.js";
import {
  PrivilegeError,
  PublicationDroppedError,
  PublicationError,
  SchemaError,
  UserActionError,
  WalLevelError,
  causeChain,
  coerceError,
  sqlState,
} from "../errors.js";
import type { Logger } from "../log.js";
import { withSourceClient } from "./connection.js";
import { alignFailoverFlag, readServerKind } from "./failover-slot.js";
import { readSlot, serverWal, slotBusy, slotState, type SourceReady } from "./slot.js";
import { checkSnapshotPrivileges } from "../snapshot/privileges.js";
import { ident, literal } from "./sql.js";
import { ensureReplicaIdentity, FULL_IDENTITY_TABLES } from "./replica-identity.js";
import { checkStandby } from "./standby.js";
import { setupMode, onPrimaryOnly, type SetupMode } from "./standby-setup.js";

export { ensureReplicaIdentity, FULL_IDENTITY_TABLES };

/** Airflow tables the daemon captures: xcom only when notifications are on; the asset tables when found (detectAssetTables). */
export function capturedTables(cfg: Config, assets: readonly string[] = []): string[] {
  return [...(cfg.xcomKey === null ? ["task_instance", "dag_run"] : ["task_instance", "dag_run", "xcom"]), ...assets];
}

/** Why an asset table is captured, for messages that ask an operator to change a grant or the publication. */
const ASSET_HINT =
  " (the asset tables are captured because EVENTSTREAM_ASSET_EVENTS=true; to run without asset events instead, set EVENTSTREAM_ASSET_EVENTS=false)";
const isAssetTable = (t: string): boolean => /(^|")(asset|dataset)(_event)?("|$)/.test(t);

/**
 * With EVENTSTREAM_ASSET_EVENTS, the asset tables of the Airflow major found in the schema: 3.x
 * asset_event and asset, 2.x dataset_event and dataset ([] when off). Airflow before 2.4 has
 * neither: then asset events cannot exist, which is an error rather than a silent no-op, since the
 * operator asked for them.
 */
export async function detectAssetTables(client: pg.Client, cfg: Config): Promise<string[]> {
  if (cfg.assetTopic === null) return [];
  const { rows } = await client.query<{ v3: boolean; v2: boolean }>(
    "SELECT to_regclass($1) IS NOT NULL AS v3, to_regclass($2) IS NOT NULL AS v2",
    [`${ident(cfg.airflowSchema)}.asset_event`, `${ident(cfg.airflowSchema)}.dataset_event`],
  );
  if (rows[0]?.v3) return ["asset_event", "asset"];
  if (rows[0]?.v2) return ["dataset_event", "dataset"];
  throw new SchemaError(
    `EVENTSTREAM_ASSET_EVENTS is true but schema "${cfg.airflowSchema}" has neither asset_event (Airflow 3.x) nor dataset_event (Airflow 2.4+): this Airflow records no asset events. Set EVENTSTREAM_ASSET_EVENTS=false`,
  );
}

/**
 * Checks the server before streaming and brings the publication into being where the
 * configuration allows. Each failure names what to change, with the SQL to run. The slot is only
 * inspected: creating it before the checkpoint is read would hide that it had been dropped
 * (src/checkpoint/gap.ts).
 */
export async function prepareSource(cfg: Config, log: Logger): Promise<SourceReady> {
  return withSourceClient(cfg, async (client) => {
    await checkWalLevel(client);
    await checkStandby(client, log);
    await checkRole(client, cfg);
    const tables = await checkTables(client, cfg);
    await checkSnapshotPrivileges(client, cfg);
    // A standby (read-only) only checks: what is missing is created on the primary (src/source/standby-setup.ts).
    const mode = await setupMode(client, cfg, log);
    await ensurePublication(client, cfg, tables, log, mode);
    // Before the slot: a slot created now decodes every change with the old rows.
    await ensureReplicaIdentity(client, cfg, log, mode);
    const row = await readSlot(client, cfg);
    if (row && row.active_pid !== null) throw slotBusy(cfg, row.active_pid);
    // An invalidated slot cannot be altered, and cannot stream again either: the gap check reports it.
    if (row && row.wal_status !== "lost" && row.invalidation_reason === null)
      await alignFailoverFlag(cfg, log, await readServerKind(client), row.failover === null ? null : row.failover === "true");
    if (row?.wal_status === "unreserved") {
      log.warn(
        { slot: cfg.slot, confirmedFlushLsn: row.confirmed_flush_lsn },
        "the slot is more than max_slot_wal_keep_size behind: PostgreSQL invalidates it at its next checkpoint unless the daemon catches up first (then the daemon stops, reporting a gap)",
      );
    }
    return { slot: row && slotState(row), ...(await serverWal(client)) };
  });
}

/** The start-time checks are exported for `airflow-eventstream check` (src/operate/check.ts): one implementation. */
export async function checkWalLevel(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ wal_level: string }>("SHOW wal_level");
  const level = rows[0]?.wal_level;
  if (level !== "logical") {
    throw new WalLevelError(
      `wal_level is "${level}", logical replication needs "logical". As a superuser run: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (on managed services set the parameter, e.g. rds.logical_replication = 1 or cloudsql.logical_decoding = on)`,
    );
  }
}

export async function checkRole(client: pg.Client, cfg: Config): Promise<void> {
  const { rows } = await client.query<{ rolsuper: boolean; rolreplication: boolean }>(
    "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user",
  );
  const role = rows[0];
  if (!role || (!role.rolsuper && !role.rolreplication)) {
    throw new PrivilegeError(
      `role "${cfg.pg.user}" lacks the REPLICATION attribute needed to stream changes. As a superuser run: ALTER ROLE ${ident(cfg.pg.user)} WITH REPLICATION;`,
    );
  }
}

export async function checkTables(client: pg.Client, cfg: Config): Promise<string[]> {
  const tables = capturedTables(cfg, await detectAssetTables(client, cfg));
  const qualified = tables.map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`);
  const { rows } = await client.query<{ name: string; present: boolean; can_select: boolean | null }>(
    `SELECT t.name,
            to_regclass(t.qualified) IS NOT NULL AS present,
            CASE WHEN to_regclass(t.qualified) IS NULL THEN NULL
                 ELSE has_table_privilege(to_regclass(t.qualified), 'SELECT') END AS can_select
       FROM unnest($1::text[], $2::text[]) AS t(name, qualified)`,
    [tables, qualified],
  );
  const missing = rows.filter((r) => !r.present).map((r) => r.name);
  if (missing.length > 0) {
    throw new SchemaError(
      `Airflow table(s) ${missing.join(", ")} not found in schema "${cfg.airflowSchema}" of database "${cfg.pg.database}": point PGDATABASE at Airflow's metadata database (migrated with \`airflow db migrate\`), or set EVENTSTREAM_AIRFLOW_SCHEMA to the schema that holds them`,
    );
  }
  const denied = rows.filter((r) => r.can_select === false).map((r) => r.name);
  if (denied.length > 0) {
    throw new PrivilegeError(
      `role "${cfg.pg.user}" cannot read ${denied.join(", ")}. As the tables' owner run: GRANT SELECT ON ${denied.map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`).join(", ")} TO ${ident(cfg.pg.user)};${denied.some(isAssetTable) ? ASSET_HINT : ""}`,
    );
  }
  return qualified;
}

/**
 * "apply" (a start): creates or completes the publication where allowed. "inspect" (`check`):
 * changes nothing, and returns what a start would do (null: nothing to do). "standby" (a start on
 * a server in recovery): changes nothing, and what is missing is an error with the primary's SQL.
 */
export async function ensurePublication(
  client: pg.Client,
  cfg: Config,
  qualified: string[],
  log: Logger,
  mode: SetupMode,
): Promise<string | null> {
  const pub = await client.query<{
    pubinsert: boolean;
    pubupdate: boolean;
    pubdelete: boolean;
    pubtruncate: boolean;
    puballtables: boolean;
  }>("SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables FROM pg_publication WHERE pubname = $1", [cfg.publication]);
  const createSql = `CREATE PUBLICATION ${ident(cfg.publication)} FOR TABLE ${qualified.join(", ")};`;
  const existing = pub.rows[0];
  if (!existing) {
    // A slot without its publication was streaming with one that has been dropped (or was made
    // before it): WAL after the DROP cannot be decoded with a publication created now.
    const slot = await readSlot(client, cfg);
    if (slot) throw publicationDropped(cfg, { confirmedFlushLsn: slot.confirmed_flush_lsn, failedAt: null, existsNow: false });
    if (mode === "standby") throw new PublicationError(onPrimaryOnly(cfg, `publication "${cfg.publication}" does not exist`, createSql));
    if (!cfg.createPublication) {
      throw new PublicationError(
        `publication "${cfg.publication}" does not exist and EVENTSTREAM_CREATE_PUBLICATION is false. As the owner of Airflow's tables run: ${createSql}`,
      );
    }
    if (mode === "inspect") return `publication "${cfg.publication}" does not exist: a start creates it (${createSql})`;
    await runOwnerDdl(client, createSql, cfg);
    log.info({ publication: cfg.publication, tables: qualified }, "created publication");
    return null;
  }
  // Without truncates a TRUNCATE would pass unseen, and consumers keep state that no longer exists.
  if (!existing.pubinsert || !existing.pubupdate || !existing.pubdelete || !existing.pubtruncate) {
    throw new PublicationError(
      `publication "${cfg.publication}" does not publish inserts, updates, deletes and truncates, so transitions (or a table's reset) would be missed. ${mode === "standby" ? "On the primary (this server is a standby) run" : "Run"}: ALTER PUBLICATION ${ident(cfg.publication)} SET (publish = 'insert, update, delete, truncate');`,
    );
  }
  if (existing.puballtables) return null;
  const { rows } = await client.query<{ tablename: string }>(
    "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2",
    [cfg.publication, cfg.airflowSchema],
  );
  // Compared as qualified: `qualified` names the asset tables of the Airflow major found (detectAssetTables).
  const have = new Set(rows.map((r) => `${ident(cfg.airflowSchema)}.${ident(r.tablename)}`));
  const lacking = qualified.filter((t) => !have.has(t));
  if (lacking.length === 0) return null;
  // A publication made before asset events were turned on lacks only their tables: say how to go on without them.
  const hint = lacking.some(isAssetTable) ? ASSET_HINT : "";
  const alterSql = `ALTER PUBLICATION ${ident(cfg.publication)} ADD TABLE ${lacking.join(", ")};`;
  if (mode === "standby")
    throw new PublicationError(onPrimaryOnly(cfg, `publication "${cfg.publication}" lacks ${lacking.join(", ")}${hint}`, alterSql));
  if (!cfg.createPublication) {
    throw new PublicationError(
      `publication "${cfg.publication}" lacks ${lacking.join(", ")} and EVENTSTREAM_CREATE_PUBLICATION is false. As the owner of those tables run: ${alterSql}${hint}`,
    );
  }
  if (mode === "inspect") return `publication "${cfg.publication}" lacks ${lacking.join(", ")}: a start adds them (${alterSql})`;
  await runOwnerDdl(client, alterSql, cfg);
  log.info({ publication: cfg.publication, added: lacking }, "added tables to publication");
  return null;
}

/**
 * The replication stream failed because the publication did not exist as of the change being
 * decoded: a PublicationDroppedError with the slot's position and the way to resume, or null for
 * any other failure. Retrying cannot help, even once the publication exists again (see
 * PublicationDroppedError).
 */
export async function explainPublicationDropped(e: unknown, cfg: Config): Promise<PublicationDroppedError | null> {
  // 15-17 fail with an error; 18 warns and skips (src/source/replication.ts turns that warning into a failure).
  const found = causeChain(e).findLast((c) => {
    const message = coerceError(c).message;
    return (
      (sqlState(c) === "42704" && message === `publication "${cfg.publication}" does not exist`) ||
      message === `skipped loading publication "${cfg.publication}"`
    );
  }) as { where?: unknown } | undefined;
  if (found === undefined) return null;
  // The server's CONTEXT names the change that could not be decoded: "..., associated LSN 0/1A2B3C8".
  const failedAt = typeof found.where === "string" ? (/associated LSN ([0-9A-F]+\/[0-9A-F]+)/.exec(found.where)?.[1] ?? null) : null;
  try {
    return await withSourceClient(cfg, async (client) => {
      const slot = await readSlot(client, cfg);
      const pub = await client.query("SELECT 1 FROM pg_publication WHERE pubname = $1", [cfg.publication]);
      return publicationDropped(cfg, { confirmedFlushLsn: slot?.confirmed_flush_lsn ?? null, failedAt, existsNow: pub.rowCount !== 0 }, e);
    });
  } catch {
    // PostgreSQL went away meanwhile: the verdict stands without the slot's position.
    return publicationDropped(cfg, { confirmedFlushLsn: null, failedAt, existsNow: null }, e);
  }
}

function publicationDropped(
  cfg: Config,
  at: { confirmedFlushLsn: string | null; failedAt: string | null; existsNow: boolean | null },
  cause?: unknown,
): PublicationDroppedError {
  const pub = `publication "${cfg.publication}"`;
  const since =
    at.confirmedFlushLsn === null
      ? "after the slot's confirmed position"
      : `after LSN ${at.confirmedFlushLsn}, the slot's confirmed position`;
  const tables = capturedTables(cfg).map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`);
  const create = `CREATE PUBLICATION ${ident(cfg.publication)} FOR TABLE ${tables.join(", ")};`;
  const steps = [
    "stop every airflow-eventstream on this slot",
    `run \`SELECT pg_drop_replication_slot(${literal(cfg.slot)});\``,
    ...(at.existsNow === true
      ? []
      : [
          cfg.createPublication
            ? `let the daemon create the publication at its next start, or as the owner of Airflow's tables run \`${create}\``
            : `as the owner of Airflow's tables run \`${create}\``,
        ]),
    ...(cfg.gapDetection
      ? ["run `airflow-eventstream reset-checkpoint` (it accepts the gap; without it the next start refuses the new slot)"]
      : []),
    "start the daemon: it creates a new slot, and events resume from that moment",
    "have consumers re-read task-instance and DAG-run state from Airflow's tables (a re-snapshot): changes committed between the old slot's confirmed position and the new slot's creation will never be published",
  ];
  const now =
    at.existsNow === true
      ? ` (${pub} exists again: re-created after the DROP, which does not help)`
      : at.existsNow === false
        ? ` (${pub} does not exist now)`
        : "";
  return new PublicationDroppedError(
    `${pub} was dropped while replication slot "${cfg.slot}" still had WAL to decode with it${now}. PostgreSQL decodes each change with the publication as it was when the change was written, so the changes committed after the DROP PUBLICATION${at.existsNow === true ? " and before its re-creation" : ""} can never be decoded from this slot${at.failedAt === null ? "" : ` (the first such change at LSN ${at.failedAt})`}; the daemon stops rather than retry forever or create the publication over the slot. Not delivered: the changes of ${tables.join(", ")} committed ${since} (everything before it is in Kafka; changes after it and before the DROP may be too). To resume: ${steps.map((step, i) => `(${i + 1}) ${step}`).join("; ")}. To keep this from happening, do not drop the publication while its slot exists (drop the slot first when retiring the daemon)`,
    cause === undefined ? undefined : { cause },
  );
}

async function runOwnerDdl(client: pg.Client, sql: string, cfg: Config): Promise<void> {
  try {
    await client.query(sql);
  } catch (e: unknown) {
    if (sqlState(e) === "42501") {
      throw new PublicationError(
        `role "${cfg.pg.user}" may not create or change the publication (PostgreSQL: ${(e as Error).message}): only the owner of Airflow's tables, with CREATE on the database, may. As that owner run: ${sql} (or set EVENTSTREAM_CREATE_PUBLICATION=false once it exists)${isAssetTable(sql) ? ASSET_HINT : ""}`,
        { cause: e },
      );
    }
    throw new UserActionError(`running "${sql}" failed: ${(e as Error).message}`, { cause: e });
  }
}
