import { execFileSync } from "node:child_process";
import pg from "pg";
import { Kafka, logLevel } from "kafkajs";
import { servicesEnv } from "../../scripts/services-env.js";

export interface Services {
  pg: { host: string; port: number; user: string; password: string };
  kafkaBrokers: string[];
  /** For the security tests; null when not configured (`tlsMissing` says which variables). */
  tls: TlsServices | null;
  tlsMissing: string[];
}

/** TLS and SASL endpoints of the same PostgreSQL and Kafka (scripts/services.sh provides them). */
export interface TlsServices {
  /** Kafka's SASL_SSL listener(s), with SCRAM-SHA-256 and SCRAM-SHA-512 enabled. */
  kafkaSaslBrokers: string[];
  saslUsername: string;
  saslPassword: string;
  /** PEM file of the CA that signed both servers' certificates. */
  caFile: string;
  /** A host name of PostgreSQL that its certificate lists. */
  pgTlsHost: string;
  /** A host name that reaches the same PostgreSQL but is not in its certificate. */
  pgTlsWrongHost: string;
}

/** Where each TlsServices field comes from: `scripts/services.sh env` prints them all. */
const TLS_VARS = {
  kafkaSaslBrokers: "EVENTSTREAM_TEST_KAFKA_SASL_BROKERS",
  saslUsername: "EVENTSTREAM_TEST_KAFKA_SASL_USERNAME",
  saslPassword: "EVENTSTREAM_TEST_KAFKA_SASL_PASSWORD",
  caFile: "EVENTSTREAM_TEST_CA_FILE",
  pgTlsHost: "EVENTSTREAM_TEST_PG_TLS_HOST",
  pgTlsWrongHost: "EVENTSTREAM_TEST_PG_TLS_WRONG_HOST",
} as const;

export const HOW_TO_CONFIGURE_TLS = [
  "The security tests need TLS and SASL endpoints of the same services, given by these variables:",
  "  EVENTSTREAM_TEST_KAFKA_SASL_BROKERS, EVENTSTREAM_TEST_KAFKA_SASL_USERNAME, EVENTSTREAM_TEST_KAFKA_SASL_PASSWORD:",
  "    a SASL_SSL listener of the Kafka in KAFKA_BROKERS with SCRAM-SHA-256 and SCRAM-SHA-512, and a user with both credentials;",
  "  EVENTSTREAM_TEST_CA_FILE: the PEM file of the CA that signed that listener's and PostgreSQL's certificates;",
  "  EVENTSTREAM_TEST_PG_TLS_HOST / EVENTSTREAM_TEST_PG_TLS_WRONG_HOST: a host name of PostgreSQL (ssl=on) in its",
  "    certificate, and one that reaches it but is not in it; pg_hba.conf must refuse non-TLS connections of",
  "    members of the role eventstream_tls_only (hostnossl ... +eventstream_tls_only ... reject).",
  'The project\'s own services provide all of it: bash scripts/services.sh up && eval "$(bash scripts/services.sh env)"',
].join("\n");

/** The TLS settings from variables (the environment, or `services.sh env`'s output), and which are missing. */
function tlsFrom(vars: Record<string, string | undefined>): Pick<Services, "tls" | "tlsMissing"> {
  const missing = Object.values(TLS_VARS).filter((name) => !vars[name]);
  if (missing.length > 0) return { tls: null, tlsMissing: missing };
  const get = (k: keyof typeof TLS_VARS) => vars[TLS_VARS[k]]!;
  return {
    tls: {
      kafkaSaslBrokers: get("kafkaSaslBrokers")
        .split(",")
        .map((b) => b.trim()),
      saslUsername: get("saslUsername"),
      saslPassword: get("saslPassword"),
      caFile: get("caFile"),
      pgTlsHost: get("pgTlsHost"),
      pgTlsWrongHost: get("pgTlsWrongHost"),
    },
    tlsMissing: [],
  };
}

export const HOW_TO_START = [
  "Integration tests need a real PostgreSQL (wal_level=logical, a superuser) and a real Kafka.",
  "On this kind of machine start the project's own with:",
  '  npm run services:up && eval "$(bash scripts/services.sh env)"',
  "or point the tests at yours with PGHOST, PGPORT, PGUSER, PGPASSWORD and KAFKA_BROKERS.",
  "Where a Docker engine runs, leaving those unset starts PostgreSQL and Kafka with testcontainers.",
].join("\n");

/**
 * PG* and KAFKA_BROKERS from the environment when given (CI sets them from scripts/services.sh);
 * otherwise testcontainers where a Docker engine answers; otherwise the project's own local
 * services, started by scripts/services.sh; and when none of that works, a failure saying what to do.
 */
export async function resolveServices(): Promise<{ services: Services; stop: () => Promise<void> }> {
  const env = process.env;
  if (env.PGHOST && env.KAFKA_BROKERS) {
    return {
      services: {
        pg: { host: env.PGHOST, port: Number(env.PGPORT ?? 5432), user: env.PGUSER ?? "postgres", password: env.PGPASSWORD ?? "" },
        kafkaBrokers: env.KAFKA_BROKERS.split(",").map((b) => b.trim()),
        ...tlsFrom(env),
      },
      stop: async () => {},
    };
  }
  if (!dockerEngineRuns()) {
    // No Docker here: start the project's own services (idempotent; they stay up for the next run).
    try {
      execFileSync("bash", ["scripts/services.sh", "up"], { stdio: "inherit", timeout: 600_000 });
      const vars = servicesEnv(process.cwd());
      return {
        services: {
          pg: { host: vars.PGHOST!, port: Number(vars.PGPORT), user: vars.PGUSER!, password: vars.PGPASSWORD! },
          kafkaBrokers: vars.KAFKA_BROKERS!.split(","),
          ...tlsFrom(vars),
        },
        stop: async () => {},
      };
    } catch (e) {
      throw new Error(
        `PGHOST/KAFKA_BROKERS are not set, no Docker engine answers, and scripts/services.sh up failed (${(e as Error).message}).\n${HOW_TO_START}`,
      );
    }
  }
  // Only where Docker exists (a developer's laptop); this machine's CI uses the services above.
  const { PostgreSqlContainer } = await import("@testcontainers/postgresql");
  const { KafkaContainer } = await import("@testcontainers/kafka");
  const pgc = await new PostgreSqlContainer("postgres:17")
    .withCommand(["postgres", "-c", "wal_level=logical", "-c", "max_replication_slots=32", "-c", "max_wal_senders=32"])
    .withUsername("postgres")
    .withPassword("postgres")
    .start();
  const kc = await new KafkaContainer("apache/kafka:4.1.1").withKraft().start();
  return {
    services: {
      pg: { host: pgc.getHost(), port: pgc.getPort(), user: "postgres", password: "postgres" },
      kafkaBrokers: [`${kc.getHost()}:${kc.getMappedPort(9093)}`],
      // The containers get no certificates: the security tests fail, saying what to set.
      ...tlsFrom({}),
    },
    stop: async () => {
      await kc.stop();
      await pgc.stop();
    },
  };
}

function dockerEngineRuns(): boolean {
  try {
    execFileSync("docker", ["info"], { stdio: "ignore", timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

export async function checkServices(s: Services): Promise<void> {
  const client = new pg.Client({ ...s.pg, database: "postgres", connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
    const { rows } = await client.query<{ wal_level: string }>("SHOW wal_level");
    if (rows[0]?.wal_level !== "logical") throw new Error(`wal_level is ${rows[0]?.wal_level}, not logical`);
  } catch (e) {
    throw new Error(`PostgreSQL at ${s.pg.host}:${s.pg.port} is not usable: ${(e as Error).message}\n${HOW_TO_START}`);
  } finally {
    await client.end().catch(() => undefined);
  }
  const admin = new Kafka({ brokers: s.kafkaBrokers, logLevel: logLevel.NOTHING, connectionTimeout: 3_000, retry: { retries: 2 } }).admin();
  try {
    await admin.connect();
    await admin.listTopics();
  } catch (e) {
    throw new Error(`Kafka at ${s.kafkaBrokers.join(",")} is not usable: ${(e as Error).message}\n${HOW_TO_START}`);
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}
