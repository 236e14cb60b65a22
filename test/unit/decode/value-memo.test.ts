import { describe, expect, it } from "vitest";
import { DecodeError } from "../../../src/decode/errors.js";
import { ValueMemo } from "../../../src/decode/value-memo.js";
import { decodeValue, TypeOid } from "../../../src/decode/values.js";

/** `text` inside a larger buffer, as a column sits inside its message. */
function inMessage(text: string): [Buffer, number, number] {
  const b = Buffer.from(`xx${text}yy`);
  return [b, 2, b.length - 2];
}

describe("ValueMemo", () => {
  it("decodes like decodeValue, whatever came before", () => {
    const memo = ValueMemo.for(TypeOid.timestamptz)!;
    const texts = [
      "2024-05-01 12:00:00.123456+00",
      "2024-05-01 12:00:00.123456+00",
      "2024-05-01 12:00:00.123457+00",
      "2024-05-01 12:00:00.123456+00",
    ];
    for (const t of texts) expect(memo.decode(...inMessage(t))).toBe(decodeValue(TypeOid.timestamptz, Buffer.from(t)));
  });

  it("tells apart values of equal length, and decodes long ones every time", () => {
    const memo = ValueMemo.for(TypeOid.varchar)!;
    expect(memo.decode(...inMessage("dag_a"))).toBe("dag_a");
    expect(memo.decode(...inMessage("dag_b"))).toBe("dag_b");
    expect(memo.decode(...inMessage("dag_b"))).toBe("dag_b");
    expect(memo.decode(...inMessage("dägb"))).toBe("dägb");
    const long = "x".repeat(100);
    expect(memo.decode(...inMessage(long))).toBe(long);
    expect(memo.decode(...inMessage("dag_b"))).toBe("dag_b");
    expect(memo.decode(...inMessage(""))).toBe("");
  });

  it("decodes exactly while it rests after many misses in a row, and after it (values remembered before the rest are compared, not trusted)", () => {
    const memo = ValueMemo.for(TypeOid.varchar)!;
    const seen: string[] = [];
    // 20 distinct values (a rest begins at the 16th), then a stretch of repeats and changes of equal length.
    for (let i = 0; i < 20; i++) seen.push(`id-${String(i).padStart(4, "0")}`);
    for (let i = 0; i < 600; i++) seen.push(i % 7 === 0 ? `id-${String(9000 + i).slice(-4)}` : "id-0015");
    for (const v of seen) expect(memo.decode(...inMessage(v))).toBe(v);
  });

  it("keeps nothing that fails to decode", () => {
    const memo = ValueMemo.for(TypeOid.int4)!;
    expect(memo.decode(...inMessage("42"))).toBe(42);
    expect(() => memo.decode(...inMessage("4x"))).toThrow(DecodeError);
    expect(memo.decode(...inMessage("42"))).toBe(42);
  });

  it("never shares objects: json, jsonb and bytea have no memo", () => {
    expect(ValueMemo.for(TypeOid.json)).toBeNull();
    expect(ValueMemo.for(TypeOid.jsonb)).toBeNull();
    expect(ValueMemo.for(TypeOid.bytea)).toBeNull();
  });
});
