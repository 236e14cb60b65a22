import type { ClientConfig } from "pg";
import type { Config } from "../config.js";

/**
 * node-postgres settings from the configuration. Every session runs with DateStyle=ISO and
 * TimeZone=UTC: pgoutput renders values with the walsender session's output functions, and
 * decode/values.ts relies on that format to keep timestamps' microseconds exact.
 */
export function pgClientConfig(cfg: Config["pg"], opts: { replication: boolean; applicationName: string }): ClientConfig {
  return {
    host: cfg.host,
    port: cfg.port,
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

/** Quotes an identifier for SQL. Configured names are already restricted to [a-z0-9_]. */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Quotes a string literal for SQL. */
export function literal(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
