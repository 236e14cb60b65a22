import { execFileSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { registerCleanup } from "./cleanup.js";
import { asPostgres, ownedByPostgres, scratchPort } from "./scratch-postgres.js";

/**
 * A primary and a physical standby streaming from it, on one major version, for the failover and
 * standby-decoding tests. Throwaway like scratch-postgres: 127.0.0.1 only, trust authentication,
 * every file under one temporary directory that `destroy()` removes.
 *
 * The standby is a copy of the primary's data directory taken while the primary is stopped, not a
 * pg_basebackup: only Debian's 15 client programs exist here, and pg_basebackup refuses a newer
 * server. A clean shutdown leaves a consistent directory, so the copy starts as a standby at exactly
 * the primary's position. The copy's pg_replslot is emptied, as pg_basebackup does: a slot copied
 * that way would be the standby's own, and PostgreSQL 17's slot synchronisation refuses to replace a
 * slot it did not create.
 */
export interface PgNode {
  name: "primary" | "standby";
  host: string;
  port: number;
  /** The server programs' directory (scripts/pg-binaries.sh). */
  bin: string;
  data: string;
  log: string;
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[], database?: string): Promise<R[]>;
  stop(mode?: "fast" | "immediate"): void;
  start(): void;
  /** Promotes a standby and waits until it accepts writes. */
  promote(): Promise<void>;
  running(): boolean;
}

export interface PgPair {
  major: number;
  primary: PgNode;
  standby: PgNode;
  /** The physical slot the standby streams through (primary_slot_name), for synchronized_standby_slots. */
  physicalSlot: string;
  /** Waits until the standby has replayed everything the primary has written so far. */
  waitCaughtUp(timeoutMs?: number): Promise<void>;
  destroy(): Promise<void>;
}

export interface PairOptions {
  major: 16 | 17 | 18;
  /** Extra settings of the primary (e.g. synchronized_standby_slots), written as `name = value`. */
  primarySettings?: Record<string, string>;
  standbySettings?: Record<string, string>;
  /** sync_replication_slots=on on the standby (17+): failover slots are copied to it. Default true on 17+. */
  syncSlots?: boolean;
}

const isRoot = process.getuid?.() === 0;
export const PHYSICAL_SLOT = "pair_standby";

/** The bin directory of a major version, fetched once by the repo's script. */
export function serverBin(major: number): string {
  return execFileSync("bash", ["scripts/pg-binaries.sh", String(major)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
}

function settingsText(title: string, s: Record<string, string>): string {
  return `\n# ${title}\n${Object.entries(s)
    .map(([k, v]) => `${k} = ${v}`)
    .join("\n")}\n`;
}

async function queryAt<R extends pg.QueryResultRow>(
  port: number,
  sql: string,
  params: unknown[] = [],
  database = "postgres",
): Promise<R[]> {
  const c = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database, connectionTimeoutMillis: 5_000 });
  await c.connect();
  try {
    return (await c.query<R>(sql, params)).rows;
  } finally {
    await c.end().catch(() => undefined);
  }
}

function node(name: PgNode["name"], bin: string, dir: string, port: number): PgNode {
  const data = join(dir, name);
  const log = join(dir, `${name}.log`);
  const ctl = (args: string[]) => asPostgres(join(bin, "pg_ctl"), ["-D", data, ...args]);
  const self: PgNode = {
    name,
    host: "127.0.0.1",
    port,
    bin,
    data,
    log,
    query: (sql, params, database) => queryAt(port, sql, params, database),
    stop: (mode = "fast") => {
      if (self.running()) ctl(["-m", mode, "-w", "-t", "60", "-s", "stop"]);
    },
    start: () => {
      try {
        ctl(["-l", log, "-w", "-t", "60", "-s", "start"]);
      } catch (e) {
        const tail = existsSync(log) ? readFileSync(log, "utf8").split("\n").slice(-20).join("\n") : "(no log)";
        throw new Error(`${name} on port ${port} did not start: ${(e as Error).message}\n${tail}`, { cause: e });
      }
    },
    promote: async () => {
      await self.query("SELECT pg_promote(true, 60)");
      for (let i = 0; i < 600; i++) {
        const [r] = await self.query<{ r: boolean }>("SELECT pg_is_in_recovery() AS r");
        if (r && !r.r) return;
        await new Promise((res) => setTimeout(res, 100));
      }
      throw new Error(`${name} on port ${port} was promoted but is still in recovery after 60 s`);
    },
    running: () => {
      try {
        ctl(["status"]);
        return true;
      } catch {
        return false;
      }
    },
  };
  return self;
}

/** Starts a primary, copies it into a standby, and waits until the standby streams from it. */
export async function startPgPair(opts: PairOptions): Promise<PgPair> {
  const bin = serverBin(opts.major);
  const dir = mkdtempSync("/tmp/eventstream-pair-");
  let nodes: PgNode[] = [];
  const cleanup = () => {
    for (const n of nodes) {
      try {
        n.stop("immediate");
      } catch {
        /* already stopped */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup("scratch-postgres", dir, cleanup, cleanup);
  try {
    ownedByPostgres(dir);
    const primary = node("primary", bin, dir, await scratchPort());
    nodes = [primary];
    asPostgres(join(bin, "initdb"), ["-D", primary.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
    writeFileSync(
      join(primary.data, "pg_hba.conf"),
      [
        "local all all trust",
        "local replication all trust",
        "host all all 127.0.0.1/32 trust",
        "host replication all 127.0.0.1/32 trust",
        "",
      ].join("\n"),
    );
    mkdirSync(join(dir, "sock-primary"));
    mkdirSync(join(dir, "sock-standby"));
    if (isRoot) for (const s of ["sock-primary", "sock-standby"]) execFileSync("chown", ["postgres:postgres", join(dir, s)]);
    appendFileSync(
      join(primary.data, "postgresql.conf"),
      settingsText("pg-pair: both nodes", {
        listen_addresses: "'127.0.0.1'",
        max_connections: "60",
        shared_buffers: "32MB",
        wal_level: "logical",
        max_wal_senders: "20",
        max_replication_slots: "20",
        hot_standby: "on",
        // No OS crash is simulated: a server stopped -m immediate still has its WAL in the page cache.
        fsync: "off",
        full_page_writes: "off",
        wal_keep_size: "'256MB'",
      }) + settingsText("pg-pair: primary", { port: String(primary.port), unix_socket_directories: `'${join(dir, "sock-primary")}'` }),
    );
    primary.start();
    await primary.query("SELECT pg_create_physical_replication_slot($1, true)", [PHYSICAL_SLOT]);
    // Picked while the primary holds its port: a range's first free port would be the same one.
    const standby = node("standby", bin, dir, await scratchPort());
    primary.stop("fast");

    cpSync(primary.data, standby.data, { recursive: true, preserveTimestamps: true });
    for (const f of ["postmaster.pid", "postmaster.opts"]) rmSync(join(standby.data, f), { force: true });
    for (const s of readdirSync(join(standby.data, "pg_replslot")))
      rmSync(join(standby.data, "pg_replslot", s), { recursive: true, force: true });
    writeFileSync(join(standby.data, "standby.signal"), "");
    const syncSlots = (opts.syncSlots ?? opts.major >= 17) && opts.major >= 17;
    appendFileSync(
      join(standby.data, "postgresql.conf"),
      settingsText("pg-pair: standby", {
        port: String(standby.port),
        unix_socket_directories: `'${join(dir, "sock-standby")}'`,
        // dbname: slot synchronisation (17+) reads the primary's slots over this connection.
        primary_conninfo: `'host=127.0.0.1 port=${primary.port} user=postgres dbname=postgres application_name=standby'`,
        primary_slot_name: `'${PHYSICAL_SLOT}'`,
        hot_standby_feedback: "on",
        ...(syncSlots ? { sync_replication_slots: "on" } : {}),
        ...opts.standbySettings,
      }),
    );
    if (opts.primarySettings)
      appendFileSync(join(primary.data, "postgresql.conf"), settingsText("pg-pair: primary (test)", opts.primarySettings));
    // The copy is made by whoever runs the tests; the server wants its own files, mode 0700.
    if (isRoot) execFileSync("chown", ["-R", "postgres:postgres", standby.data]);
    chmodSync(standby.data, 0o700);
    nodes = [primary, standby];
    primary.start();
    standby.start();
    const pair: PgPair = {
      major: opts.major,
      primary,
      standby,
      physicalSlot: PHYSICAL_SLOT,
      waitCaughtUp: async (timeoutMs = 60_000) => {
        const [w] = await primary.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn");
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const [r] = await standby.query<{ ok: boolean }>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok", [w!.lsn]);
          if (r?.ok) return;
          if (Date.now() > deadline) throw new Error(`standby did not replay up to ${w!.lsn} within ${timeoutMs} ms`);
          await new Promise((res) => setTimeout(res, 100));
        }
      },
      destroy: async () => {
        cleanup();
        unregister();
      },
    };
    await waitStreaming(primary);
    return pair;
  } catch (e) {
    cleanup();
    unregister();
    throw e;
  }
}

async function waitStreaming(primary: PgNode): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const rows = await primary.query<{ state: string }>("SELECT state FROM pg_stat_replication WHERE application_name = 'standby'");
    if (rows[0]?.state === "streaming") return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`the standby did not start streaming from the primary within 60 s (logs: ${primary.log} and the standby's beside it)`);
}
