import { pino, type Logger } from "pino";

export type { Logger };

/**
 * JSON logs on stdout. Fields, not interpolation: `log.info({ lsn, slot }, "streaming")`.
 * `redact` is a second line of defence: no code path logs a password or a connection string.
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "airflow-eventstream" },
    redact: { paths: ["password", "*.password", "pg.password", "sasl", "*.sasl", "connectionString"], censor: "[redacted]" },
  });
}
