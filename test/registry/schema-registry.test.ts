import { SchemaRegistry } from "@kafkajs/confluent-schema-registry";
import { Kafka, logLevel, type KafkaMessage } from "kafkajs";
import { afterAll, describe, expect, it } from "vitest";
import { StreamEvent } from "../../src/airflow/events.js";
import { SchemaRegistryError } from "../../src/errors.js";
import { streamEventSchema } from "../../src/airflow/json-schema.js";
import { readCurrentState } from "../../src/sink/state-reader.js";
import { framedSchemaId, parseEventValue } from "../../src/sink/wire-format.js";
import { freePort } from "../support/scratch-postgres.js";
import {
  createDatabase,
  daemonEnv,
  dropDatabase,
  expectUserAction,
  services,
  spawnDaemon,
  uniqueName,
  waitFor,
  withPg,
  type DaemonProcess,
  type DaemonRecords,
} from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";

/**
 * EVENTSTREAM_SCHEMA_REGISTRY_URL with a real registry (scripts/registry.sh: Apicurio Registry's
 * Confluent-compatible API), real PostgreSQL and real Kafka: the daemon registers the event schema
 * and frames every event and state value; an independent client (@kafkajs/confluent-schema-registry)
 * decodes each record by the schema id it carries, fetching that schema from the registry and
 * validating the JSON against it; the repo's own readers fold the framed state topic and read the
 * framed tail back at a restart; a registry that is down stops the start with SchemaRegistryError.
 */

const HOW_TO_START =
  'this test needs a schema registry: `bash scripts/registry.sh up && eval "$(bash scripts/registry.sh env)"` (EVENTSTREAM_REGISTRY_PORT to move it off 28081), then `npm run test:registry`';

function registryUrl(): string {
  const url = process.env.EVENTSTREAM_TEST_SCHEMA_REGISTRY_URL;
  if (url === undefined || url === "") throw new Error(`EVENTSTREAM_TEST_SCHEMA_REGISTRY_URL is not set: ${HOW_TO_START}`);
  return url;
}

const STREAMING = /"msg":"streaming"/;
const rec: DaemonRecords = { outputs: [], spawned: [] };
const databases: string[] = [];

function kafka(): Kafka {
  return new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-schema-registry" });
}

/** Every record of `topic` from the beginning, until `until` holds of them (or the timeout). */
async function readTopic(topic: string, until: (ms: KafkaMessage[]) => boolean, timeoutMs = 60_000): Promise<KafkaMessage[]> {
  const consumer = kafka().consumer({ groupId: uniqueName("reg-test"), readUncommitted: false });
  const got: KafkaMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void got.push(message) });
    await waitFor(`records of ${topic}`, () => Promise.resolve(until(got) ? got : null), timeoutMs);
    return got;
  } finally {
    await consumer.disconnect();
  }
}

async function registryGet(path: string): Promise<unknown> {
  const res = await fetch(`${registryUrl().replace(/\/+$/, "")}${path}`);
  expect(res.status, `GET ${path}`).toBe(200);
  return res.json();
}

afterAll(async () => {
  for (const p of rec.spawned) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
  for (const db of databases) await dropDatabase(db);
});

describe("schema registry (EVENTSTREAM_SCHEMA_REGISTRY_URL)", () => {
  it("registers the event schema, frames event and state values, and an independent client decodes every record by its schema id", async () => {
    const url = registryUrl();
    const db = uniqueName("registry");
    databases.push(db);
    await createDatabase(db, "3");
    const env = daemonEnv(db, { EVENTSTREAM_SCHEMA_REGISTRY_URL: url });
    let daemon: DaemonProcess = spawnDaemon(env);
    rec.spawned.push(daemon);
    await daemon.waitForLog(STREAMING, 90_000);

    const dags = ["reg_a", "reg_b", "reg_c"];
    await withPg(db, async (c) => {
      for (const dag of dags) {
        await insertDagRun(c, "3", dag, "r1", "running");
        for (const task of ["t1", "t2"]) {
          await insertTi(c, "3", { dag_id: dag, task_id: task, run_id: "r1" });
          await updateTi(c, { dag_id: dag, task_id: task, run_id: "r1" }, { state: "success" });
        }
      }
      await c.query("TRUNCATE task_instance CASCADE");
    });
    // 3 dag_run + 12 task_instance events, then table_truncated on each of the 3 partitions.
    const topic = `${db}.events`;
    const records = await readTopic(topic, (ms) => ms.length >= 18);
    expect(records).toHaveLength(18);

    const client = new SchemaRegistry({ host: url });
    const ids = new Set<number>();
    const types = new Map<string, number>();
    for (const r of records) {
      const value = r.value!;
      expect(value[0], "magic byte").toBe(0);
      const id = framedSchemaId(value);
      expect(id).not.toBeNull();
      ids.add(id!);
      // Fetches schema `id` from the registry, validates the JSON against it (throws when invalid).
      const decoded = (await client.decode(value)) as { type: string };
      expect(decoded).toEqual(parseEventValue(value));
      expect(StreamEvent.safeParse(decoded).success).toBe(true);
      types.set(decoded.type, (types.get(decoded.type) ?? 0) + 1);
    }
    expect(Object.fromEntries(types)).toEqual({ dag_run: 3, task_instance: 12, table_truncated: 3 });
    expect(ids.size).toBe(1);
    const [id] = [...ids];
    // The client validates for real: a value that is no event is refused against that schema.
    await expect(client.encode(id!, { type: "not_an_event" })).rejects.toThrow(/invalid payload/);

    // The subject (TopicNameStrategy) holds that schema, at BACKWARD_TRANSITIVE.
    const subjects = (await registryGet("/subjects")) as string[];
    expect(subjects).toEqual(expect.arrayContaining([`${topic}-value`, `state.${db}-value`]));
    const latest = (await registryGet(`/subjects/${encodeURIComponent(`${topic}-value`)}/versions/latest`)) as {
      id: number;
      schemaType: string;
    };
    expect(latest.schemaType).toBe("JSON");
    expect(latest.id).toBe(id);
    expect(await registryGet(`/config/${encodeURIComponent(`${topic}-value`)}`)).toEqual({ compatibilityLevel: "BACKWARD_TRANSITIVE" });

    // The current-state topic is framed too, and the repo's reader folds it: the truncate removed
    // every task instance; the DAG runs stay, nothing unreadable.
    const stateTopic = `state.${db}`;
    const stateRecords = await readTopic(stateTopic, (ms) => ms.length >= 3 + 6 + 1);
    for (const r of stateRecords) if (r.value !== null) expect(r.value[0], "state value magic byte").toBe(0);
    const state = await readCurrentState(kafka(), stateTopic, { timeoutMs: 60_000 });
    expect(state.invalid).toBe(0);
    expect([...state.entries.values()].map((e) => e.table)).toEqual(["dag_run", "dag_run", "dag_run"]);

    // A restart reads the framed tail back (src/sink/read-back.ts) and goes on, under the same id.
    daemon.proc.kill("SIGTERM");
    expect(await daemon.exited).toBe(0);
    daemon = spawnDaemon(env);
    rec.spawned.push(daemon);
    await daemon.waitForLog(STREAMING, 90_000);
    await withPg(db, (c) => insertTi(c, "3", { dag_id: "reg_a", task_id: "after_restart", run_id: "r1" }));
    const after = await readTopic(topic, (ms) => ms.length >= 19);
    expect(after).toHaveLength(19);
    const last = after.find((r) => (parseEventValue(r.value!) as { task_id?: string }).task_id === "after_restart")!;
    expect(framedSchemaId(last.value!)).toBe(id);
    expect(((await client.decode(last.value!)) as { task_id: string }).task_id).toBe("after_restart");
    daemon.proc.kill("SIGTERM");
    expect(await daemon.exited).toBe(0);
  });

  it("a registry that refuses the schema (not BACKWARD_TRANSITIVE-compatible with the subject) stops the start", async () => {
    const db = uniqueName("registry_refused");
    databases.push(db);
    await createDatabase(db, "3");
    // An earlier version that also allowed a type the daemon's schema does not: the daemon's would drop it.
    const wider = streamEventSchema() as { anyOf: unknown[] };
    wider.anyOf.push({ type: "object", properties: { type: { type: "string", const: "retired_kind" } }, required: ["type"] });
    const res = await fetch(`${registryUrl()}/subjects/${encodeURIComponent(`${db}.events-value`)}/versions`, {
      method: "POST",
      headers: { "Content-Type": "application/vnd.schemaregistry.v1+json" },
      body: JSON.stringify({ schemaType: "JSON", schema: JSON.stringify(wider) }),
    });
    expect(res.status).toBe(200);
    const env = daemonEnv(db, { EVENTSTREAM_SCHEMA_REGISTRY_URL: registryUrl() });
    await expectUserAction(rec, "schema refused", env, SchemaRegistryError, [
      "refused",
      "HTTP 409",
      "BACKWARD_TRANSITIVE",
      "docs/schema-registry.md",
    ]);
  });

  it("a registry that cannot be reached stops the start: SchemaRegistryError, exit code 2, saying what to do", async () => {
    const db = uniqueName("registry_down");
    databases.push(db);
    await createDatabase(db, "3");
    const port = await freePort();
    const env = daemonEnv(db, { EVENTSTREAM_SCHEMA_REGISTRY_URL: `http://127.0.0.1:${port}/apis/ccompat/v7` });
    const message = await expectUserAction(rec, "registry down", env, SchemaRegistryError, [
      "could not be reached",
      "EVENTSTREAM_SCHEMA_REGISTRY_URL",
    ]);
    expect(message).toContain(`127.0.0.1:${port}`);
  });
});
