import { describe, expect, it } from "vitest";
import { WIRE_HEADER_BYTES, eventJsonText, frameValue, framedSchemaId, parseEventValue } from "../../../src/sink/wire-format.js";

describe("the schema registry's wire format", () => {
  const json = JSON.stringify({ type: "dag_run", dag_id: "données", n: 1 });

  it("frames as magic byte 0, the 4-byte big-endian schema id, then the UTF-8 JSON", () => {
    const framed = frameValue(0x01020304, json);
    expect([...framed.subarray(0, WIRE_HEADER_BYTES)]).toEqual([0, 1, 2, 3, 4]);
    expect(framed.subarray(WIRE_HEADER_BYTES).toString("utf8")).toBe(json);
    expect(framed.length).toBe(WIRE_HEADER_BYTES + Buffer.byteLength(json, "utf8"));
    expect(framedSchemaId(framed)).toBe(0x01020304);
    expect(framedSchemaId(frameValue(0xffffffff, json))).toBe(0xffffffff);
  });

  it("reads framed and plain values alike, and tells them apart by the first byte", () => {
    expect(parseEventValue(frameValue(7, json))).toEqual(JSON.parse(json));
    expect(parseEventValue(Buffer.from(json))).toEqual(JSON.parse(json));
    expect(parseEventValue(json)).toEqual(JSON.parse(json));
    expect(eventJsonText(Buffer.from(` ${json}`))).toBe(` ${json}`);
    expect(framedSchemaId(Buffer.from(json))).toBeNull();
    expect(framedSchemaId(Buffer.from([0, 0, 1]))).toBeNull();
  });

  it("refuses what is neither", () => {
    expect(() => parseEventValue(Buffer.from([0, 0, 0, 0, 1, 0x7b]))).toThrow(SyntaxError);
    expect(() => parseEventValue(Buffer.from("not json"))).toThrow(SyntaxError);
  });
});
