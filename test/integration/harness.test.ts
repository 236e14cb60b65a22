import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kafka, logLevel } from "kafkajs";
import { consume, services, uniqueName } from "../support/harness.js";

/**
 * The harness's reader is what every integration test's verdict rests on: if it returned what it
 * had when time ran out, a daemon that publishes nothing would pass any test whose assertions
 * hold on an empty read.
 */
describe("consume(): a reader that fails when what it waits for never comes", () => {
  const topic = `${uniqueName("harness")}.events`;
  const kafka = new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId: "test-harness" });

  beforeAll(async () => {
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    } finally {
      await admin.disconnect();
    }
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({ topic, acks: -1, messages: [{ key: "k", value: JSON.stringify({ n: 1 }) }] });
    } finally {
      await producer.disconnect();
    }
  });

  afterAll(async () => {
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [topic] }).finally(() => admin.disconnect());
  });

  it("returns once `until` is satisfied", async () => {
    const got = await consume([topic], (all) => all.length >= 1, { timeoutMs: 30_000 });
    expect(got.map((m) => m.key)).toEqual(["k"]);
  });

  it("rejects on timeout, naming the topic, what it waited for and how many records it read", async () => {
    const err = await consume([topic], (all) => all.length >= 2, { timeoutMs: 3_000, waitingFor: "a second record" }).then(
      () => new Error("consume resolved"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    const message = (err as Error).message;
    expect(message).toContain(topic);
    expect(message).toContain("waiting for a second record");
    expect(message).toContain("read 1 records");
  });

  it("without a description, shows the `until` function instead", async () => {
    await expect(consume([topic], (all) => all.length >= 7, 3_000)).rejects.toThrow(/all\.length >= 7/);
  });

  it("with allowTimeout, returns what it read when the time is up", async () => {
    const got = await consume([topic], () => false, { timeoutMs: 3_000, allowTimeout: true });
    expect(got.map((m) => m.key)).toEqual(["k"]);
  });
});
