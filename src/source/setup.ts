import pg from "pg";
import type { Config } from "../config.js";
import type { Lsn } from "../decode/types.js";
import { parseLsn } from "../checkpoint/lsn.js";
import {
  PrivilegeError,
  PublicationDroppedError,
  PublicationError,
  ReplicaIdentityError,
  SchemaError,
  SlotError,
  SlotBusyError,
  TlsError,
  TransientError,
  UserActionError,
  WalLevelError,
  assertNever,
  causeChain,
  coerceError,
  sqlState,
  tlsFailure,
  type TlsFailure,
} from "../errors.js";
import type { Logger } from "../log.js";
import type { SourceIdentity } from "../checkpoint/position.js";
import { ident, literal, pgClientConfig } from "./pg.js";

/** Airflow tables the daemon captures: xcom only when notifications are on. */
export function capturedTables(cfg: Config): string[] {
  return cfg.xcomKey === null ? ["task_instance", "dag_run"] : ["task_instance", "dag_run", "xcom"];
}

/**
 * Tables EVENTSTREAM_REPLICA_IDENTITY=full makes FULL: the ones whose previous state events carry.
 * Not xcom: its old values are never used, and Airflow sets an XCom as DELETE + INSERT, so FULL
 * would log every replaced value (up to megabytes of JSON) a second time.
 */
export const FULL_IDENTITY_TABLES = ["task_instance", "dag_run"] as const;

/**
 * How long `ALTER TABLE ... REPLICA IDENTITY FULL` may wait for its ACCESS EXCLUSIVE lock. While
 * it waits, every new query of Airflow's on the table queues behind it, so the scheduler would
 * stall for as long as the longest open transaction; past this the attempt is given up and the
 * session retried with backoff (a TransientError), each time stalling Airflow at most this long.
 */
const ALTER_LOCK_TIMEOUT = "2s";

/** The slot's state, as pg_replication_slots shows it. */
export interface SlotState {
  /** Where the slot resumes: everything after it is delivered again. */
  confirmedFlushLsn: Lsn;
  /** reserved, extended, unreserved, lost (null before PostgreSQL 13). */
  walStatus: string | null;
  /** Why PostgreSQL invalidated it (PostgreSQL 17+: wal_removed, rows_removed, ...); null before 17 or when valid. */
  invalidationReason: string | null;
}

export interface SourceReady {
  /** null: the slot does not exist. It is created only once the gap check allows (createSlot). */
  slot: SlotState | null;
  /** The server's WAL position and max_slot_wal_keep_size, for the gap check and its message. */
  walLsn: Lsn;
  maxSlotWalKeepSize: string | null;
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
    await checkRole(client, cfg);
    const tables = await checkTables(client, cfg);
    await ensurePublication(client, cfg, tables, log);
    // Before the slot: a slot created now decodes every change with the old rows.
    await ensureReplicaIdentity(client, cfg, log);
    const row = await readSlot(client, cfg);
    if (row && row.active_pid !== null) throw slotBusy(cfg, row.active_pid);
    if (row?.wal_status === "unreserved") {
      log.warn(
        { slot: cfg.slot, confirmedFlushLsn: row.confirmed_flush_lsn },
        "the slot is more than max_slot_wal_keep_size behind: PostgreSQL invalidates it at its next checkpoint unless the daemon catches up first (then the daemon stops, reporting a gap)",
      );
    }
    return { slot: row && slotState(row), ...(await serverWal(client)) };
  });
}

/** The slot now, with the WAL position: after START_REPLICATION, when the slot is this session's. */
export async function readSlotNow(client: pg.Client, cfg: Config): Promise<SourceReady> {
  const row = await readSlot(client, cfg);
  return { slot: row && slotState(row), ...(await serverWal(client)) };
}

/** Runs `fn` on a short-lived ordinary connection to Airflow's database (reads at session start). */
export async function withSourceClient<T>(cfg: Config, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(pgClientConfig(cfg.pg, { replication: false, applicationName: "airflow-eventstream-setup" }));
  client.on("error", () => {
    /* surfaced by the awaiting query */
  });
  await connectOrExplain(client, cfg);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Connects, translating the failures an operator can act on. */
export async function connectOrExplain(client: pg.Client, cfg: Config): Promise<void> {
  try {
    await client.connect();
  } catch (e: unknown) {
    const where = `${cfg.pg.host}:${cfg.pg.port}`;
    const code = sqlState(e);
    if (code === "28P01" || code === "28000") {
      // The server's own words say when it refused a connection for being unencrypted.
      const tlsHint =
        cfg.pg.sslmode === "disable" && /no encryption/.test((e as Error).message)
          ? `; the server accepts this role over TLS only: set PGSSLMODE=verify-full (and PGSSLROOTCERT to its CA)`
          : "";
      throw new PrivilegeError(
        `PostgreSQL at ${where} refused role "${cfg.pg.user}" (${code === "28P01" ? "wrong password" : "no pg_hba.conf entry or no login"}): check PGUSER and PGPASSWORD, and that pg_hba.conf allows this role for both the database and "replication"${tlsHint}`,
        { cause: e },
      );
    }
    if (code === "3D000") {
      throw new SchemaError(`database "${cfg.pg.database}" does not exist at ${where}: set PGDATABASE to Airflow's metadata database`, { cause: e });
    }
    const tls = tlsFailure(e);
    if (tls) throw new TlsError(explainPgTls(tls, cfg), { cause: e });
    throw new TransientError(`PostgreSQL at ${where} is unreachable (${(e as Error).message}); retrying`, { cause: e });
  }
}

/** What to change when the TLS handshake with PostgreSQL failed. */
function explainPgTls(tls: TlsFailure, cfg: Config): string {
  const where = `PostgreSQL at ${cfg.pg.host}:${cfg.pg.port}`;
  const ca = cfg.pg.sslRootCert ? `the CA in PGSSLROOTCERT (${cfg.pg.sslRootCert.path})` : "the CAs Node.js trusts (PGSSLROOTCERT is not set)";
  switch (tls.kind) {
    case "ca":
      return `${where} presented a certificate not signed by ${ca} (${tls.code}: ${tls.message}): set PGSSLROOTCERT to the PEM file of the CA that signed the server's certificate`;
    case "name":
      return (
        `${where} presented a certificate that does not name "${cfg.pg.host}" (${tls.message}${tls.certificateNames ? `; it names ${tls.certificateNames}` : ""}), ` +
        `which PGSSLMODE=verify-full requires: set PGHOST to a name in the certificate, or give the server a certificate that names ${cfg.pg.host}`
      );
    case "date":
      return `${where} presented a certificate that is expired or not yet valid (${tls.code}: ${tls.message}): renew the server's certificate, or check this machine's clock`;
    case "not-tls":
      return `${where} does not accept TLS connections (PGSSLMODE=${cfg.pg.sslmode}): turn on ssl in the server's postgresql.conf, or set PGSSLMODE=disable`;
    default:
      return assertNever(tls.kind);
  }
}

async function checkWalLevel(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ wal_level: string }>("SHOW wal_level");
  const level = rows[0]?.wal_level;
  if (level !== "logical") {
    throw new WalLevelError(
      `wal_level is "${level}", logical replication needs "logical". As a superuser run: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (on managed services set the parameter, e.g. rds.logical_replication = 1 or cloudsql.logical_decoding = on)`,
    );
  }
}

async function checkRole(client: pg.Client, cfg: Config): Promise<void> {
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

async function checkTables(client: pg.Client, cfg: Config): Promise<string[]> {
  const tables = capturedTables(cfg);
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
      `role "${cfg.pg.user}" cannot read ${denied.join(", ")}. As the tables' owner run: GRANT SELECT ON ${denied.map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`).join(", ")} TO ${ident(cfg.pg.user)};`,
    );
  }
  return qualified;
}

async function ensurePublication(client: pg.Client, cfg: Config, qualified: string[], log: Logger): Promise<void> {
  const pub = await client.query<{ pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean; puballtables: boolean }>(
    "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables FROM pg_publication WHERE pubname = $1",
    [cfg.publication],
  );
  const createSql = `CREATE PUBLICATION ${ident(cfg.publication)} FOR TABLE ${qualified.join(", ")};`;
  const existing = pub.rows[0];
  if (!existing) {
    // A slot without its publication was streaming with one that has been dropped (or was made
    // before it): WAL after the DROP cannot be decoded with a publication created now.
    const slot = await readSlot(client, cfg);
    if (slot) throw publicationDropped(cfg, { confirmedFlushLsn: slot.confirmed_flush_lsn, failedAt: null, existsNow: false });
    if (!cfg.createPublication) {
      throw new PublicationError(
        `publication "${cfg.publication}" does not exist and EVENTSTREAM_CREATE_PUBLICATION is false. As the owner of Airflow's tables run: ${createSql}`,
      );
    }
    await runOwnerDdl(client, createSql, cfg);
    log.info({ publication: cfg.publication, tables: qualified }, "created publication");
    return;
  }
  // Without truncates a TRUNCATE would pass unseen, and consumers keep state that no longer exists.
  if (!existing.pubinsert || !existing.pubupdate || !existing.pubdelete || !existing.pubtruncate) {
    throw new PublicationError(
      `publication "${cfg.publication}" does not publish inserts, updates, deletes and truncates, so transitions (or a table's reset) would be missed. Run: ALTER PUBLICATION ${ident(cfg.publication)} SET (publish = 'insert, update, delete, truncate');`,
    );
  }
  if (existing.puballtables) return;
  const { rows } = await client.query<{ tablename: string }>(
    "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2",
    [cfg.publication, cfg.airflowSchema],
  );
  const have = new Set(rows.map((r) => r.tablename));
  const lacking = capturedTables(cfg).filter((t) => !have.has(t)).map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`);
  if (lacking.length === 0) return;
  const alterSql = `ALTER PUBLICATION ${ident(cfg.publication)} ADD TABLE ${lacking.join(", ")};`;
  if (!cfg.createPublication) {
    throw new PublicationError(
      `publication "${cfg.publication}" lacks ${lacking.join(", ")} and EVENTSTREAM_CREATE_PUBLICATION is false. As the owner of those tables run: ${alterSql}`,
    );
  }
  await runOwnerDdl(client, alterSql, cfg);
  log.info({ publication: cfg.publication, added: lacking }, "added tables to publication");
}

/**
 * The replication stream failed because the publication did not exist as of the change being
 * decoded: a PublicationDroppedError with the slot's position and the way to resume, or null for
 * any other failure. Retrying cannot help, even once the publication exists again (see
 * PublicationDroppedError).
 */
export async function explainPublicationDropped(e: unknown, cfg: Config): Promise<PublicationDroppedError | null> {
  const found = causeChain(e).findLast((c) => sqlState(c) === "42704" && coerceError(c).message === `publication "${cfg.publication}" does not exist`) as { where?: unknown } | undefined;
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
  const since = at.confirmedFlushLsn === null ? "after the slot's confirmed position" : `after LSN ${at.confirmedFlushLsn}, the slot's confirmed position`;
  const tables = capturedTables(cfg).map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`);
  const create = `CREATE PUBLICATION ${ident(cfg.publication)} FOR TABLE ${tables.join(", ")};`;
  const steps = [
    "stop every airflow-eventstream on this slot",
    `run \`SELECT pg_drop_replication_slot(${literal(cfg.slot)});\``,
    ...(at.existsNow === true ? [] : [cfg.createPublication ? `let the daemon create the publication at its next start, or as the owner of Airflow's tables run \`${create}\`` : `as the owner of Airflow's tables run \`${create}\``]),
    ...(cfg.gapDetection ? ["run `airflow-eventstream reset-checkpoint` (it accepts the gap; without it the next start refuses the new slot)"] : []),
    "start the daemon: it creates a new slot, and events resume from that moment",
    "have consumers re-read task-instance and DAG-run state from Airflow's tables (a re-snapshot): changes committed between the old slot's confirmed position and the new slot's creation will never be published",
  ];
  const now = at.existsNow === true ? ` (${pub} exists again: re-created after the DROP, which does not help)` : at.existsNow === false ? ` (${pub} does not exist now)` : "";
  return new PublicationDroppedError(
    `${pub} was dropped while replication slot "${cfg.slot}" still had WAL to decode with it${now}. PostgreSQL decodes each change with the publication as it was when the change was written, so the changes committed after the DROP PUBLICATION${at.existsNow === true ? " and before its re-creation" : ""} can never be decoded from this slot${at.failedAt === null ? "" : ` (the first such change at LSN ${at.failedAt})`}; the daemon stops rather than retry forever or create the publication over the slot. Not delivered: the changes of ${tables.join(", ")} committed ${since} (everything before it is in Kafka; changes after it and before the DROP may be too). To resume: ${steps.map((step, i) => `(${i + 1}) ${step}`).join("; ")}. To keep this from happening, do not drop the publication while its slot exists (drop the slot first when retiring the daemon)`,
    cause === undefined ? undefined : { cause },
  );
}

const IDENTITY_NAMES: Record<string, string> = { d: "DEFAULT", n: "NOTHING", f: "FULL", i: "USING INDEX" };

/**
 * EVENTSTREAM_REPLICA_IDENTITY=full: task_instance and dag_run must be REPLICA IDENTITY FULL, or
 * the WAL carries no old rows and previous_state is memory again. Made so when the configuration
 * allows and the role owns the tables; otherwise an error with the SQL for the owner. (In
 * `default` mode nothing is checked: the mapper uses old rows whenever the WAL has them.)
 */
async function ensureReplicaIdentity(client: pg.Client, cfg: Config, log: Logger): Promise<void> {
  if (cfg.replicaIdentity !== "full") return;
  const names = [...FULL_IDENTITY_TABLES];
  const qualified = names.map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`);
  const { rows } = await client.query<{ name: string; qualified: string; relreplident: string; owner: string; may_alter: boolean }>(
    `SELECT t.name, t.qualified, c.relreplident::text AS relreplident, pg_get_userbyid(c.relowner) AS owner,
            pg_has_role(c.relowner, 'USAGE') AS may_alter
       FROM unnest($1::text[], $2::text[]) AS t(name, qualified)
       JOIN pg_class c ON c.oid = to_regclass(t.qualified)`,
    [names, qualified],
  );
  const lacking = rows.filter((r) => r.relreplident !== "f");
  if (lacking.length === 0) return;
  const sql = lacking.map((r) => `ALTER TABLE ${r.qualified} REPLICA IDENTITY FULL;`).join(" ");
  const current = lacking.map((r) => `${r.name} is REPLICA IDENTITY ${IDENTITY_NAMES[r.relreplident] ?? r.relreplident}`).join(", ");
  const alternative = "(or set EVENTSTREAM_REPLICA_IDENTITY=default: previous_state then comes from the daemon's memory)";
  if (!cfg.alterReplicaIdentity) {
    throw new ReplicaIdentityError(
      `EVENTSTREAM_REPLICA_IDENTITY is full but ${current}, and EVENTSTREAM_ALTER_REPLICA_IDENTITY is false. As the owner of Airflow's tables run: ${sql} ${alternative}`,
    );
  }
  const foreign = lacking.filter((r) => !r.may_alter);
  if (foreign.length > 0) {
    const owners = [...new Set(foreign.map((r) => r.owner))].map((o) => `"${o}"`).join(", ");
    throw new ReplicaIdentityError(
      `EVENTSTREAM_REPLICA_IDENTITY is full but ${current}, and role "${cfg.pg.user}" may not change that: only the owner (${owners}) may. As ${owners} run: ${sql} ${alternative}`,
    );
  }
  try {
    await client.query("BEGIN");
    await client.query(`SET LOCAL lock_timeout = '${ALTER_LOCK_TIMEOUT}'`);
    for (const r of lacking) await client.query(`ALTER TABLE ${r.qualified} REPLICA IDENTITY FULL`);
    await client.query("COMMIT");
  } catch (e: unknown) {
    await client.query("ROLLBACK").catch(() => undefined);
    if (sqlState(e) === "55P03") {
      const tables = lacking.map((r) => r.qualified).join(", ");
      throw new TransientError(`ALTER TABLE ... REPLICA IDENTITY FULL waited ${ALTER_LOCK_TIMEOUT} for the lock on ${tables}, held by open transactions (Airflow's?), and gave up so as not to stall Airflow; retrying`, { cause: e });
    }
    if (sqlState(e) === "42501") {
      throw new ReplicaIdentityError(`role "${cfg.pg.user}" may not change the replica identity (PostgreSQL: ${(e as Error).message}). As the owner of Airflow's tables run: ${sql} ${alternative}`, { cause: e });
    }
    throw new UserActionError(`running "${sql}" failed: ${(e as Error).message}`, { cause: e });
  }
  log.info({ tables: lacking.map((r) => r.qualified), was: lacking.map((r) => IDENTITY_NAMES[r.relreplident] ?? r.relreplident) }, "set REPLICA IDENTITY FULL: the WAL carries the old row of every update and delete from here on");
}

async function runOwnerDdl(client: pg.Client, sql: string, cfg: Config): Promise<void> {
  try {
    await client.query(sql);
  } catch (e: unknown) {
    if (sqlState(e) === "42501") {
      throw new PublicationError(
        `role "${cfg.pg.user}" may not create or change the publication (PostgreSQL: ${(e as Error).message}): only the owner of Airflow's tables, with CREATE on the database, may. As that owner run: ${sql} (or set EVENTSTREAM_CREATE_PUBLICATION=false once it exists)`,
        { cause: e },
      );
    }
    throw new UserActionError(`running "${sql}" failed: ${(e as Error).message}`, { cause: e });
  }
}

interface SlotRow {
  plugin: string | null;
  slot_type: string;
  database: string | null;
  active_pid: number | null;
  confirmed_flush_lsn: string | null;
  wal_status: string | null;
  invalidation_reason: string | null;
}

/** The slot's row, or null; a slot this daemon cannot use (another plugin or database) is an error. */
async function readSlot(client: pg.Client, cfg: Config): Promise<SlotRow | null> {
  const { rows } = await client.query<SlotRow>(
    // invalidation_reason exists from PostgreSQL 17 on: read through to_jsonb, which has no
    // such key (NULL) on earlier versions instead of failing.
    `SELECT plugin, slot_type, database, active_pid, confirmed_flush_lsn::text, wal_status,
            to_jsonb(s) ->> 'invalidation_reason' AS invalidation_reason
       FROM pg_replication_slots s WHERE slot_name = $1`,
    [cfg.slot],
  );
  const slot = rows[0];
  if (!slot) return null;
  const drop = `SELECT pg_drop_replication_slot(${literal(cfg.slot)});`;
  if (slot.slot_type !== "logical" || slot.plugin !== "pgoutput") {
    throw new SlotError(
      `replication slot "${cfg.slot}" exists but is ${slot.slot_type === "logical" ? `a logical slot of plugin "${slot.plugin}"` : "a physical slot"}, not pgoutput. Set EVENTSTREAM_SLOT to another name, or drop it if nothing uses it: ${drop}`,
    );
  }
  if (slot.database !== cfg.pg.database) {
    throw new SlotError(
      `replication slot "${cfg.slot}" belongs to database "${slot.database}", not "${cfg.pg.database}". Set EVENTSTREAM_SLOT to another name, or check PGDATABASE`,
    );
  }
  return slot;
}

function slotState(row: SlotRow): SlotState {
  return { confirmedFlushLsn: parseLsn(row.confirmed_flush_lsn ?? "0/0"), walStatus: row.wal_status, invalidationReason: row.invalidation_reason };
}

function slotBusy(cfg: Config, pid: number): SlotBusyError {
  return new SlotBusyError(`replication slot "${cfg.slot}" is in use by PostgreSQL backend ${pid} (another airflow-eventstream?); waiting for it to be released`);
}

async function serverWal(client: pg.Client): Promise<{ walLsn: Lsn; maxSlotWalKeepSize: string | null }> {
  const walLsn = await readWalLsn(client);
  const { rows } = await client.query<{ v: string | null }>("SELECT current_setting('max_slot_wal_keep_size', true) AS v");
  return { walLsn, maxSlotWalKeepSize: rows[0]?.v ?? null };
}

/**
 * Creates the slot, once the gap check found no checkpoint that says one existed before (or when
 * gap detection is off). A peer that created it at the same moment is not an error: its slot is used.
 */
export async function createSlot(cfg: Config, log: Logger): Promise<SlotState> {
  const createSql = `SELECT pg_create_logical_replication_slot(${literal(cfg.slot)}, 'pgoutput');`;
  if (!cfg.createSlot) {
    throw new SlotError(
      `replication slot "${cfg.slot}" does not exist and EVENTSTREAM_CREATE_SLOT is false. Run: ${createSql} (the stream starts at the slot's creation: changes before it are not delivered)`,
    );
  }
  return withSourceClient(cfg, async (client) => {
    try {
      const created = await client.query<{ lsn: string }>("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", [cfg.slot]);
      log.info({ slot: cfg.slot, lsn: created.rows[0]!.lsn }, "created replication slot; events start from here");
      return { confirmedFlushLsn: parseLsn(created.rows[0]!.lsn), walStatus: "reserved", invalidationReason: null };
    } catch (e: unknown) {
      if (sqlState(e) !== "42710") throw e;
      // Created concurrently by a peer.
      const row = await readSlot(client, cfg);
      if (!row) throw e;
      if (row.active_pid !== null) throw slotBusy(cfg, row.active_pid);
      return slotState(row);
    }
  });
}

/**
 * Drops the slot if PostgreSQL invalidated it (it can never stream again); for
 * `airflow-eventstream reset-checkpoint`. Refuses while a daemon streams from the slot. Returns
 * what it found; `dryRun` only checks.
 */
export async function dropInvalidatedSlot(cfg: Config, log: Logger, { dryRun }: { dryRun: boolean }): Promise<"missing" | "kept" | "dropped"> {
  return withSourceClient(cfg, async (client) => {
    const row = await readSlot(client, cfg);
    if (!row) return "missing";
    if (row.active_pid !== null) {
      throw new SlotError(
        `replication slot "${cfg.slot}" is in use by PostgreSQL backend ${row.active_pid}: stop the airflow-eventstream daemon(s) on this slot before resetting its checkpoint`,
      );
    }
    if (row.wal_status !== "lost") return "kept";
    if (dryRun) return "dropped";
    await client.query("SELECT pg_drop_replication_slot($1)", [cfg.slot]);
    log.info({ slot: cfg.slot, confirmedFlushLsn: row.confirmed_flush_lsn }, "dropped the invalidated replication slot");
    return "dropped";
  });
}

/**
 * Exactly-once: which PostgreSQL cluster this is. pg_control_system() is open to every role on
 * PostgreSQL; where a managed service withholds it, the identity is null and not checked.
 */
export async function readSourceIdentity(client: pg.Client): Promise<SourceIdentity> {
  const { rows } = await client.query<{ db: string }>("SELECT current_database() AS db");
  const database = rows[0]!.db;
  try {
    const sys = await client.query<{ sysid: string }>("SELECT system_identifier::text AS sysid FROM pg_control_system()");
    return { systemIdentifier: sys.rows[0]?.sysid ?? null, database };
  } catch {
    return { systemIdentifier: null, database };
  }
}

/** The server's WAL position now: where it inserts (on a standby: where it replays). */
export async function readWalLsn(client: pg.Client): Promise<Lsn> {
  const { rows } = await client.query<{ wal: string | null }>("SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS wal");
  const wal = rows[0]?.wal;
  return wal ? parseLsn(wal) : 0n;
}
