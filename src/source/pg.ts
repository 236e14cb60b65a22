import { readFileSync } from "node:fs";
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
    ssl: sslOptions(cfg.sslmode),
    application_name: opts.applicationName,
    options: "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3",
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
    ...(opts.replication ? { replication: "database" } : {}),
  } as ClientConfig;
}

function sslOptions(mode: Config["pg"]["sslmode"]): ClientConfig["ssl"] {
  switch (mode) {
    case "disable":
      return false;
    case "require":
      return { rejectUnauthorized: false };
    case "verify-ca":
    case "verify-full": {
      const ca = process.env.PGSSLROOTCERT ? readFileSync(process.env.PGSSLROOTCERT, "utf8") : undefined;
      return {
        rejectUnauthorized: true,
        ...(ca ? { ca } : {}),
        // verify-ca checks the chain only; verify-full (node's default) also checks the host name.
        ...(mode === "verify-ca" ? { checkServerIdentity: () => undefined } : {}),
      };
    }
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
