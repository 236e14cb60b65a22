import { afterAll, describe, expect, it } from "vitest";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  checkHeapLimit,
  HEAP_HEADROOM,
  closestSettings,
  editDistance,
  heapNeededMb,
  loadConfig,
  loadDotEnv,
  SETTING_NAMES,
  TOOLING_NAMES,
  unknownSettings,
} from "../../src/config.js";
import { ConfigError } from "../../src/errors.js";

/** CA files are read when the configuration loads: a real (if fake) PEM file, and one that is not PEM. */
const dir = mkdtempSync(join(tmpdir(), "config-test-"));
const CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const caFile = join(dir, "ca.pem");
writeFileSync(caFile, CA_PEM);
const notPem = join(dir, "not.pem");
writeFileSync(notPem, "hello");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("loadConfig", () => {
  it("applies the documented defaults", () => {
    const c = loadConfig({});
    expect(c.pg).toMatchObject({ host: "127.0.0.1", port: 5432, user: "postgres", database: "airflow", sslmode: "disable" });
    expect(c.slot).toBe("airflow_eventstream");
    expect(c.publication).toBe("airflow_eventstream");
    expect(c.kafka.brokers).toEqual(["127.0.0.1:9092"]);
    expect(c.topic).toBe("airflow.events");
    expect(c.topicTemplate).toBeNull();
    expect(c.statusIntervalMs).toBe(10_000);
    expect(c.createSlot && c.createPublication && c.createTopics).toBe(true);
    expect(c.replicaIdentity).toBe("default");
    expect(c.alterReplicaIdentity).toBe(true);
  });

  it("reads the replica identity mode and refuses other values, naming the variable", () => {
    const c = loadConfig({ EVENTSTREAM_REPLICA_IDENTITY: "full", EVENTSTREAM_ALTER_REPLICA_IDENTITY: "false" });
    expect(c.replicaIdentity).toBe("full");
    expect(c.alterReplicaIdentity).toBe(false);
    expect(() => loadConfig({ EVENTSTREAM_REPLICA_IDENTITY: "FULL" })).toThrow(
      /EVENTSTREAM_REPLICA_IDENTITY="FULL" \(from the environment\): /,
    );
    expect(() => loadConfig({ EVENTSTREAM_REPLICA_IDENTITY: "index" })).toThrow(ConfigError);
  });

  it("picks the Kafka producer (wire by default in at-least-once, kafkajs in exactly-once), and refuses the wire producer with exactly-once", () => {
    expect(loadConfig({}).kafka.producer).toBe("wire");
    expect(loadConfig({ EVENTSTREAM_DELIVERY: "exactly-once" }).kafka.producer).toBe("kafkajs");
    expect(loadConfig({ EVENTSTREAM_KAFKA_PRODUCER: "kafkajs" }).kafka.producer).toBe("kafkajs");
    expect(loadConfig({ EVENTSTREAM_KAFKA_PRODUCER: "wire" }).kafka.producer).toBe("wire");
    expect(() => loadConfig({ EVENTSTREAM_KAFKA_PRODUCER: "wire", EVENTSTREAM_DELIVERY: "exactly-once" })).toThrow(
      /EVENTSTREAM_KAFKA_PRODUCER="wire".*not transactional/,
    );
    expect(() => loadConfig({ EVENTSTREAM_KAFKA_PRODUCER: "librdkafka" })).toThrow(ConfigError);
  });

  it("reads every kind of value", () => {
    const c = loadConfig({
      PGPORT: "55432",
      KAFKA_BROKERS: "a:1, b:2,",
      EVENTSTREAM_CREATE_SLOT: "false",
      EVENTSTREAM_TOPIC_TEMPLATE: "airflow.{dag_id}",
      EVENTSTREAM_MAX_INFLIGHT_EVENTS: "5",
      LOG_LEVEL: "debug",
    });
    expect(c.pg.port).toBe(55432);
    expect(c.kafka.brokers).toEqual(["a:1", "b:2"]);
    expect(c.createSlot).toBe(false);
    expect(c.topicTemplate).toBe("airflow.{dag_id}");
    expect(c.maxInflightEvents).toBe(5);
    expect(c.logLevel).toBe("debug");
  });

  it("treats blank values as unset", () => {
    expect(loadConfig({ PGPORT: "", EVENTSTREAM_TOPIC_TEMPLATE: "" }).pg.port).toBe(5432);
  });

  it("lists every problem in one error that names the variables", () => {
    let err: unknown;
    try {
      loadConfig({ PGPORT: "nope", EVENTSTREAM_SLOT: "Bad-Slot", EVENTSTREAM_CREATE_TOPICS: "maybe", LOG_LEVEL: "loud" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    for (const key of ["PGPORT", "EVENTSTREAM_SLOT", "EVENTSTREAM_CREATE_TOPICS", "LOG_LEVEL"]) expect(msg).toContain(key);
    expect(msg).toContain(".env.example");
  });

  it("requires {dag_id} in a topic template", () => {
    expect(() => loadConfig({ EVENTSTREAM_TOPIC_TEMPLATE: "airflow.static" })).toThrow(
      /EVENTSTREAM_TOPIC_TEMPLATE="airflow.static" \(from the environment\): must contain \{dag_id\}/,
    );
  });

  it("shows the value it refused and where it came from, but never a password's value", () => {
    const msg = errorOf(() => loadConfig({ PGPORT: "5432x", EVENTSTREAM_TOPIC_PARTITIONS: "many" }, new Map([["PGPORT", ".env"]])));
    expect(msg).toContain('PGPORT="5432x" (from .env): expected a whole number');
    expect(msg).toContain('EVENTSTREAM_TOPIC_PARTITIONS="many" (from the environment): expected a whole number');
    const template = errorOf(() => loadConfig({ EVENTSTREAM_TOPIC_TEMPLATE: "airflow.static" }));
    expect(template).toContain('EVENTSTREAM_TOPIC_TEMPLATE="airflow.static" (from the environment): must contain {dag_id}');
    // Unknown names whose value may be a secret: the name, never the value.
    const secret = errorOf(() => loadConfig({ EVENTSTREAM_KAFKA_PASSWORD: "s3cr3t-value" }));
    expect(secret).toContain("EVENTSTREAM_KAFKA_PASSWORD=<hidden>");
    expect(secret).not.toContain("s3cr3t");
  });
});

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError, got none");
}

describe("loadConfig: unknown EVENTSTREAM_* names", () => {
  it("a misspelt setting is an error naming it, its value and the setting meant", () => {
    const msg = errorOf(() => loadConfig({ EVENTSTREAM_TOPIC_PARTITION: "3" }));
    expect(msg).toMatch(
      /EVENTSTREAM_TOPIC_PARTITION="3" \(from the environment\): not a setting of airflow-eventstream; did you mean EVENTSTREAM_TOPIC_PARTITIONS\?/,
    );
  });

  it("is listed with every other problem in the one error", () => {
    const msg = errorOf(() => loadConfig({ EVENTSTREAM_SLOTS: "x", EVENTSTREAM_KAFKA_BROKERS: "k:9092", PGPORT: "nope" }));
    expect(msg).toContain('EVENTSTREAM_SLOTS="x"');
    expect(msg).toContain("did you mean EVENTSTREAM_SLOT?");
    expect(msg).toContain("did you mean KAFKA_BROKERS?");
    expect(msg).toContain('PGPORT="nope"');
  });

  it("names from the nearest by edit distance, at most three, without the unrelated rest", () => {
    expect(editDistance("kitten", "sitting")).toBe(3);
    expect(editDistance("", "abc")).toBe(3);
    expect(editDistance("same", "same")).toBe(0);
    expect(closestSettings("EVENTSTREAM_BATCH_MAX_EVENT")).toEqual(["EVENTSTREAM_BATCH_MAX_EVENTS"]);
    expect(closestSettings("EVENTSTREAM_CHECKPOINTS_TOPIC")).toEqual(["EVENTSTREAM_CHECKPOINT_TOPIC"]);
    const vague = closestSettings("EVENTSTREAM_FOO");
    expect(vague.length).toBeGreaterThan(0);
    expect(vague.length).toBeLessThanOrEqual(3);
  });

  it("knows every setting of the schema, and .env.example lists exactly those", () => {
    const example = readFileSync(".env.example", "utf8")
      .split("\n")
      .map((l) => /^([A-Z][A-Z0-9_]*)=/.exec(l)?.[1])
      .filter((n): n is string => n !== undefined);
    expect([...new Set(example)].sort()).toEqual([...SETTING_NAMES].sort());
    expect(unknownSettings(SETTING_NAMES)).toEqual([]);
  });

  it("accepts the names the project's scripts and tests use (a development shell starts the daemon)", () => {
    // Every EVENTSTREAM_* name in the tooling that exports or reads them, so a new one is noticed here.
    const roots = ["scripts", "bench", "test/support", "test/faults", "test/airflow", "docker", ".ci"];
    const used = new Set<string>();
    const walk = (path: string): void => {
      if (statSync(path).isDirectory()) {
        for (const f of readdirSync(path)) if (f !== "results") walk(`${path}/${f}`);
      } else {
        for (const m of readFileSync(path, "utf8").matchAll(/\bEVENTSTREAM_[A-Z0-9_]*[A-Z0-9]\b/g)) used.add(m[0]);
      }
    };
    for (const r of roots) walk(r);
    expect(used.size).toBeGreaterThan(10);
    expect(unknownSettings(used)).toEqual([]);
    const tooling = Object.fromEntries([...TOOLING_NAMES, "EVENTSTREAM_TEST_CA_FILE", "EVENTSTREAM_SERVICES_DIR"].map((n) => [n, "1"]));
    expect(loadConfig(tooling).slot).toBe("airflow_eventstream");
  });

  it("other variables are not its business", () => {
    expect(loadConfig({ AIRFLOW_EVENTSTREAM_CACHE: "/tmp", KAFKA_BROKER: "x", PG_PORT: "1" }).pg.port).toBe(5432);
  });
});

describe("loadDotEnv", () => {
  it("a bad value from .env is reported as coming from .env; the environment still wins over it", () => {
    const file = join(dir, "dot.env");
    writeFileSync(file, "EVENTSTREAM_STATE_CACHE_SIZE=lots\nEVENTSTREAM_XCOM_KEY=from-file\n");
    process.env.EVENTSTREAM_XCOM_KEY = "from-env";
    try {
      loadDotEnv(file);
      expect(process.env.EVENTSTREAM_XCOM_KEY).toBe("from-env");
      const msg = errorOf(() =>
        loadConfig({ EVENTSTREAM_STATE_CACHE_SIZE: process.env.EVENTSTREAM_STATE_CACHE_SIZE, EVENTSTREAM_XCOM_KEY: "x" }),
      );
      expect(msg).toContain(`EVENTSTREAM_STATE_CACHE_SIZE="lots" (from ${file}): expected a whole number`);
    } finally {
      delete process.env.EVENTSTREAM_STATE_CACHE_SIZE;
      delete process.env.EVENTSTREAM_XCOM_KEY;
    }
  });
});

describe("loadConfig: Kafka security and notifications", () => {
  it("builds TLS and SASL settings", () => {
    const c = loadConfig({
      KAFKA_SSL: "true",
      KAFKA_SSL_CA_FILE: caFile,
      KAFKA_SASL_MECHANISM: "scram-sha-512",
      KAFKA_SASL_USERNAME: "u",
      KAFKA_SASL_PASSWORD: "p",
    });
    expect(c.kafka.ssl).toEqual({ ca: { path: caFile, pem: CA_PEM } });
    expect(c.kafka.sasl).toEqual({ mechanism: "scram-sha-512", username: "u", password: "p" });
    expect(loadConfig({ KAFKA_SSL: "true" }).kafka.ssl).toEqual({ ca: null });
    expect(loadConfig({}).kafka).toMatchObject({ ssl: null, sasl: null });
  });

  it("reads CA files at load: a missing or non-PEM file is a configuration error naming the variable", () => {
    const missing = join(dir, "missing.pem");
    expect(() => loadConfig({ KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: missing })).toThrow(
      new RegExp(`KAFKA_SSL_CA_FILE: cannot read ${missing} \\(ENOENT\\); set it to the PEM file of the CA`),
    );
    expect(() => loadConfig({ PGSSLMODE: "verify-full", PGSSLROOTCERT: notPem })).toThrow(
      /PGSSLROOTCERT: .*not\.pem holds no PEM certificate/,
    );
    // Both at once, with the other problems.
    expect(() =>
      loadConfig({ KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: missing, PGSSLMODE: "verify-ca", PGSSLROOTCERT: missing, PGPORT: "x" }),
    ).toThrow(ConfigError);
  });

  it("PGSSLROOTCERT: read unless PGSSLMODE=disable (as libpq ignores it then)", () => {
    expect(loadConfig({ PGSSLMODE: "verify-full", PGSSLROOTCERT: caFile }).pg).toMatchObject({
      sslmode: "verify-full",
      sslRootCert: { path: caFile, pem: CA_PEM },
    });
    expect(loadConfig({ PGSSLMODE: "require", PGSSLROOTCERT: caFile }).pg.sslRootCert).toEqual({ path: caFile, pem: CA_PEM });
    expect(loadConfig({ PGSSLROOTCERT: join(dir, "missing.pem") }).pg).toMatchObject({ sslmode: "disable", sslRootCert: null });
    expect(loadConfig({ PGSSLMODE: "verify-full" }).pg.sslRootCert).toBeNull();
  });

  it("asks for the SASL credentials together, without echoing them", () => {
    expect(() => loadConfig({ KAFKA_SASL_MECHANISM: "plain", KAFKA_SASL_PASSWORD: "hunter2" })).toThrow(
      /KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: required/,
    );
    try {
      loadConfig({ KAFKA_SASL_MECHANISM: "plain", KAFKA_SASL_PASSWORD: "hunter2" });
    } catch (e) {
      expect((e as Error).message).not.toContain("hunter2");
    }
  });

  it("turns XCom notifications off, and checks topic names", () => {
    expect(loadConfig({}).xcomKey).toBe("eventstream");
    expect(loadConfig({ EVENTSTREAM_XCOM_KEY: "ship" }).xcomKey).toBe("ship");
    expect(loadConfig({ EVENTSTREAM_NOTIFICATIONS: "false" }).xcomKey).toBeNull();
    expect(loadConfig({}).deadLetterTopic).toBeNull();
    expect(() => loadConfig({ EVENTSTREAM_DEAD_LETTER_TOPIC: "bad topic!" })).toThrow(
      /EVENTSTREAM_DEAD_LETTER_TOPIC="bad topic!" \(from the environment\): must be a Kafka topic name/,
    );
  });
});

describe("checkHeapLimit: configured bounds against the heap Node was started with", () => {
  const base = { PGDATABASE: "airflow", KAFKA_BROKERS: "localhost:9092" };
  const MB = 2 ** 20;
  // bin/airflow-eventstream: --max-old-space-size=60 --max-semi-space-size=2 -> heap_size_limit 66 MB.
  const launcherLimit = 66 * MB;

  it("the defaults fit the launcher's limit with room to collect", () => {
    const cfg = loadConfig(base);
    expect(heapNeededMb(cfg) * HEAP_HEADROOM).toBeLessThanOrEqual(66);
    expect(() => checkHeapLimit(cfg, launcherLimit)).not.toThrow();
  });

  it("a cache the limit cannot hold is refused at start, saying what to set", () => {
    const cfg = loadConfig({ ...base, EVENTSTREAM_STATE_CACHE_SIZE: "1000000" });
    expect(() => checkHeapLimit(cfg, launcherLimit)).toThrow(ConfigError);
    expect(() => checkHeapLimit(cfg, launcherLimit)).toThrow(/EVENTSTREAM_STATE_CACHE_SIZE=1000000.*NODE_OPTIONS=--max-old-space-size=\d+/);
    // ... and the suggested limit is enough.
    const suggested = Number(
      /max-old-space-size=(\d+)/.exec(
        String(
          (() => {
            try {
              checkHeapLimit(cfg, launcherLimit);
            } catch (e) {
              return (e as Error).message;
            }
          })(),
        ),
      )![1],
    );
    expect(() => checkHeapLimit(cfg, suggested * MB)).not.toThrow();
  });

  it("more events in flight need more heap", () => {
    const small = heapNeededMb(loadConfig(base));
    const big = heapNeededMb(loadConfig({ ...base, EVENTSTREAM_MAX_INFLIGHT_BYTES: String(256 * MB) }));
    expect(big - small).toBeGreaterThan(250);
    expect(() => checkHeapLimit(loadConfig({ ...base, EVENTSTREAM_MAX_INFLIGHT_BYTES: String(256 * MB) }), launcherLimit)).toThrow(
      /EVENTSTREAM_MAX_INFLIGHT_BYTES/,
    );
  });
});

describe("the current-state topic's settings", () => {
  it("is on by default as airflow.state; off gives null", () => {
    expect(loadConfig({}).stateTopic).toBe("airflow.state");
    expect(loadConfig({ EVENTSTREAM_STATE_TOPIC: "ops.state" }).stateTopic).toBe("ops.state");
    expect(loadConfig({ EVENTSTREAM_STATE_TOPIC_ENABLED: "false" }).stateTopic).toBeNull();
  });

  it("must be a topic of its own", () => {
    for (const other of [{ EVENTSTREAM_TOPIC: "x" }, { EVENTSTREAM_CHECKPOINT_TOPIC: "x" }, { EVENTSTREAM_DEAD_LETTER_TOPIC: "x" }]) {
      expect(() => loadConfig({ ...other, EVENTSTREAM_STATE_TOPIC: "x" })).toThrow(
        /EVENTSTREAM_STATE_TOPIC="x".*must be a topic of its own/,
      );
    }
    // Off, the name does not matter.
    expect(
      loadConfig({ EVENTSTREAM_TOPIC: "x", EVENTSTREAM_STATE_TOPIC: "x", EVENTSTREAM_STATE_TOPIC_ENABLED: "false" }).stateTopic,
    ).toBeNull();
  });
});
