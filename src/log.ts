import { pino, type Logger } from "pino";

export type { Logger };

/**
 * JSON logs on stdout (on stderr with `fd` 2: `replay --stdout` writes its records to stdout).
 * Fields, not interpolation: `log.info({ lsn, slot }, "streaming")`.
 * `redact` is a second line of defence: no code path logs a password or a connection string.
 */
export function createLogger(level: string, fd: 1 | 2 = 1): Logger {
  const options = {
    level,
    base: { service: "airflow-eventstream" },
    redact: { paths: ["password", "*.password", "pg.password", "sasl", "*.sasl", "connectionString"], censor: "[redacted]" },
  };
  return fd === 1 ? pino(options) : pino(options, pino.destination(2));
}
