import { describe, expect, it } from "vitest";
import { DecodeError } from "../../../src/decode/errors.js";
import type { ColumnValue } from "../../../src/decode/types.js";
import { decodeTimestamp, decodeValue, decodeValueAt, TypeOid } from "../../../src/decode/values.js";

const t = (s: string): Buffer => Buffer.from(s, "utf8");

type Case = [name: string, oid: number, text: string, expected: ColumnValue];

const cases: Case[] = [
  // integers
  ["int2 min", TypeOid.int2, "-32768", -32768],
  ["int2 zero", TypeOid.int2, "0", 0],
  ["int4 max", TypeOid.int4, "2147483647", 2147483647],
  ["int4 min", TypeOid.int4, "-2147483648", -2147483648],
  ["oid max", TypeOid.oid, "4294967295", 4294967295],
  ["int8 small", TypeOid.int8, "42", 42],
  ["int8 15 digits", TypeOid.int8, "999999999999999", 999999999999999],
  ["int8 -15 digits", TypeOid.int8, "-999999999999999", -999999999999999],
  ["int8 MAX_SAFE_INTEGER", TypeOid.int8, "9007199254740991", 9007199254740991],
  ["int8 MAX_SAFE_INTEGER + 1", TypeOid.int8, "9007199254740992", "9007199254740992"],
  ["int8 MAX_SAFE_INTEGER + 2", TypeOid.int8, "9007199254740993", "9007199254740993"],
  ["int8 MIN_SAFE_INTEGER", TypeOid.int8, "-9007199254740991", -9007199254740991],
  ["int8 MIN_SAFE_INTEGER - 1", TypeOid.int8, "-9007199254740992", "-9007199254740992"],
  ["int8 max", TypeOid.int8, "9223372036854775807", "9223372036854775807"],
  ["int8 min", TypeOid.int8, "-9223372036854775808", "-9223372036854775808"],
  // floats and numeric
  ["float8", TypeOid.float8, "1.5", 1.5],
  ["float8 exponent", TypeOid.float8, "1e+308", 1e308],
  ["float8 tiny", TypeOid.float8, "5e-324", 5e-324],
  ["float8 NaN", TypeOid.float8, "NaN", "NaN"],
  ["float8 Infinity", TypeOid.float8, "Infinity", "Infinity"],
  ["float8 -Infinity", TypeOid.float8, "-Infinity", "-Infinity"],
  ["float4", TypeOid.float4, "0.1", 0.1],
  ["float4 NaN", TypeOid.float4, "NaN", "NaN"],
  ["numeric exact text", TypeOid.numeric, "12345678901234567890.123456789", "12345678901234567890.123456789"],
  ["numeric trailing zeros kept", TypeOid.numeric, "1.500", "1.500"],
  ["numeric NaN", TypeOid.numeric, "NaN", "NaN"],
  // bool
  ["bool t", TypeOid.bool, "t", true],
  ["bool f", TypeOid.bool, "f", false],
  // json
  ["jsonb object", TypeOid.jsonb, '{"a": 1, "b": [true, null, "x"]}', { a: 1, b: [true, null, "x"] }],
  ["json array", TypeOid.json, '[1,2.5,"é"]', [1, 2.5, "é"]],
  ["json scalar string", TypeOid.json, '"str"', "str"],
  ["jsonb scalar number", TypeOid.jsonb, "3", 3],
  ["jsonb null literal", TypeOid.jsonb, "null", null],
  ["json invalid kept as string", TypeOid.json, "{bad", "{bad"],
  // strings
  ["uuid", TypeOid.uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
  ["text utf8", TypeOid.text, "héllo ✓ 🚀", "héllo ✓ 🚀"],
  ["text empty", TypeOid.text, "", ""],
  ["varchar", TypeOid.varchar, "queued", "queued"],
  ["bpchar keeps padding", TypeOid.bpchar, "ab  ", "ab  "],
  ["name", TypeOid.name, "pg_catalog", "pg_catalog"],
  ['"char"', TypeOid.char, "r", "r"],
  ["date stays text", 1082, "2024-05-01", "2024-05-01"],
  ["interval stays text", 1186, "1 day 02:03:04.5", "1 day 02:03:04.5"],
  ["text[] stays text", 1009, '{a,"b c"}', '{a,"b c"}'],
  ["enum (user type oid) stays text", 16397, "running", "running"],
];

describe("decodeValue", () => {
  it.each(cases)("%s", (_name, oid, text, expected) => {
    expect(decodeValue(oid, t(text))).toStrictEqual(expected);
  });

  it("decodes hex bytea in place as Buffer.from(hex) does, short or long, well-formed or not", () => {
    const rnd = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff));
    const texts = [0, 1, 2, 13, 127, 128, 129, 500].map((n) => `\\x${rnd(n).toString("hex")}`);
    texts.push("\\xABcd09", "\\xabc", "\\xa", "\\xzz01", "\\x01zz", "\\x0g");
    for (const text of texts) {
      const msg = Buffer.concat([Buffer.from("ab"), t(text), Buffer.from("\\x")]);
      const v = decodeValueAt(TypeOid.bytea, msg, 2, 2 + text.length);
      expect(Buffer.isBuffer(v)).toBe(true);
      expect([...(v as Buffer)]).toStrictEqual([...Buffer.from(text.slice(2), "hex")]);
    }
  });

  it("keeps the sign of float -0", () => {
    expect(Object.is(decodeValue(TypeOid.float8, t("-0")), -0)).toBe(true);
  });

  it.each([
    ["hex", "\\xdeadbeef00", [0xde, 0xad, 0xbe, 0xef, 0x00]],
    ["hex upper case", "\\xDEADBEEF", [0xde, 0xad, 0xbe, 0xef]],
    ["hex empty", "\\x", []],
    ["escape format", "a\\\\b\\001\\377", [0x61, 0x5c, 0x62, 0x01, 0xff]],
    ["escape format, plain", "abc", [0x61, 0x62, 0x63]],
  ])("bytea %s", (_name, text, bytes) => {
    const v = decodeValue(TypeOid.bytea, t(text));
    expect(Buffer.isBuffer(v)).toBe(true);
    expect([...(v as Buffer)]).toStrictEqual(bytes);
  });

  it.each([
    ["int4", TypeOid.int4, "abc"],
    ["int4 empty", TypeOid.int4, ""],
    ["int2 sign only", TypeOid.int2, "-"],
    ["int8 with dot", TypeOid.int8, "1.5"],
  ])("rejects a non-integer %s", (_name, oid, text) => {
    expect(() => decodeValue(oid, t(text))).toThrow(DecodeError);
  });
});

describe("decodeValue timestamps", () => {
  const tz: [string, string][] = [
    // fraction lengths 0-6, UTC
    ["2024-05-01 12:00:00+00", "2024-05-01T12:00:00.000000Z"],
    ["2024-05-01 12:00:00.1+00", "2024-05-01T12:00:00.100000Z"],
    ["2024-05-01 12:00:00.12+00", "2024-05-01T12:00:00.120000Z"],
    ["2024-05-01 12:00:00.123+00", "2024-05-01T12:00:00.123000Z"],
    ["2024-05-01 12:00:00.1234+00", "2024-05-01T12:00:00.123400Z"],
    ["2024-05-01 12:00:00.12345+00", "2024-05-01T12:00:00.123450Z"],
    ["2024-05-01 12:00:00.123456+00", "2024-05-01T12:00:00.123456Z"],
    ["2024-05-01 12:00:00.000001+00", "2024-05-01T12:00:00.000001Z"],
    // offsets: hours, hours:minutes, hours:minutes:seconds (local mean time), both signs
    ["2024-05-01 17:30:00.123456+05:30", "2024-05-01T12:00:00.123456Z"],
    ["2024-05-01 09:00:00.5-03", "2024-05-01T12:00:00.500000Z"],
    ["2024-05-01 14:00:00+02", "2024-05-01T12:00:00.000000Z"],
    ["2024-05-02 01:59:59.999999+14", "2024-05-01T11:59:59.999999Z"],
    ["2024-05-01 02:15:00.000001-09:45", "2024-05-01T12:00:00.000001Z"],
    ["1900-01-01 00:19:32.000001+00:19:32", "1900-01-01T00:00:00.000001Z"],
    ["1899-12-31 20:53:32.000001-03:06:28", "1900-01-01T00:00:00.000001Z"],
    // offsets that move the date across day, month, year and leap-day boundaries
    ["2025-01-01 04:00:00.5+05:30", "2024-12-31T22:30:00.500000Z"],
    ["2024-02-29 21:00:00-03", "2024-03-01T00:00:00.000000Z"],
    ["2024-03-01 01:00:00+02", "2024-02-29T23:00:00.000000Z"],
    // special values, far years
    ["infinity", "infinity"],
    ["-infinity", "-infinity"],
    ["0044-03-15 12:00:00+00 BC", "-000043-03-15T12:00:00.000000Z"],
    ["0001-01-01 00:00:00+00 BC", "0000-01-01T00:00:00.000000Z"],
    ["0099-06-01 00:00:00.25+00", "0099-06-01T00:00:00.250000Z"],
    ["0099-06-01 02:00:00.25+02", "0099-06-01T00:00:00.250000Z"],
    ["10000-01-01 00:00:00+00", "+010000-01-01T00:00:00.000000Z"],
    ["9999-12-31 23:59:59.999999+00", "9999-12-31T23:59:59.999999Z"],
  ];
  it.each(tz)("timestamptz %s", (text, iso) => {
    expect(decodeValue(TypeOid.timestamptz, t(text))).toBe(iso);
  });

  it("reads a timestamp in place in a message byte by byte exactly as decodeTimestamp reads its text", () => {
    const texts = [...tz.map(([text]) => text), "2024-05-01 12:00:00.+00", "2024-05-01 12:00:00.1234567+00", "2024-05-01 12:00:00+00:00"];
    for (const text of texts) {
      // Surrounded by other bytes, as the value sits in a pgoutput message.
      const msg = Buffer.concat([Buffer.from("x9+"), t(text), Buffer.from("00 ")]);
      const at = (oid: number) => {
        try {
          return decodeValueAt(oid, msg, 3, 3 + text.length);
        } catch (e: unknown) {
          return e instanceof DecodeError ? "DecodeError" : e;
        }
      };
      const own = (oid: number) => {
        try {
          return decodeTimestamp(text, oid === TypeOid.timestamptz);
        } catch (e: unknown) {
          return e instanceof DecodeError ? "DecodeError" : e;
        }
      };
      expect(at(TypeOid.timestamptz)).toBe(own(TypeOid.timestamptz));
      expect(at(TypeOid.timestamp)).toBe(own(TypeOid.timestamp));
    }
  });

  const naive: [string, string][] = [
    ["2024-05-01 12:00:00", "2024-05-01T12:00:00.000000Z"],
    ["2024-05-01 12:00:00.5", "2024-05-01T12:00:00.500000Z"],
    ["2024-05-01 12:00:00.123456", "2024-05-01T12:00:00.123456Z"],
    ["0044-03-15 12:00:00 BC", "-000043-03-15T12:00:00.000000Z"],
    ["infinity", "infinity"],
    ["-infinity", "-infinity"],
  ];
  it.each(naive)("timestamp (without time zone, as UTC) %s", (text, iso) => {
    expect(decodeValue(TypeOid.timestamp, t(text))).toBe(iso);
  });

  it.each([
    ["Postgres DateStyle", TypeOid.timestamptz, "Wed May 01 12:00:00.123456 2024 UTC"],
    ["SQL DateStyle", TypeOid.timestamptz, "05/01/2024 12:00:00.123456 UTC"],
    ["German DateStyle", TypeOid.timestamptz, "01.05.2024 12:00:00.123456 UTC"],
    ["missing offset", TypeOid.timestamptz, "2024-05-01 12:00:00.123456"],
    ["offset on a timestamp without time zone", TypeOid.timestamp, "2024-05-01 12:00:00+00"],
    ["garbage after", TypeOid.timestamptz, "2024-05-01 12:00:00+00 XYZ"],
  ])("rejects %s, telling to set DateStyle=ISO", (_name, oid, text) => {
    expect(() => decodeValue(oid, t(text))).toThrow(/DateStyle=ISO/);
    expect(() => decodeValue(oid, t(text))).toThrow(DecodeError);
  });
});
