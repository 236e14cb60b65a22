/**
 * LSN arithmetic, and the position of a change (its commit LSN and its index in the transaction). An LSN is a 64-bit byte position in the WAL; PostgreSQL prints it as two hex
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
  const [hi, lo] = hexHalves(lsn);
  return `${hi}/${lo}`;
}

/** The LSN's two 32-bit halves in upper-case hex, no padding: PostgreSQL's text form is "hi/lo". */
function hexHalves(lsn: Lsn): [string, string] {
  return [
    Number(lsn >> 32n)
      .toString(16)
      .toUpperCase(),
    Number(lsn & 0xffffffffn)
      .toString(16)
      .toUpperCase(),
  ];
}

/**
 * formatLsn(lsn) and the commit-LSN part of formatPosition ("<lsnHex16>-") at once, from the two
 * 32-bit halves: a transaction's events need both, and this is one BigInt split instead of three
 * BigInt operations and a BigInt toString.
 */
export function lsnTexts(lsn: Lsn): { text: string; positionPrefix: string } {
  const [hi, lo] = hexHalves(lsn);
  return { text: `${hi}/${lo}`, positionPrefix: `${hi.padStart(8, "0")}${lo.padStart(8, "0")}-` };
}

/** Fixed-width hex, so that positions sort correctly as strings too. */
export function lsnHex16(lsn: Lsn): string {
  return lsn.toString(16).toUpperCase().padStart(16, "0");
}

export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return a > b ? a : b;
}

/**
 * Where a row change sits in the source: the commit LSN of its transaction and its index within
 * that transaction. Unique per database and increasing along the stream, so it orders every event
 * ever published and survives re-delivery unchanged. Compared as (bigint, number), never as text:
 * "0/10" and "0000000000000010" are the same LSN, and only the fixed-width form sorts as a string.
 */
export interface Position {
  commitLsn: Lsn;
  index: number;
}

/** Negative when `a` comes before `b`, 0 when equal, positive after. */
export function comparePositions(a: Position, b: Position): number {
  if (a.commitLsn !== b.commitLsn) return a.commitLsn < b.commitLsn ? -1 : 1;
  return a.index - b.index;
}

/** True when the change at (commitLsn, index) is at or before `checkpoint`: already in Kafka. */
export function isAtOrBefore(commitLsn: Lsn, index: number, checkpoint: Position): boolean {
  return commitLsn < checkpoint.commitLsn || (commitLsn === checkpoint.commitLsn && index <= checkpoint.index);
}

/** The events' `source.position` form: commit LSN and index as fixed-width upper-case hex. */
export function formatPosition(p: Position): string {
  return `${lsnHex16(p.commitLsn)}-${positionIndex(p.index)}`;
}

/** The index's part of a position (after the "-"). */
export function positionIndex(index: number): string {
  return index < SMALL_INDICES.length ? SMALL_INDICES[index]! : formatIndex(index);
}

function formatIndex(index: number): string {
  return index.toString(16).toUpperCase().padStart(8, "0");
}

/** The first indices' parts made once: every event has one, and most transactions are small (three strings per event otherwise). */
const SMALL_INDICES = Array.from({ length: 1024 }, (_, i) => formatIndex(i));

const POSITION_TEXT = /^([0-9A-Fa-f]{16})-([0-9A-Fa-f]{8})$/;

export function parsePosition(text: string): Position {
  const m = POSITION_TEXT.exec(text);
  if (!m) throw new TypeError(`not a position: ${JSON.stringify(text)} (expected the form "00000000016B3748-00000000")`);
  return { commitLsn: BigInt(`0x${m[1]}`), index: Number.parseInt(m[2]!, 16) };
}
