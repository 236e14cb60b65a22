import pg, { type ClientConfig } from "pg";
import type { Config } from "../config.js";
import { PrivilegeError, SchemaError, TlsError, TransientError, sqlState, tlsFailure } from "../errors.js";
import { explainTlsFailure, type TlsService } from "../tls.js";
import { connectTarget, type PgHost } from "./target.js";

/**
 * node-postgres settings from the configuration. Every session runs with DateStyle=ISO and
 * TimeZone=UTC: pgoutput renders values with the walsender session's output functions, and
 * decode/values.ts relies on that format to keep timestamps' microseconds exact.
 */
export function pgClientConfig(
  cfg: Config["pg"],
  opts: { replication: boolean; applicationName: string },
  host: PgHost = { host: cfg.host, port: cfg.port },
): ClientConfig {
  return {
    // One host per client: with verify-full, Node checks the certificate against this host's own name.
    host: host.host,
    port: host.port,
    user: cfg.user,
    password: cfg.password,
    database: cfg.database,
    ssl: sslOptions(cfg),
    application_name: opts.applicationName,
    options: "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3",
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
    ...(opts.replication ? { replication: "database" } : {}),
  } as ClientConfig;
}

/**
 * libpq's sslmode, in Node's TLS options. Node checks the chain against `ca` (or its own CA list)
 * and, by default, that the certificate names the host connected to: verify-full keeps that check,
 * verify-ca switches it off.
 */
function sslOptions(cfg: Config["pg"]): ClientConfig["ssl"] {
  const ca = cfg.sslRootCert ? { ca: cfg.sslRootCert.pem } : {};
  const chainOnly = { rejectUnauthorized: true, ...ca, checkServerIdentity: () => undefined };
  switch (cfg.sslmode) {
    case "disable":
      return false;
    case "require":
      // As libpq: a root certificate given with require makes it check the chain (as verify-ca).
      return cfg.sslRootCert ? chainOnly : { rejectUnauthorized: false };
    case "verify-ca":
      return chainOnly;
    case "verify-full":
      return { rejectUnauthorized: true, ...ca };
  }
}

/** Runs `fn` on a short-lived ordinary connection to Airflow's database (reads at session start). */
export async function withSourceClient<T>(cfg: Config, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const { client } = await connectSource(cfg, { replication: false, applicationName: "airflow-eventstream-setup" });
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * A connected client on the PGHOST host that matches PGTARGETSESSIONATTRS (src/source/target.ts):
 * every connection to PostgreSQL is made here. `extra` overrides node-postgres settings; `prepare`
 * attaches listeners before connecting. Errors after connecting surface on the awaiting query unless
 * `prepare` listens for them.
 */
export async function connectSource(
  cfg: Config,
  opts: {
    replication: boolean;
    applicationName: string;
    extra?: (base: ClientConfig) => Partial<ClientConfig>;
    prepare?: (client: pg.Client) => void;
  },
): Promise<{ client: pg.Client; host: PgHost }> {
  return connectTarget(cfg, {
    make: (host) => {
      const base = pgClientConfig(cfg.pg, opts, host);
      const client = new pg.Client({ ...base, ...(opts.extra?.(base) ?? {}) });
      if (opts.prepare) opts.prepare(client);
      else client.on("error", () => undefined);
      return client;
    },
    connect: (client) => connectOrExplain(client, cfg),
  });
}

/** Connects, translating the failures an operator can act on. */
export async function connectOrExplain(client: pg.Client, cfg: Config): Promise<void> {
  try {
    await client.connect();
  } catch (e: unknown) {
    // The host this client tried, of the PGHOST list.
    const host = { host: client.host, port: client.port };
    const where = `${host.host}:${host.port}`;
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
      throw new SchemaError(`database "${cfg.pg.database}" does not exist at ${where}: set PGDATABASE to Airflow's metadata database`, {
        cause: e,
      });
    }
    const tls = tlsFailure(e);
    if (tls) throw new TlsError(explainTlsFailure(tls, pgTlsService(cfg.pg, host)), { cause: e });
    throw new TransientError(`PostgreSQL at ${where} is unreachable (${(e as Error).message}); retrying`, { cause: e });
  }
}

/** PostgreSQL's words for a failed TLS handshake: the PG* settings to change. */
export function pgTlsService(cfg: Config["pg"], host: PgHost = { host: cfg.host, port: cfg.port }): TlsService {
  return {
    peer: `PostgreSQL at ${host.host}:${host.port}`,
    trusted: cfg.sslRootCert ? `the CA in PGSSLROOTCERT (${cfg.sslRootCert.path})` : "the CAs Node.js trusts (PGSSLROOTCERT is not set)",
    expectedName: `"${host.host}"`,
    nameRequiredBy: "which PGSSLMODE=verify-full requires",
    notTls: `does not accept TLS connections (PGSSLMODE=${cfg.sslmode})`,
    fix: {
      ca: "set PGSSLROOTCERT to the PEM file of the CA that signed the server's certificate",
      name: `set PGHOST to a name in the certificate, or give the server a certificate that names ${host.host}`,
      date: "renew the server's certificate, or check this machine's clock",
      "not-tls": "turn on ssl in the server's postgresql.conf, or set PGSSLMODE=disable",
    },
  };
}
