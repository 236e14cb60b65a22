import { describe, expect, it } from "vitest";
import { TopicRouter, sanitizeTopic } from "../../../src/sink/routing.js";

describe("TopicRouter", () => {
  it("uses the single topic without a template", () => {
    expect(new TopicRouter("airflow.events", null).topicFor("etl")).toBe("airflow.events");
  });

  it("fills the template with the dag_id", () => {
    expect(new TopicRouter("x", "airflow.{dag_id}").topicFor("etl-daily_v2.x")).toBe("airflow.etl-daily_v2.x");
  });

  it("routes events without a dag_id to the single topic", () => {
    expect(new TopicRouter("airflow.events", "airflow.{dag_id}").topicFor(null)).toBe("airflow.events");
  });
});

describe("sanitizeTopic", () => {
  it.each([
    ["airflow.ok-name_1", "airflow.ok-name_1"],
    ["airflow.with space/slash", "airflow.with_space_slash"],
    ["airflow.ünïcode", "airflow._n_code"],
    [".", "_"],
    ["..", "__"],
  ])("%j -> %j", (input, out) => {
    expect(sanitizeTopic(input)).toBe(out);
  });

  it("keeps long names within 249 characters and distinct", () => {
    const a = sanitizeTopic(`airflow.${"a".repeat(250)}`);
    const b = sanitizeTopic(`airflow.${"a".repeat(249)}b`);
    expect(a.length).toBe(249);
    expect(b.length).toBe(249);
    expect(a).not.toBe(b);
    expect(a).toMatch(/^[a-zA-Z0-9._-]+$/);
  });
});
