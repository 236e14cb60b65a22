import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { jsonSchemas } from "../../../src/airflow/json-schema.js";

describe("published JSON Schema files", () => {
  it.each(Object.keys(jsonSchemas()))("schemas/%s matches the zod schema (run `npm run schemas:json` after changing events.ts)", (name) => {
    const committed = JSON.parse(readFileSync(`schemas/${name}`, "utf8")) as unknown;
    expect(committed).toEqual(jsonSchemas()[name]);
  });
});
