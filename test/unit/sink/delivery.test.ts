import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { ConfigError } from "../../../src/errors.js";
import { transactionalIdFor } from "../../../src/sink/kafka.js";
import { sentinelKey } from "../../../src/sink/checkpoint-topic.js";

describe("delivery settings", () => {
  it("defaults to at-least-once, with the shared checkpoint topic named", () => {
    const c = loadConfig({});
    expect(c.delivery).toBe("at-least-once");
    expect(c.checkpointTopic).toBe("airflow-eventstream.checkpoints");
  });

  it("reads exactly-once and a checkpoint topic", () => {
    const c = loadConfig({ EVENTSTREAM_DELIVERY: "exactly-once", EVENTSTREAM_CHECKPOINT_TOPIC: "ops.checkpoints" });
    expect(c).toMatchObject({ delivery: "exactly-once", checkpointTopic: "ops.checkpoints" });
  });

  it.each([
    [{ EVENTSTREAM_DELIVERY: "exactly_once" }, "EVENTSTREAM_DELIVERY"],
    [{ EVENTSTREAM_CHECKPOINT_TOPIC: "bad topic" }, "EVENTSTREAM_CHECKPOINT_TOPIC"],
    [{ EVENTSTREAM_DELIVERY: "exactly-once", EVENTSTREAM_CHECKPOINT_TOPIC: "airflow.events" }, "EVENTSTREAM_CHECKPOINT_TOPIC"],
    [
      { EVENTSTREAM_DELIVERY: "exactly-once", EVENTSTREAM_CHECKPOINT_TOPIC: "dlq", EVENTSTREAM_DEAD_LETTER_TOPIC: "dlq" },
      "EVENTSTREAM_CHECKPOINT_TOPIC",
    ],
  ])("refuses %o, naming %s", (env, name) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(name);
  });

  it("detects gaps in both modes by default; at-least-once may switch it off, exactly-once may not", () => {
    expect(loadConfig({}).gapDetection).toBe(true);
    expect(loadConfig({ EVENTSTREAM_DELIVERY: "exactly-once" }).gapDetection).toBe(true);
    expect(loadConfig({ EVENTSTREAM_GAP_DETECTION: "false" }).gapDetection).toBe(false);
    expect(() => loadConfig({ EVENTSTREAM_DELIVERY: "exactly-once", EVENTSTREAM_GAP_DETECTION: "false" })).toThrow(
      /EVENTSTREAM_GAP_DETECTION/,
    );
    // The checkpoint topic must be a topic of its own in at-least-once too, unless it is not used.
    expect(() => loadConfig({ EVENTSTREAM_CHECKPOINT_TOPIC: "airflow.events" })).toThrow(/EVENTSTREAM_CHECKPOINT_TOPIC/);
    expect(loadConfig({ EVENTSTREAM_CHECKPOINT_TOPIC: "airflow.events", EVENTSTREAM_GAP_DETECTION: "false" }).gapDetection).toBe(false);
  });

  it("derives one transactional id per slot, and sentinel keys no slot can have", () => {
    expect(transactionalIdFor("airflow_eventstream")).toBe("airflow-eventstream.airflow_eventstream");
    // Slot names are [a-z0-9_]: a key with a "." is never another slot's checkpoint key.
    expect(sentinelKey("airflow_eventstream")).toBe("airflow_eventstream.start");
    expect(() => loadConfig({ EVENTSTREAM_SLOT: sentinelKey("s") })).toThrow(ConfigError);
  });
});
