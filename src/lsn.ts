/**
 * LSN arithmetic. An LSN is a 64-bit byte position in the WAL; PostgreSQL prints it as two hex
 * halves ("16/B374D848"). Compare and store it as a bigint: string comparison of "A/ABCD" and
 * "0000000A/0000ABCD" forms silently gives wrong answers (the same LSN sorts differently in each,
 * and libraries print both).
 */

/** A WAL position. Always a bigint: LSNs compare as numbers, never as strings. */
export type Lsn = bigint;

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function parseLsn(text: string): Lsn {
  const m = LSN_TEXT.exec(text.trim());
  if (!m) throw new TypeError(`not an LSN: ${JSON.stringify(text)} (expected the form "16/B374D848")`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** PostgreSQL's own text form, accepted by START_REPLICATION and pg_lsn. */
export function formatLsn(lsn: Lsn): string {
  const hi = Number(lsn >> 32n);
  const lo = Number(lsn & 0xffffffffn);
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/** Fixed-width hex, so that positions sort correctly as strings too. */
export function lsnHex16(lsn: Lsn): string {
  return lsn.toString(16).toUpperCase().padStart(16, "0");
}

export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return a > b ? a : b;
}
