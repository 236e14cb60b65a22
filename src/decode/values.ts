/**
 * Text-format column value -> ColumnValue, by type OID (rules in types.ts). This is the hot path,
 * every column of every row (the benchmark's drain of 25,700 events/s of Airflow 3.x task_instance
 * rows, 39 columns each, is ~1M values/s): one switch on the OID, integers parsed straight from the
 * bytes, timestamps rewritten as strings; Date is only used when a UTC offset or a BC/expanded year
 * forces real calendar arithmetic.
 *
 * Assumes the replication session runs with `DateStyle=ISO` (timestamps look like
 * "2024-05-01 12:00:00.123456+00"); a timestamp in any other style is a DecodeError rather than a
 * silently different string. `TimeZone=UTC` is the fast path, other offsets are handled.
 */

import { DecodeError } from "./errors.js";
import type { ColumnValue } from "./types.js";

/** Built-in type OIDs (pg_type.oid, fixed across versions) that get a dedicated representation. */
export const TypeOid = {
  bool: 16,
  bytea: 17,
  char: 18,
  name: 19,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  json: 114,
  float4: 700,
  float8: 701,
  bpchar: 1042,
  varchar: 1043,
  timestamp: 1114,
  timestamptz: 1184,
  numeric: 1700,
  uuid: 2950,
  jsonb: 3802,
} as const;

/**
 * Decode one value sent as text. Types without a dedicated representation (uuid, text, date,
 * interval, arrays, enums, domains — a domain arrives with its own OID — ...) stay the UTF-8 text
 * PostgreSQL sent.
 */
export function decodeValue(typeOid: number, text: Buffer): ColumnValue {
  return decodeValueAt(typeOid, text, 0, text.length);
}

/** decodeValue of the bytes b[start, end): the row loop reads values in place in the message, with no view per value. */
export function decodeValueAt(typeOid: number, b: Buffer, start: number, end: number): ColumnValue {
  // Literal case labels on purpose: the optimiser compiles them to a jump table.
  switch (typeOid) {
    case 23: // int4
    case 21: // int2
    case 26: // oid
      return parseSmallInt(b, start, end);
    case 20: // int8
      return parseInt8(b, start, end);
    case 1184: // timestamptz
      return decodeTimestampAt(b, start, end, true);
    case 1114: // timestamp: the daemon treats timestamps without time zone as UTC
      return decodeTimestampAt(b, start, end, false);
    case 16: // bool
      return b[start] === 0x74; // 't'
    case 700: // float4
    case 701: {
      // float8; NaN / Infinity / -Infinity have no JSON form: keep PostgreSQL's spelling
      const s = b.toString("latin1", start, end);
      const n = Number(s);
      return Number.isFinite(n) ? n : s;
    }
    case 1700: // numeric: arbitrary precision, keep the exact text
      return b.toString("latin1", start, end);
    case 114: // json
    case 3802: {
      // jsonb
      const s = b.toString("utf8", start, end);
      try {
        return JSON.parse(s) as ColumnValue;
      } catch {
        return s;
      }
    }
    case 17: // bytea
      return decodeByteaAt(b, start, end) ?? decodeBytea(b.subarray(start, end));
    default:
      return b.toString("utf8", start, end);
  }
}

/** int2/int4/oid: at most 10 digits and a sign, exact in a double. */
function parseSmallInt(b: Buffer, start: number, end: number): number {
  let i = start;
  let neg = false;
  if (b[i] === 0x2d) {
    neg = true;
    i++;
  }
  if (i >= end) throw badNumber(b.subarray(start, end));
  let n = 0;
  for (; i < end; i++) {
    const d = (b[i] as number) - 0x30;
    if (d < 0 || d > 9) throw badNumber(b.subarray(start, end));
    n = n * 10 + d;
  }
  return neg ? -n : n;
}

/** int8: a number when exact (|v| <= 2^53 - 1), else the decimal string. */
function parseInt8(b: Buffer, start: number, end: number): number | string {
  // Up to 15 digits is always below 2^53: parse from the bytes.
  if (end - start <= 15) return parseSmallInt(b, start, end);
  const s = b.toString("latin1", start, end);
  const n = Number(s);
  // A decimal above MAX_SAFE_INTEGER never rounds to a safe integer, so this is exact.
  return Number.isSafeInteger(n) ? n : s;
}

function badNumber(b: Buffer): DecodeError {
  return new DecodeError(`integer column value ${JSON.stringify(b.toString("latin1"))} is not a decimal integer`);
}

/** Hex digit -> its value; -1 for any other byte. */
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) HEX[0x41 + c] = HEX[0x61 + c] = 10 + c;

/** Longest hex text (characters after "\\x") decoded in JS; longer values go to Buffer.from's native decoder. */
const SHORT_HEX = 256;

/**
 * A short bytea in hex format, decoded from the message's bytes: no latin1 string and native hex
 * call per value (Airflow writes a small pickled executor_config on every task-instance row).
 * null when it is not short, well-formed hex: decodeBytea then decides, as before.
 */
function decodeByteaAt(b: Buffer, start: number, end: number): Buffer | null {
  const chars = end - start - 2;
  if (chars < 0 || chars > SHORT_HEX || (chars & 1) !== 0 || b[start] !== 0x5c || b[start + 1] !== 0x78) return null;
  const out = Buffer.allocUnsafe(chars >> 1);
  for (let i = 0, at = start + 2; i < out.length; i++, at += 2) {
    const hi = HEX[b[at]!]!;
    const lo = HEX[b[at + 1]!]!;
    if (hi < 0 || lo < 0) return null;
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/** bytea: hex format ("\x48656c6c6f", bytea_output=hex, the default) or the legacy escape format. */
function decodeBytea(b: Buffer): Buffer {
  if (b[0] === 0x5c && b[1] === 0x78) return Buffer.from(b.toString("latin1", 2), "hex");
  // Escape format: "\\" is a backslash, "\ooo" an octal byte, anything else is itself.
  const out = Buffer.allocUnsafe(b.length);
  let o = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i] as number;
    if (c !== 0x5c) {
      out[o++] = c;
    } else if (b[i + 1] === 0x5c) {
      out[o++] = 0x5c;
      i += 1;
    } else {
      out[o++] = (((b[i + 1] as number) - 0x30) << 6) | (((b[i + 2] as number) - 0x30) << 3) | ((b[i + 3] as number) - 0x30);
      i += 3;
    }
  }
  return out.subarray(0, o);
}

const COLON = 0x3a;
const DASH = 0x2d;
const DOT = 0x2e;
const PLUS = 0x2b;

/**
 * ISO DateStyle timestamp text -> "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, all six fractional digits).
 * Input: "YYYY-MM-DD HH:MM:SS[.f{1,6}][±HH[:MM[:SS]]][ BC]" (the offset only with time zone; the
 * year may have more than 4 digits), or "infinity" / "-infinity", which are returned as is.
 */
export function decodeTimestamp(s: string, withZone: boolean): string {
  const c0 = s.charCodeAt(0);
  if (c0 === 0x69 /* i */ || c0 === DASH) return s; // "infinity", "-infinity" (BC years are a suffix, never a sign)
  const sp = s.indexOf(" ");
  // Date "Y...-MM-DD", then "HH:MM:SS".
  if (
    sp < 10 ||
    s.charCodeAt(sp - 3) !== DASH ||
    s.charCodeAt(sp - 6) !== DASH ||
    s.charCodeAt(sp + 3) !== COLON ||
    s.charCodeAt(sp + 6) !== COLON
  ) {
    throw notIso(s);
  }
  let i = sp + 9;
  let frac = "000000";
  if (s.charCodeAt(i) === DOT) {
    let end = i + 1;
    while (end < s.length && isDigit(s.charCodeAt(end))) end++;
    const digits = end - i - 1;
    frac = digits === 6 ? s.slice(i + 1, end) : (s.slice(i + 1, end) + "00000").slice(0, 6);
    i = end;
  }
  let offsetSecs = 0;
  if (withZone) {
    const sign = s.charCodeAt(i);
    if (sign !== PLUS && sign !== DASH) throw notIso(s);
    let off = twoDigits(s, i + 1) * 3600;
    i += 3;
    if (s.charCodeAt(i) === COLON) {
      off += twoDigits(s, i + 1) * 60;
      i += 3;
      if (s.charCodeAt(i) === COLON) {
        off += twoDigits(s, i + 1);
        i += 3;
      }
    }
    offsetSecs = sign === DASH ? -off : off;
  }
  let bc = false;
  if (i !== s.length) {
    if (s.length - i === 3 && s.endsWith(" BC")) bc = true;
    else throw notIso(s);
  }
  if (offsetSecs === 0 && !bc && sp === 10) {
    // The common case (TimeZone=UTC, years 1000-9999): pure string surgery. Joined, not a
    // template: a template is a tree of cons and sliced strings that keeps `s` alive, and a run's
    // context (run-context-cache.ts) keeps three of these for the whole session: ~27 heap objects
    // each for the collector to mark, against one.
    return [s.slice(0, 10), "T", s.slice(11, 19), ".", frac, "Z"].join("");
  }
  return shifted(s, sp, bc, offsetSecs, frac);
}

/** The common case's ISO text is assembled here (27 bytes) and read out as one string. */
const ISO_OUT = Buffer.alloc(27);
const SPACE = 0x20;

/**
 * decodeTimestamp of the bytes b[start, end). The common case (4-digit year, UTC: "+00" or none,
 * at most 6 fractional digits) is rearranged byte by byte and read out as one string: the text,
 * its three slices and their concatenation were ~400 B of garbage per timestamp, several per row.
 * Anything else goes the string way, which also says what is wrong with a value.
 */
function decodeTimestampAt(b: Buffer, start: number, end: number, withZone: boolean): string {
  const len = end - start;
  if (
    len < 19 ||
    b[start + 10] !== SPACE ||
    b[start + 4] !== DASH ||
    b[start + 7] !== DASH ||
    b[start + 13] !== COLON ||
    b[start + 16] !== COLON ||
    b[start] === DASH
  ) {
    return decodeTimestamp(b.toString("latin1", start, end), withZone);
  }
  let i = start + 19;
  let digits = 0;
  if (i < end && b[i] === DOT) {
    while (i + 1 + digits < end && isDigit(b[i + 1 + digits]!)) digits++;
    if (digits === 0 || digits > 6) return decodeTimestamp(b.toString("latin1", start, end), withZone);
    i += 1 + digits;
  }
  const utc = withZone ? end - i === 3 && b[i] === PLUS && b[i + 1] === 0x30 && b[i + 2] === 0x30 : i === end;
  if (!utc) return decodeTimestamp(b.toString("latin1", start, end), withZone);
  const out = ISO_OUT;
  for (let k = 0; k < 19; k++) out[k] = b[start + k]!;
  out[10] = 0x54; // T
  out[19] = DOT;
  for (let d = 0; d < 6; d++) out[20 + d] = d < digits ? b[start + 20 + d]! : 0x30;
  out[26] = 0x5a; // Z
  return out.toString("latin1", 0, 27);
}

/** The rare path: apply the UTC offset (or BC / 5+ digit year) with Date; microseconds kept aside. */
function shifted(s: string, sp: number, bc: boolean, offsetSecs: number, frac: string): string {
  const year = Number(s.slice(0, sp - 6));
  const d = new Date(0);
  // setUTCFullYear, not Date.UTC: Date.UTC maps years 0-99 to 1900-1999. 1 BC is year 0.
  d.setUTCFullYear(bc ? 1 - year : year, twoDigits(s, sp - 5) - 1, twoDigits(s, sp - 2));
  d.setUTCHours(twoDigits(s, sp + 1), twoDigits(s, sp + 4), twoDigits(s, sp + 7) - offsetSecs, 0);
  const t = d.getTime();
  // Beyond Date's ±275760 years (PostgreSQL allows up to 294276 AD): keep PostgreSQL's text.
  if (Number.isNaN(t)) return s;
  return [d.toISOString().slice(0, -4), frac, "Z"].join("");
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function twoDigits(s: string, at: number): number {
  const a = s.charCodeAt(at) - 0x30;
  const b = s.charCodeAt(at + 1) - 0x30;
  if (!(a >= 0 && a <= 9 && b >= 0 && b <= 9)) throw notIso(s);
  return a * 10 + b;
}

function notIso(s: string): DecodeError {
  return new DecodeError(
    `timestamp value ${JSON.stringify(s)} is not in ISO DateStyle: the replication connection must set ` +
      "DateStyle=ISO (and TimeZone=UTC); this is a bug in the connection setup",
  );
}
