import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../../../src/airflow/events.js";
import { headersBytes, headersBytesBound, recordBytes } from "../../../src/sink/batch.js";
import { CLOUDEVENT_TYPES, CloudEvents, cloudEventSubject, cloudEventsSource } from "../../../src/sink/cloudevents.js";
import { taskInstanceEvent } from "../../support/events.js";

const source = {
  commit_lsn: "0/16B3748",
  xid: 745,
  index: 2,
  position: "00000000016B3748-00000002",
  commit_time: "2026-11-25T08:17:27.123456Z",
};

/** A running task's event at `source`; the fields a case changes over it. */
function ti(over: Parameters<typeof taskInstanceEvent>[0] = {}): StreamEvent {
  return taskInstanceEvent({
    dag_id: "etl",
    task_id: "load",
    run_id: "manual__2026-11-25T08:00:00+00:00",
    state: "running",
    previous_state: "queued",
    previous_state_known: true,
    previous_try_number: 1,
    source,
    ...over,
  });
}

describe("CloudEvents attributes", () => {
  it("maps a task instance's event to the binding's headers", () => {
    expect(new CloudEvents("urn:airflow-eventstream:7301:airflow").headersFor(ti())).toEqual({
      ce_specversion: "1.0",
      ce_id: "00000000016B3748-00000002",
      ce_source: "urn:airflow-eventstream:7301:airflow",
      ce_type: "org.apache.airflow.task_instance.state_changed",
      ce_time: "2026-11-25T08:17:27.123456Z",
      ce_subject: "etl/manual__2026-11-25T08:00:00+00:00/load",
      "content-type": "application/json",
    });
  });

  it("names a subject per type: mapped tasks with their index, '/' and '%' escaped, none for a gap or an unknown key", () => {
    expect(cloudEventSubject(ti({ map_index: 3 }))).toBe("etl/manual__2026-11-25T08:00:00+00:00/load/3");
    expect(cloudEventSubject(ti({ run_id: "a/b%c" }))).toBe("etl/a%2Fb%25c/load");
    expect(cloudEventSubject(ti({ op: "delete", dag_id: null, task_id: null, run_id: null, map_index: null } as never))).toBeUndefined();
    const run = { type: "dag_run", dag_id: "etl", run_id: "r1", source } as unknown as StreamEvent;
    expect(cloudEventSubject(run)).toBe("etl/r1");
    const truncated = { type: "table_truncated", tables: ["task_instance", "dag_run"], schema: "public", source } as StreamEvent;
    expect(cloudEventSubject(truncated)).toBe("task_instance,dag_run");
    expect(cloudEventSubject({ type: "stream_gap", source } as unknown as StreamEvent)).toBeUndefined();
    expect(new CloudEvents("s").headersFor({ type: "stream_gap", source } as unknown as StreamEvent)).not.toHaveProperty("ce_subject");
    const asset = (uri: string | null) =>
      ({ type: "asset_event", asset: { uri, name: null, group: null }, source }) as unknown as StreamEvent;
    expect(cloudEventSubject(asset("s3://bucket/orders.parquet"))).toBe("s3://bucket/orders.parquet");
    expect(cloudEventSubject(asset(null))).toBeUndefined();
    expect(Object.keys(CLOUDEVENT_TYPES).sort()).toEqual([
      "asset_event",
      "dag_run",
      "notification",
      "stream_gap",
      "table_truncated",
      "task_instance",
    ]);
  });

  it("makes the source from the cluster's system identifier and the database, or asks for the setting", () => {
    expect(cloudEventsSource({ systemIdentifier: "7301234567890123456", database: "air flow" })).toBe(
      "urn:airflow-eventstream:7301234567890123456:air%20flow",
    );
    expect(() => cloudEventsSource({ systemIdentifier: null, database: "airflow" })).toThrow(/EVENTSTREAM_CLOUDEVENTS_SOURCE/);
  });
});

describe("headers count toward the record's size", () => {
  // kafkajs's own record encoder (record format v2), to check the count against what is sent.
  const require = createRequire(import.meta.url);
  const encodeRecord = require("kafkajs/src/protocol/recordBatch/record/v0") as (r: {
    key: Buffer | null;
    value: Buffer;
    headers?: Record<string, string>;
  }) => { buffer: Buffer };

  it.each([
    ["ASCII", "etl"],
    ["multi-byte dag_id", "données_数"],
  ])("never under what kafkajs encodes (%s)", (_, dag) => {
    const event = ti({ dag_id: dag, run_id: "数".repeat(200) });
    const value = JSON.stringify(event);
    const headers = new CloudEvents("urn:airflow-eventstream:7301234567890123456:airflow").headersFor(event);
    const sent = encodeRecord({ key: Buffer.from(dag), value: Buffer.from(value), headers }).buffer.length;
    const plain = encodeRecord({ key: Buffer.from(dag), value: Buffer.from(value) }).buffer.length;
    expect(recordBytes(value, dag, headers)).toBeGreaterThanOrEqual(sent);
    expect(headersBytes(headers)).toBeGreaterThanOrEqual(sent - plain);
    // And not far over: at most the varints' slack (4 per length) per header.
    expect(headersBytes(headers) - (sent - plain)).toBeLessThanOrEqual(Object.keys(headers).length * 8);
    expect(recordBytes(value, dag, headers)).toBe(recordBytes(value, dag) + headersBytes(headers));
    // The per-event check's quick bound is never under the exact count.
    expect(headersBytesBound(headers)).toBeGreaterThanOrEqual(headersBytes(headers));
  });
});
