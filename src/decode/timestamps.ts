import { PG_EPOCH_OFFSET_US } from "./types.js";

/**
 * PostgreSQL TimestampTz (microseconds since 2000-01-01 UTC) -> ISO-8601 UTC with exactly six
 * fractional digits, e.g. "2024-05-01T12:00:00.123456Z". Years outside 0000-9999 come out in the
 * expanded form Date uses ("+010000-01-01T..."); the ±infinity sentinels as "infinity"/"-infinity".
 */
export function pgTimestampToIso(micros: bigint): string {
  // A transaction's BEGIN and COMMIT carry the same timestamp, and a drain reads many commits per
  // second: the last answer, and the last second's date-time prefix, are kept (this was ~2% of a
  // drain's CPU with BigInt division and a Date per call, twice per transaction).
  if (micros === lastMicros) return lastIso;
  if (micros === 0x7fffffffffffffffn) return "infinity";
  if (micros === -0x8000000000000000n) return "-infinity";
  let secs: number;
  let frac: number;
  if (micros > -SAFE_US && micros < SAFE_US) {
    // Exact in a double: |micros| + the epoch offset stays below 2^53.
    const unix = Number(micros) + PG_EPOCH_OFFSET_US_NUM;
    secs = Math.floor(unix / 1_000_000);
    frac = unix - secs * 1_000_000;
  } else {
    const unix = micros + PG_EPOCH_OFFSET_US;
    let s = unix / 1_000_000n;
    let f = unix % 1_000_000n;
    if (f < 0n) {
      f += 1_000_000n;
      s -= 1n;
    }
    secs = Number(s);
    frac = Number(f);
  }
  if (secs !== lastSecs) {
    lastSecs = secs;
    lastPrefix = new Date(secs * 1000).toISOString().slice(0, -4); // "....T..:..:..."
  }
  lastMicros = micros;
  lastIso = `${lastPrefix}${String(frac).padStart(6, "0")}Z`;
  return lastIso;
}

/** PostgreSQL TimestampTz -> milliseconds since the Unix epoch (what Date.parse of pgTimestampToIso would give, without the string). */
export function pgTimestampToMs(micros: bigint): number {
  return Math.floor(Number(micros) / 1000) + PG_EPOCH_OFFSET_MS;
}

const SAFE_US = 4_000_000_000_000_000n;
const PG_EPOCH_OFFSET_US_NUM = Number(PG_EPOCH_OFFSET_US);
const PG_EPOCH_OFFSET_MS = PG_EPOCH_OFFSET_US_NUM / 1000;
let lastMicros = -1n;
let lastIso = "";
let lastSecs = Number.NaN;
let lastPrefix = "";
