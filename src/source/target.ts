import type pg from "pg";
import type { Config } from "../config.js";
import { TransientError, UserActionError } from "../errors.js";

/**
 * Choosing the server among several (PGHOST=a,b,c), as libpq's target_session_attrs does.
 *
 * node-postgres connects to one host and knows nothing of libpq's host lists or
 * target_session_attrs, so the daemon does it itself: each host in order, connect, ask the session
 * what it is, keep it when it matches, else close it and try the next. The question is asked on the
 * connection that will be used (also a replication=database one, which takes these queries too):
 * asking a second connection would leave a window in which a promotion or demotion makes the answer
 * wrong for the first.
 */

export type TargetSessionAttrs = "any" | "read-write" | "read-only" | "primary" | "standby" | "prefer-standby";

export interface PgHost {
  host: string;
  port: number;
}

/**
 * PGHOST and PGPORT as libpq reads them: hosts separated by commas; one port for all of them or one
 * per host. Returns the hosts, or a problem for the configuration error.
 */
export function parseHostList(hostSetting: string, portSetting: string): { hosts: PgHost[] } | { problem: string } {
  const hosts = hostSetting.split(",").map((h) => h.trim());
  const ports = portSetting.split(",").map((p) => Number.parseInt(p.trim(), 10));
  if (hosts.some((h) => h === "")) return { problem: "PGHOST: a host list has an empty entry; separate host names by single commas" };
  const bad = ports.find((p) => !(p >= 1 && p <= 65535));
  if (bad !== undefined) return { problem: `PGPORT: ${bad} is not a port (1-65535)` };
  if (ports.length !== 1 && ports.length !== hosts.length) {
    return {
      problem: `PGPORT: ${ports.length} ports for ${hosts.length} hosts in PGHOST; give one port for all hosts, or exactly one per host in the same order`,
    };
  }
  return { hosts: hosts.map((host, i) => ({ host, port: ports.length === 1 ? ports[0]! : ports[i]! })) };
}

/** Unset: `any` with one host (today's behaviour, no extra query), `read-write` with several: the server Airflow writes to. */
export function defaultTargetAttrs(hosts: readonly PgHost[], given: TargetSessionAttrs | undefined): TargetSessionAttrs {
  return given ?? (hosts.length > 1 ? "read-write" : "any");
}

/** What a session is, for matching and for the error that lists every host. */
type Session = { inRecovery: boolean; readOnly: boolean };

function describe(s: Session): string {
  if (s.inRecovery) return "a standby (in recovery)";
  return s.readOnly ? "a read-only primary (default_transaction_read_only)" : "a read-write primary";
}

function matches(attrs: TargetSessionAttrs, s: Session): boolean {
  switch (attrs) {
    case "any":
      return true;
    case "read-write":
      return !s.readOnly;
    case "read-only":
      return s.readOnly;
    case "primary":
      return !s.inRecovery;
    case "standby":
    case "prefer-standby":
      return s.inRecovery;
  }
}

async function inspect(client: pg.Client): Promise<Session> {
  // Simple queries (no parameters): the extended protocol is refused on replication connections.
  const r = await client.query<{ r: string }>("SELECT pg_is_in_recovery()::text AS r");
  const ro = await client.query<{ transaction_read_only: string }>("SHOW transaction_read_only");
  return { inRecovery: r.rows[0]?.r === "true", readOnly: ro.rows[0]?.transaction_read_only === "on" };
}

/** `make` builds a client for one host; `connect` connects it, translating failures (connectOrExplain). */
export interface TargetOptions {
  make(host: PgHost): pg.Client;
  connect(client: pg.Client, host: PgHost): Promise<void>;
}

/**
 * Connects to the first host that matches the configured target_session_attrs. With one host and
 * `any`, exactly today's single connection. A host that refuses for a reason an operator must fix
 * (role, database, TLS: a UserActionError) stops the search with that error, as it names what to
 * change; a host that is unreachable or does not match is noted and the next one tried. When none
 * matches: a TransientError listing what each host was, so the supervisor retries (a promotion in
 * progress ends with one of them matching).
 */
export async function connectTarget(cfg: Config, opts: TargetOptions): Promise<{ client: pg.Client; host: PgHost }> {
  const { hosts, targetSessionAttrs: attrs } = cfg.pg;
  const seen: string[] = [];
  // prefer-standby: a standby if there is one, else any host (libpq's second pass).
  const passes: TargetSessionAttrs[] = attrs === "prefer-standby" ? ["prefer-standby", "any"] : [attrs];
  for (const pass of passes) {
    for (const host of hosts) {
      const where = `${host.host}:${host.port}`;
      const client = opts.make(host);
      try {
        await opts.connect(client, host);
      } catch (e: unknown) {
        if (e instanceof UserActionError || hosts.length === 1) throw e;
        seen.push(`${where} unreachable (${(e as Error).message})`);
        continue;
      }
      if (pass === "any") return { client, host };
      let session: Session;
      try {
        session = await inspect(client);
      } catch (e: unknown) {
        await client.end().catch(() => undefined);
        seen.push(`${where} did not answer (${(e as Error).message})`);
        continue;
      }
      if (matches(pass, session)) return { client, host };
      await client.end().catch(() => undefined);
      seen.push(`${where} is ${describe(session)}`);
    }
  }
  throw new TransientError(
    `no PostgreSQL host in PGHOST matches PGTARGETSESSIONATTRS=${attrs}: ${seen.join("; ")}; retrying (after a failover, until the standby is promoted; otherwise check PGHOST and PGPORT)`,
  );
}
