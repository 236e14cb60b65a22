import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { TransientError, TopicError } from "../../../src/errors.js";
import { explain, tooLargeFailure } from "../../../src/sink/kafka-errors.js";
import { KafkaProtocolError } from "../../../src/sink/wire/errors.js";

describe("explain: a record batch Kafka refuses as too large", () => {
  const cfg = loadConfig({ EVENTSTREAM_BATCH_MAX_BYTES: "500000", EVENTSTREAM_MAX_MESSAGE_BYTES: "600000" });

  it("from the wire producer: retried from the last acknowledged position, naming the limits to bring together", () => {
    const e = explain(cfg, new KafkaProtocolError(10, "producing to airflow.events[1]"), "publishing 2924 events");
    expect(e).toBeInstanceOf(TransientError);
    expect(e.message).toContain("publishing 2924 events to Kafka failed (producing to airflow.events[1]: MESSAGE_TOO_LARGE");
    expect(e.message).toContain("EVENTSTREAM_BATCH_MAX_BYTES=500000");
    expect(e.message).toContain("EVENTSTREAM_MAX_MESSAGE_BYTES=600000");
    expect(e.message).toContain("raise the topic's max.message.bytes, or lower both settings under it");
    expect(e.message).toContain("nothing is lost");
  });

  it("from kafkajs (its protocol error, wrapped by the retrier): the same", () => {
    const protocol = Object.assign(new Error("The request included a message larger than the max message size the server will accept"), {
      name: "KafkaJSProtocolError",
      type: "MESSAGE_TOO_LARGE",
      code: 10,
    });
    const wrapped = Object.assign(new Error("retries exhausted"), { name: "KafkaJSNumberOfRetriesExceeded", cause: protocol });
    expect(tooLargeFailure(wrapped)).toBe("MESSAGE_TOO_LARGE");
    expect(explain(cfg, wrapped, "publishing 3 events").message).toContain("Kafka refused a record batch as too large (MESSAGE_TOO_LARGE)");
    expect(tooLargeFailure(new KafkaProtocolError(18, "producing to t[0]"))).toBe("RECORD_LIST_TOO_LARGE");
  });

  it("other failures keep their own wording", () => {
    expect(tooLargeFailure(new KafkaProtocolError(6, "producing to t[0]"))).toBeUndefined();
    const e = explain(cfg, new KafkaProtocolError(6, "producing to t[0]"), "publishing 1 events");
    expect(e.message).toMatch(/resuming from the last acknowledged position$/);
    expect(explain(cfg, new KafkaProtocolError(29, "producing to t[0]"), "publishing 1 events")).toBeInstanceOf(TopicError);
  });
});
