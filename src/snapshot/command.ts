import type { Config } from "../config.js";
import { ConfigError, PrivilegeError, sqlState } from "../errors.js";
import { withSourceClient } from "../source/connection.js";
import { standbyWriteError } from "../source/standby.js";
import type { Logger } from "../log.js";
import { requestSnapshot, type SnapshotRequest } from "./request.js";
import { waitForJob, type JobState } from "./wait.js";
import { SNAPSHOT_TABLES, type SnapshotSpec, type SnapshotTable } from "./spec.js";

/** `snapshot` arguments -> a request (and --wait); ConfigError for anything else. */
export function parseSnapshotArgs(args: string[]): SnapshotRequest & { wait: boolean } {
  let wait = false;
  const dags: string[] = [];
  const tables: SnapshotTable[] = [];
  let runsSince: string | null = null;
  let activeOnly = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string => {
      const v = args[++i];
      if (v === undefined || v.startsWith("--")) throw new ConfigError(`snapshot: ${a} needs a value`);
      return v;
    };
    if (a === "--dag") dags.push(value());
    else if (a === "--runs-since") {
      runsSince = value();
      if (Number.isNaN(Date.parse(runsSince)))
        throw new ConfigError(`snapshot: --runs-since "${runsSince}" is not a date (e.g. 2026-12-01 or 2026-12-01T00:00:00Z)`);
    } else if (a === "--active-only") activeOnly = true;
    else if (a === "--wait") wait = true;
    else if (a === "--table") {
      const t = value();
      if (!SNAPSHOT_TABLES.includes(t as SnapshotTable))
        throw new ConfigError(`snapshot: --table must be one of ${SNAPSHOT_TABLES.join(", ")}, not "${t}"`);
      tables.push(t as SnapshotTable);
    } else throw new ConfigError(`snapshot: unknown argument "${a}"`);
  }
  return { dags, tables: tables.length > 0 ? tables : undefined, runsSince, activeOnly, wait };
}

/** Writes the request into the WAL (see requestSnapshot), prints its id, and with --wait follows the job until done. */
export async function snapshotCommand(cfg: Config, log: Logger, args: string[]): Promise<void> {
  const req = parseSnapshotArgs(args);
  const spec = await request(cfg, req);
  process.stdout.write(`${spec.id}\n`);
  if (!req.wait) return;
  const say = (s: JobState) =>
    process.stderr.write(
      s.kind === "queued"
        ? `${spec.id}: queued\n`
        : s.kind === "running"
          ? `${spec.id}: ${s.table}, ${s.rows} rows\n`
          : `${spec.id}: ${s.kind}, ${s.rows} rows\n`,
    );
  // Until done, however long: a snapshot of a large table at the default rate takes hours.
  await waitForJob(cfg, log, spec.id, say, 2 ** 31 - 1);
}

async function request(cfg: Config, req: SnapshotRequest): Promise<SnapshotSpec> {
  return withSourceClient(cfg, async (c) => {
    const version = await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
    if (Number(version.rows[0]!.v) < 140000)
      throw new ConfigError("snapshots need PostgreSQL 14 or later (pgoutput passes logical decoding messages on from 14)");
    try {
      return await requestSnapshot(c, req);
    } catch (e: unknown) {
      if (sqlState(e) === "42501")
        throw new PrivilegeError(
          `role "${cfg.pg.user}" may not execute pg_logical_emit_message, which carries the snapshot request through the WAL. Run the command as a role with REPLICATION, or GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO ${cfg.pg.user} (on PostgreSQL 17 and later the function is pg_logical_emit_message(boolean, text, text, boolean); docs/backfill.md)`,
          { cause: e },
        );
      throw standbyWriteError(e, "the snapshot request") ?? e;
    }
  });
}
