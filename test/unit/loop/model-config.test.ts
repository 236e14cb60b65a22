import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { modelConfig } from "../../../src/loop/maker.js";

describe("modelConfig: what the model thread is given", () => {
  it("crosses to a worker thread when the session's config holds a function (the Kafka client's SASL mechanism) and carries no secret", () => {
    const cfg = loadConfig(
      {
        KAFKA_SASL_MECHANISM: "scram-sha-256",
        KAFKA_SASL_USERNAME: "u",
        KAFKA_SASL_PASSWORD: "secret-pw",
        EVENTSTREAM_INCLUDE_DAGS: "etl_*",
      },
      new Map(),
    );
    // What kafkajs does to the object it is given for a custom mechanism.
    (cfg.kafka.sasl as unknown as Record<string, unknown>).authenticationProvider = () => undefined;
    expect(() => structuredClone(cfg)).toThrow(/could not be cloned/);
    const copy = structuredClone(modelConfig(cfg));
    expect(copy.filters.includeDags).toEqual(["etl_*"]);
    expect(copy.stateCacheSize).toBe(cfg.stateCacheSize);
    expect(JSON.stringify(copy)).not.toContain("secret-pw");
  });
});
