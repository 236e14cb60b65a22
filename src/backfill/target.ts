import { TargetError } from "../errors.js";
import { comparePositions, formatPosition, parseLsn, parsePosition, type Position } from "../lsn.js";
import { parseEventValue } from "../sink/wire-format.js";

/**
 * Where a backfill starts or ends, as a user writes it: an event's `source.position`
 * ("00000016B374D848-00000003"), an LSN ("16/B374D848", meaning position (lsn, 0): the first change
 * of the transaction committed there, or the first after it), or an ISO-8601 time compared with the
 * events' `source.commit_time`.
 */
export type Target =
  | { kind: "position"; position: Position; text: string }
  /** Microseconds since the epoch, UTC: commit times carry microseconds, which a Date would lose. */
  | { kind: "time"; micros: bigint; text: string };

/** What the search knows of a record: its position and commit time (microseconds since the epoch). */
export interface RecordKey {
  position: Position;
  commitMicros: bigint | null;
}

const TIME_TEXT = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2}))?$/;

/** Parses a --from/--until argument; a TargetError (a user error) says which forms are accepted. */
export function parseTarget(text: string): Target {
  const t = text.trim();
  if (/^[0-9A-Fa-f]{16}-[0-9A-Fa-f]{8}$/.test(t)) return { kind: "position", position: parsePosition(t), text: t };
  if (/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(t)) return { kind: "position", position: { commitLsn: parseLsn(t), index: 0 }, text: t };
  const micros = parseTimeMicros(t);
  if (micros !== null) return { kind: "time", micros, text: t };
  throw new TargetError(
    `${JSON.stringify(text)} is not a position, an LSN or a time: give an event's source.position ("00000016B374D848-00000003"), ` +
      `an LSN ("16/B374D848") or an ISO-8601 time with its zone ("2026-11-25T08:17:27Z", "2026-11-25T10:17:27+02:00", or a date "2026-11-25" for its UTC midnight)`,
  );
}

/**
 * An ISO-8601 time as microseconds since the epoch, or null when `text` is not one. A time of day
 * must carry its zone: the events' commit times are UTC, and a local time would shift the window by
 * the reader's offset without saying so. A date alone is its UTC midnight.
 */
export function parseTimeMicros(text: string): bigint | null {
  const m = TIME_TEXT.exec(text);
  if (!m) return null;
  const [, date, clock, fraction, zone] = m;
  const base = clock === undefined ? `${date}T00:00:00Z` : `${date}T${clock.length === 5 ? `${clock}:00` : clock}${zone}`;
  const ms = Date.parse(base);
  if (Number.isNaN(ms)) return null;
  // Date.parse rolls "2026-02-30" over to March; a date that does not exist is refused instead.
  if (new Date(Date.parse(`${date}T00:00:00Z`)).toISOString().slice(0, 10) !== date) return null;
  const frac = fraction === undefined ? 0n : BigInt(fraction.padEnd(6, "0").slice(0, 6));
  return BigInt(ms) * 1000n + frac;
}

/** The search key of a record value, or null when it has no readable `source.position` (see findOffsets). */
export function recordKey(value: Buffer | null): RecordKey | null {
  if (value === null) return null;
  let json: unknown;
  try {
    json = parseEventValue(value);
  } catch {
    return null;
  }
  if (typeof json !== "object" || json === null) return null;
  const source = (json as { source?: unknown }).source;
  if (typeof source !== "object" || source === null) return null;
  const { position, commit_time: commitTime } = source as { position?: unknown; commit_time?: unknown };
  if (typeof position !== "string" || !/^[0-9A-F]{16}-[0-9A-F]{8}$/.test(position)) return null;
  return { position: parsePosition(position), commitMicros: typeof commitTime === "string" ? parseTimeMicros(commitTime) : null };
}

/**
 * True when the record is at or after the target. A time target needs the record's commit time; a
 * record without one cannot be placed by time, so it is skipped by a time search (null).
 */
export function atOrAfter(key: RecordKey, target: Target): boolean | null {
  if (target.kind === "position") return comparePositions(key.position, target.position) >= 0;
  return key.commitMicros === null ? null : key.commitMicros >= target.micros;
}

/** "2026-11-25T08:17:27.123456Z" from microseconds since the epoch. */
export function formatMicros(micros: bigint): string {
  const iso = new Date(Number(micros / 1000n)).toISOString();
  return `${iso.slice(0, 19)}.${(micros % 1_000_000n).toString().padStart(6, "0")}Z`;
}

export function describeKey(key: RecordKey): string {
  return `${formatPosition(key.position)}${key.commitMicros === null ? "" : ` (committed ${formatMicros(key.commitMicros)})`}`;
}
