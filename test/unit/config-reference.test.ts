import { readFileSync } from "node:fs";
import { parseEnv } from "node:util";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defaultOf, generatedFiles, valuesOf } from "../../scripts/gen-config.ts";
import { loadConfig, SETTING_NAMES } from "../../src/config.js";
import { int, SETTINGS } from "../../src/config/settings.js";

describe("generated configuration files", () => {
  it.each(Object.keys(generatedFiles()))("%s is what `npm run config:docs` writes from src/config/settings.ts", (path) => {
    expect(readFileSync(path, "utf8")).toBe(generatedFiles()[path]);
  });

  it("docs/configuration.md names every setting", () => {
    const doc = generatedFiles()["docs/configuration.md"]!;
    for (const name of SETTING_NAMES) expect(doc).toContain(`| \`${name}\` |`);
  });

  it(".env.example as a .env gives the defaults: every value it shows is the one the daemon uses", () => {
    const example = parseEnv(readFileSync(".env.example", "utf8"));
    expect(Object.keys(example).sort()).toEqual([...SETTING_NAMES].sort());
    expect(loadConfig(example)).toEqual(loadConfig({}));
  });
});

describe("what the reference says a setting accepts comes from its schema", () => {
  it("defaults as written in the environment; none for an optional setting", () => {
    expect(defaultOf(SETTINGS.PGPORT.schema)).toBe("5432");
    expect(defaultOf(SETTINGS.KAFKA_SSL.schema)).toBe("false");
    expect(defaultOf(SETTINGS.EVENTSTREAM_TOPIC_TEMPLATE.schema)).toBe("");
    expect(defaultOf(SETTINGS.PGPASSWORD.schema)).toBeUndefined();
  });

  it("ranges, choices and kinds", () => {
    expect(valuesOf(int(-1, 32).default(-1))).toBe("whole number, -1 to 32");
    expect(valuesOf(SETTINGS.KAFKA_SASL_MECHANISM.schema)).toBe("`plain`, `scram-sha-256`, `scram-sha-512`");
    expect(valuesOf(SETTINGS.EVENTSTREAM_GAP_DETECTION.schema)).toContain("`true` or `false`");
    expect(valuesOf(SETTINGS.EVENTSTREAM_SLOT.schema)).toBe("lower-case PostgreSQL identifier");
    expect(valuesOf(SETTINGS.EVENTSTREAM_DEAD_LETTER_TOPIC.schema)).toBe("Kafka topic name");
    expect(valuesOf(z.string())).toBe("text");
  });
});
