import { Kafka as CeKafka, type CloudEvent } from "cloudevents";
import { Kafka, logLevel, type IHeaders, type KafkaMessage } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamEvent } from "../../src/airflow/events.js";
import { recordBytes } from "../../src/sink/batch.js";
import { CLOUDEVENT_TYPES, cloudEventSubject } from "../../src/sink/cloudevents.js";
import { createDatabase, daemonConfig, dropDatabase, services, startDaemon, uniqueName, waitFor, withPg } from "../support/harness.js";
import { insertDagRun, insertTi, setXCom, updateTi } from "../support/airflow-rows.js";

/**
 * EVENTSTREAM_CLOUDEVENTS=binary with the real daemon, PostgreSQL and Kafka, in both delivery modes:
 * the records are read with kafkajs and handed to the CloudEvents SDK's Kafka binding, which must
 * recognise each as a CloudEvent whose attributes are the event's and whose data is the event. A
 * second daemon on its own slot of the same database, without the option, publishes the same WAL:
 * its records carry no headers and its values are byte for byte those of the first. A third, on a
 * third slot, with a size limit the headers push the notification over, dead-letters it.
 */

interface Raw {
  topic: string;
  partition: number;
  key: string | null;
  value: string;
  headers: Record<string, string>;
}

function headerStrings(h: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) if (v !== undefined) out[k] = (Array.isArray(v) ? v.join(",") : v).toString();
  return out;
}

/** Every record of `topics` (read committed, kafkajs's default) until `until` says enough; fails after 60 s. */
async function readRaw(topics: string[], until: (all: Raw[]) => boolean): Promise<Raw[]> {
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-cloudevents" });
  // The daemon creates its topics when it connects, maybe after this is called.
  const admin = kafka.admin();
  await admin.connect();
  try {
    await waitFor(
      `the topics ${topics.join(", ")}`,
      async () => {
        const have = new Set(await admin.listTopics());
        return topics.every((t) => have.has(t));
      },
      60_000,
    );
  } finally {
    await admin.disconnect();
  }
  const consumer = kafka.consumer({ groupId: uniqueName("ce"), maxWaitTimeInMs: 100 });
  const all: Raw[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`waited 60 s for records on ${topics.join(", ")}: got ${all.length}; is the daemon streaming?`)),
        60_000,
      );
      const each = ({ topic, partition, message }: { topic: string; partition: number; message: KafkaMessage }): Promise<void> => {
        const value = message.value?.toString("utf8") ?? "";
        all.push({ topic, partition, key: message.key?.toString() ?? null, value, headers: headerStrings(message.headers) });
        if (until(all)) {
          clearTimeout(t);
          resolve();
        }
        return Promise.resolve();
      };
      consumer.run({ eachMessage: each }).catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return all;
}

const parse = (r: Raw) => StreamEvent.parse(JSON.parse(r.value));
/** Until the TRUNCATE, the last change, is read from every partition (it goes to each of the 3). */
const untilTruncated = (all: Raw[]) => all.filter((r) => r.value.includes('"table_truncated"')).length >= 3;

describe.each(["at-least-once", "exactly-once"] as const)("CloudEvents binary mode (%s)", (delivery) => {
  const db = uniqueName(`ce_${delivery === "exactly-once" ? "eos" : "alo"}`);
  const plainSlot = `${db}_plain`;
  const tightSlot = `${db}_tight`;
  const dag = "ce_dag";
  const load = { dag_id: dag, task_id: "load", run_id: "manual__2026-12-03T10:00:00+00:00" };
  const mapped = { ...load, task_id: "fan", map_index: 2 };
  const common = { EVENTSTREAM_DELIVERY: delivery, EVENTSTREAM_PUBLICATION: db };
  let sysid = "";

  beforeAll(async () => {
    await createDatabase(db, "3");
    await withPg(db, async (c) => {
      await c.query(`CREATE PUBLICATION ${db} FOR TABLE task_instance, dag_run, xcom`);
      for (const slot of [db, plainSlot, tightSlot]) await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
      sysid = (await c.query<{ s: string }>("SELECT system_identifier::text AS s FROM pg_control_system()")).rows[0]!.s;
      const runId = await insertDagRun(c, "3", dag, load.run_id, "running");
      await insertTi(c, "3", load, { state: "queued", try_number: 1 });
      await updateTi(c, load, { state: "running" });
      await insertTi(c, "3", mapped, { state: "running", try_number: 1 });
      await setXCom(c, "3", runId, load, "eventstream", { request_id: "req-1", payload: { rows: 3, blob: "y".repeat(600) } });
      await updateTi(c, load, { state: "success" });
      await c.query("TRUNCATE xcom");
    });
  });

  afterAll(async () => {
    await dropDatabase(db);
  });

  it("every record is a CloudEvent the SDK reads: each attribute, data equal to the event; state records carry none", async () => {
    const cfg = daemonConfig(db, { ...common, EVENTSTREAM_CLOUDEVENTS: "binary" });
    const daemon = startDaemon(cfg);
    let records: Raw[];
    try {
      records = await readRaw([cfg.topic], untilTruncated);
    } finally {
      await daemon.stop();
    }
    const source = `urn:airflow-eventstream:${sysid}:${db}`;
    expect(new Set(records.map((r) => parse(r).type))).toEqual(new Set(["dag_run", "task_instance", "notification", "table_truncated"]));
    for (const r of records) {
      const event = parse(r);
      const msg = { key: r.key ?? "", value: r.value, headers: r.headers, body: r.value };
      expect(CeKafka.isEvent(msg)).toBe(true);
      const ce = CeKafka.toEvent(msg) as CloudEvent<unknown>;
      expect(ce.validate()).toBe(true);
      expect(ce.specversion).toBe("1.0");
      expect(ce.id).toBe(event.source.position);
      expect(ce.source).toBe(source);
      expect(ce.type).toBe(CLOUDEVENT_TYPES[event.type]);
      expect(ce.subject).toBe(cloudEventSubject(event));
      expect(ce.datacontenttype).toBe("application/json");
      // RFC 3339 with PostgreSQL's microseconds in the header; the SDK keeps milliseconds.
      expect(r.headers.ce_time).toBe(event.source.commit_time);
      expect(r.headers.ce_time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
      expect(ce.time).toBe(new Date(event.source.commit_time).toISOString());
      expect(ce.data).toEqual(JSON.parse(r.value));
      expect(Object.keys(r.headers).sort()).toEqual(
        [
          "ce_id",
          "ce_source",
          "ce_specversion",
          "ce_time",
          "ce_type",
          "content-type",
          ...(ce.subject === undefined ? [] : ["ce_subject"]),
        ].sort(),
      );
    }
    const subjects = records.map((r) => r.headers.ce_subject);
    expect(subjects).toContain(`${dag}/${load.run_id}`);
    expect(subjects).toContain(`${dag}/${load.run_id}/load`);
    expect(subjects).toContain(`${dag}/${load.run_id}/fan/2`);
    expect(subjects).toContain("xcom");

    const state = await readRaw([cfg.stateTopic!], (all) => all.length >= 3);
    for (const r of state) expect(Object.keys(r.headers).filter((k) => k.startsWith("ce_"))).toEqual([]);
  });

  it("without the option: no headers, and the same values byte for byte", async () => {
    const ce = daemonConfig(db, { ...common, EVENTSTREAM_CLOUDEVENTS: "binary" });
    const cfg = daemonConfig(db, {
      ...common,
      EVENTSTREAM_SLOT: plainSlot,
      EVENTSTREAM_TOPIC: `plain.${db}`,
      EVENTSTREAM_STATE_TOPIC: `state.plain.${db}`,
    });
    const daemon = startDaemon(cfg);
    let plain: Raw[];
    try {
      plain = await readRaw([cfg.topic], untilTruncated);
    } finally {
      await daemon.stop();
    }
    const withCe = await readRaw([ce.topic], (all) => all.length >= plain.length);
    for (const r of plain) expect(r.headers).toEqual({});
    const byPlace = (rs: Raw[]) => rs.map((r) => `${r.partition} ${r.key} ${r.value}`).sort();
    expect(byPlace(plain)).toEqual(byPlace(withCe));
  });

  it("the headers count toward EVENTSTREAM_MAX_MESSAGE_BYTES", async () => {
    const plain = await readRaw([`plain.${db}`], untilTruncated);
    const note = plain.find((r) => r.value.includes('"notification"'))!;
    // The notification fits without headers; its ~280 bytes of headers take it over.
    const max = recordBytes(note.value, note.key) + 40;
    const dlq = `dlq.${db}`;
    const cfg = daemonConfig(db, {
      ...common,
      EVENTSTREAM_CLOUDEVENTS: "binary",
      EVENTSTREAM_SLOT: tightSlot,
      EVENTSTREAM_TOPIC: `tight.${db}`,
      EVENTSTREAM_STATE_TOPIC: `state.tight.${db}`,
      EVENTSTREAM_MAX_MESSAGE_BYTES: String(max),
      EVENTSTREAM_DEAD_LETTER_TOPIC: dlq,
    });
    const daemon = startDaemon(cfg);
    try {
      const dead = await readRaw([dlq], (all) => all.length >= 1);
      const summary = JSON.parse(dead[0]!.value) as { reason: string; type: string; bytes: number; limit: number };
      expect(summary).toMatchObject({ reason: "message_too_large", type: "notification", limit: max });
      expect(summary.bytes).toBeGreaterThan(max);
      expect(dead[0]!.headers).toEqual({});
      const events = await readRaw([cfg.topic], untilTruncated);
      expect(events.some((r) => r.value.includes('"notification"'))).toBe(false);
      for (const r of events) expect(recordBytes(r.value, r.key, r.headers)).toBeLessThanOrEqual(max);
    } finally {
      await daemon.stop();
    }
  });
});
