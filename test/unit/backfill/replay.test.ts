import { Partitioners, type KafkaMessage } from "kafkajs";
import { describe, expect, it } from "vitest";
import { parseReplayArgs } from "../../../src/backfill/replay.js";
import { REPLAY_HEADER, REPLAY_SOURCE_HEADER, copyOf, jsonLine } from "../../../src/backfill/sinks.js";
import { partitionsOf, templatePattern } from "../../../src/backfill/window.js";
import { TargetError, UserActionError } from "../../../src/errors.js";
import { sanitizeTopic } from "../../../src/sink/routing.js";

function message(key: string | null, value: Buffer | null, headers: KafkaMessage["headers"] = {}): KafkaMessage {
  return {
    key: key === null ? null : Buffer.from(key),
    value,
    headers,
    offset: "42",
    timestamp: "1795594647123",
    attributes: 0,
  } as KafkaMessage;
}

describe("replay arguments", () => {
  it("reads every form, --dag with several values either way", () => {
    const a = parseReplayArgs(["--from", "16/B374D848", "--until", "2026-11-25T08:00:00Z", "--dag", "a", "b", "--dag", "c", "--stdout"]);
    expect(a).toMatchObject({ from: { kind: "position" }, until: { kind: "time" }, dags: ["a", "b", "c"], output: { kind: "stdout" } });
    expect(parseReplayArgs(["--to-topic", "out", "--from", "00000016B374D848-00000003"])).toMatchObject({
      until: null,
      dags: null,
      output: { kind: "topic", topic: "out" },
    });
  });

  it("refuses what is missing or unknown, saying so (exit code 2)", () => {
    expect(() => parseReplayArgs(["--stdout"])).toThrow(/--from is required/);
    expect(() => parseReplayArgs(["--from", "0/1"])).toThrow(/one of --to-topic NAME and --stdout/);
    expect(() => parseReplayArgs(["--from", "0/1", "--stdout", "--to-topic", "x"])).toThrow(/one of --to-topic/);
    expect(() => parseReplayArgs(["--from", "--stdout"])).toThrow(/--from needs a value/);
    expect(() => parseReplayArgs(["--from", "0/1", "--stdout", "--dags", "a"])).toThrow(UserActionError);
    expect(() => parseReplayArgs(["--from", "last tuesday", "--stdout"])).toThrow(TargetError);
  });
});

describe("the topics of a template", () => {
  it("matches the names the daemon gives, sanitised or not, and nothing else", () => {
    const p = templatePattern("airflow.{dag_id}.events");
    for (const dag of ["etl", "données", "a".repeat(300)]) expect(p.test(sanitizeTopic(`airflow.${dag}.events`)), dag).toBe(true);
    expect(p.test("airflow..events")).toBe(false);
    expect(p.test("airflowXetl.events")).toBe(false);
    expect(p.test("other.etl.events")).toBe(false);
  });
});

describe("the partitions of --dag in the one-topic layout", () => {
  it("are the ones the daemon's partitioner picks", () => {
    const partitioner = Partitioners.DefaultPartitioner();
    const meta = Array.from({ length: 6 }, (_, i) => ({ partitionId: i, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] }));
    const keys = ["alpha", "beta", "gamma", "données"];
    const want = new Set(keys.map((key) => partitioner({ topic: "t", partitionMetadata: meta, message: { key, value: null } })));
    expect(partitionsOf(keys, 6)).toEqual(want);
  });
});

describe("copies", () => {
  it("keep key, value and headers as bytes, add the replay's headers, and append to a replayed replay's", () => {
    const headers = { "trace-id": Buffer.from([0, 255]), [REPLAY_HEADER]: Buffer.from("older") };
    const m = copyOf({ topic: "t", partition: 2, message: message("dag", Buffer.from([1, 2, 3]), headers) }, "r1", 3);
    expect(m.key).toEqual(Buffer.from("dag"));
    expect(m.value).toEqual(Buffer.from([1, 2, 3]));
    expect(m.headers).toEqual({
      "trace-id": Buffer.from([0, 255]),
      [REPLAY_HEADER]: [Buffer.from("older"), "r1"],
      [REPLAY_SOURCE_HEADER]: "t/2/42",
    });
    expect(m.partition).toBeUndefined();
  });

  it("keep the partition of a record without a key (an event about every DAG)", () => {
    expect(copyOf({ topic: "t", partition: 4, message: message(null, Buffer.from("{}")) }, "r", 3).partition).toBe(1);
  });

  it("as JSON lines: the event parsed, other values as base64", () => {
    const event = { type: "dag_run", source: { position: "0000000000000010-00000000" } };
    const line = JSON.parse(
      jsonLine({ topic: "t", partition: 0, message: message("d", Buffer.from(JSON.stringify(event)), { h: Buffer.from("v") }) }),
    );
    expect(line).toEqual({
      topic: "t",
      partition: 0,
      offset: "42",
      key: "d",
      value: event,
      headers: { h: "v" },
      timestamp: "2026-11-25T08:17:27.123Z",
    });
    const other = JSON.parse(jsonLine({ topic: "t", partition: 0, message: message(null, Buffer.from([0xde, 0xad])) }));
    expect(other).toMatchObject({ key: null, value: null, value_base64: "3q0=" });
  });
});
