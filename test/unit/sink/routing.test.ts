import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../../../src/airflow/events.js";
import { TopicRouter, sanitizeTopic } from "../../../src/sink/routing.js";
import { dagRunEvent, taskInstanceEvent } from "../../support/events.js";

const source = {
  commit_lsn: "0/16B3748",
  xid: 750,
  index: 0,
  position: "00000000016B3748-00000000",
  commit_time: "2026-11-25T08:17:27.123456Z",
};
function taskInstance(dagId: string): StreamEvent {
  return taskInstanceEvent({
    dag_id: dagId,
    task_id: "t",
    run_id: "r",
    state: "running",
    previous_state: "queued",
    previous_state_known: true,
    previous_try_number: 1,
    source,
  });
}

function dagRun(dagId: string): StreamEvent {
  return dagRunEvent({ op: "insert", dag_id: dagId, run_id: "r", state: "queued", previous_state_known: true, source });
}

function notification(dagId: string): StreamEvent {
  return {
    type: "notification",
    dag_id: dagId,
    task_id: "t",
    run_id: "r",
    map_index: -1,
    try_number: 1,
    logical_date: null,
    time: source.commit_time,
    xcom_key: "eventstream",
    request_id: null,
    start: null,
    end: null,
    metadata: null,
    payload: null,
    payload_uri: null,
    files: null,
    error: null,
    source,
  };
}

const truncated: StreamEvent = { type: "table_truncated", tables: ["task_instance"], schema: "public", source };

const hash16 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex").slice(0, 16);

describe("TopicRouter.route: topic and Kafka key of every kind of event", () => {
  const single = new TopicRouter("airflow.events", null);
  const perDag = new TopicRouter("airflow.events", "airflow.{dag_id}");
  it.each([
    ["task_instance, one topic", single, taskInstance("etl"), { topic: "airflow.events", key: "etl", allPartitions: false }],
    ["dag_run, one topic", single, dagRun("etl"), { topic: "airflow.events", key: "etl", allPartitions: false }],
    ["notification, one topic", single, notification("etl"), { topic: "airflow.events", key: "etl", allPartitions: false }],
    [
      "task_instance, per DAG",
      perDag,
      taskInstance("etl-daily_v2.x"),
      { topic: "airflow.etl-daily_v2.x", key: "etl-daily_v2.x", allPartitions: false },
    ],
    ["dag_run, per DAG", perDag, dagRun("etl"), { topic: "airflow.etl", key: "etl", allPartitions: false }],
    ["notification, per DAG", perDag, notification("etl"), { topic: "airflow.etl", key: "etl", allPartitions: false }],
    [
      "non-ASCII dag_id, per DAG: sanitised, hashed; the key is the dag_id as is",
      perDag,
      taskInstance("données"),
      { topic: `airflow.donn_es-${hash16("airflow.données")}`, key: "données", allPartitions: false },
    ],
    ["table_truncated, one topic: every partition, no key", single, truncated, { topic: "airflow.events", key: null, allPartitions: true }],
    [
      "table_truncated, per DAG: the single topic, every partition",
      perDag,
      truncated,
      { topic: "airflow.events", key: null, allPartitions: true },
    ],
  ])("%s", (_, router, event, route) => {
    expect(router.route(event)).toStrictEqual(route);
  });

  it("a delete whose dag_id is unknown (3.x, row not seen): the single topic, null key", () => {
    const e = { ...taskInstance("x"), op: "delete", dag_id: null } as StreamEvent;
    expect(perDag.route(e)).toStrictEqual({ topic: "airflow.events", key: null, allPartitions: false });
  });
});

describe("sanitizeTopic", () => {
  it.each([
    ["legal: unchanged", "airflow.ok-name_1", "airflow.ok-name_1"],
    ["space and slash", "airflow.with space/slash", `airflow.with_space_slash-${hash16("airflow.with space/slash")}`],
    ["non-ASCII", "airflow.ünïcode", `airflow._n_code-${hash16("airflow.ünïcode")}`],
    [".", ".", `.-${hash16(".")}`],
    ["..", "..", `..-${hash16("..")}`],
  ])("%s: %j -> %j", (_, input, out) => {
    expect(sanitizeTopic(input)).toBe(out);
  });

  it.each([
    ["two accented spellings", "airflow.données", "airflow.donnàes"],
    ["accented and its sanitised form", "airflow.données", "airflow.donn_es"],
    ["two scripts", "airflow.データ", "airflow.数据"],
    ["over-long, differing at the end", `airflow.${"a".repeat(250)}`, `airflow.${"a".repeat(249)}b`],
    ["over-long non-ASCII, differing at the end", `airflow.${"é".repeat(250)}`, `airflow.${"é".repeat(249)}è`],
  ])("distinct names stay distinct: %s", (_, a, b) => {
    const ta = sanitizeTopic(a);
    const tb = sanitizeTopic(b);
    expect(ta).not.toBe(tb);
    for (const t of [ta, tb]) {
      expect(t).toMatch(/^[a-zA-Z0-9._-]+$/);
      expect(t.length).toBeLessThanOrEqual(249);
    }
  });

  it("is stable: the same name gives the same topic on every start", () => {
    expect(sanitizeTopic("airflow.données")).toBe(`airflow.donn_es-${hash16("airflow.données")}`);
    expect(new TopicRouter("x", "airflow.{dag_id}").topicFor("données")).toBe(sanitizeTopic("airflow.données"));
  });

  it("keeps over-long names at exactly 249 characters, ending in the hash", () => {
    const long = `airflow.${"a".repeat(250)}`;
    expect(sanitizeTopic(long)).toBe(`${long.slice(0, 249 - 17)}-${hash16(long)}`);
    expect(sanitizeTopic(long).length).toBe(249);
  });
});
