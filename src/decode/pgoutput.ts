// Hand-written on purpose: pg-logical-replication's parser runs values through pg's global type parsers (timestamptz -> Date loses microseconds, unchanged TOAST -> undefined).

/**
 * Bytes -> PgoutputMessage for pgoutput protocol version 1. Values stay raw (offsets into the
 * input, no copy, no string conversion): values.ts converts them once the relation's column types
 * are known. Every message format below is from
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 * ("Logical Replication Message Formats"); field names in comments follow that page.
 *
 * Protocol version 1 only: versions 2+ insert an Int32 xid into messages of streamed transactions
 * and add message types (Stream Start 'S', Stream Prepare 'p', ...). A message longer or shorter
 * than v1 says, or a tag v1 does not have, is a DecodeError, never a guess.
 */

import { DecodeError } from "./errors.js";
import type { Lsn } from "../lsn.js";
import type { PgoutputMessage, RawColumn, RawTuple, Relation, RelationColumn } from "./types.js";
import { RAW_NULL, RAW_UNCHANGED, UNCHANGED } from "./types.js";

export { pgTimestampToIso, pgTimestampToMs } from "./timestamps.js";

/**
 * A read position in one message. Decoding is synchronous, so one module-level cursor is reused:
 * no per-message allocation for reader state.
 */
const EMPTY = Buffer.alloc(0);
let buf: Buffer = EMPTY;
let pos = 0;

function u8(): number {
  const v = buf[pos];
  if (v === undefined) throw truncated();
  pos += 1;
  return v;
}

function u16(): number {
  const v = buf.readUInt16BE(pos);
  pos += 2;
  return v;
}

function i32(): number {
  const v = buf.readInt32BE(pos);
  pos += 4;
  return v;
}

function u32(): number {
  const v = buf.readUInt32BE(pos);
  pos += 4;
  return v;
}

/** Int64 (XLogRecPtr): an LSN, unsigned. */
function lsn(): Lsn {
  const v = buf.readBigUInt64BE(pos);
  pos += 8;
  return v;
}

/** Int64 (TimestampTz): signed microseconds since 2000-01-01 00:00:00 UTC. */
function timestamp(): bigint {
  const v = buf.readBigInt64BE(pos);
  pos += 8;
  return v;
}

/** String: NUL-terminated, in the server encoding (UTF-8 assumed: the daemon requires it). */
function cstring(): string {
  const end = buf.indexOf(0, pos);
  if (end < 0) throw truncated();
  const s = buf.toString("utf8", pos, end);
  pos = end + 1;
  return s;
}

/** Byten: a view into the message, not a copy. */
function bytes(n: number): Buffer {
  const end = pos + n;
  if (n < 0 || end > buf.length) throw truncated();
  const v = buf.subarray(pos, end);
  pos = end;
  return v;
}

function truncated(): DecodeError {
  return new DecodeError(
    `pgoutput message '${tagName(buf[0])}' is truncated at byte ${pos} of ${buf.length}: ` +
      "the server sent a different message layout (protocol version mismatch?) or this decoder has a bug",
  );
}

function tagName(tag: number | undefined): string {
  if (tag === undefined) return "(empty)";
  return tag >= 0x20 && tag < 0x7f ? String.fromCharCode(tag) : `0x${tag.toString(16).padStart(2, "0")}`;
}

/**
 * TupleData: Int16 column count, then per column a Byte1 kind: 'n' null, 'u' unchanged TOASTed
 * value (not sent), 't' text (Int32 length + bytes), 'b' binary (Int32 length + bytes).
 * 'b' only appears when the slot is read with `binary 'true'`, which the daemon never requests; it is
 * passed on as bytes like 't' and would then be mis-read as text by values.ts, so don't enable it.
 */
function tuple(): RawTuple {
  const n = u16();
  // Its final size at once, filled by index: grown by push, the array went through four backing
  // stores (17, 41, 77, 131 slots for a 40-column row), ~2 KB of garbage per tuple.
  const at = new Array<number>(2 * n);
  for (let i = 0; i < n; i++) {
    const kind = u8();
    switch (kind) {
      case 0x74: // 't'
      case 0x62: {
        // 'b'
        const len = i32();
        const end = pos + len;
        if (len < 0 || end > buf.length) throw truncated();
        at[2 * i] = pos;
        at[2 * i + 1] = end;
        pos = end;
        break;
      }
      case 0x6e: // 'n'
        at[2 * i] = RAW_NULL;
        at[2 * i + 1] = 0;
        break;
      case 0x75: // 'u'
        at[2 * i] = RAW_UNCHANGED;
        at[2 * i + 1] = 0;
        break;
      default:
        throw new DecodeError(
          `pgoutput tuple column ${i} has unknown kind byte 0x${kind.toString(16).padStart(2, "0")} ` +
            `(expected 'n', 'u', 't' or 'b'): protocol version mismatch or a decoder bug`,
        );
    }
  }
  return { data: buf, at };
}

/** Column `i` of a tuple as a RawColumn (a view into the message for text): for tests and rare paths. */
export function rawColumn(t: RawTuple, i: number): RawColumn {
  const start = t.at[2 * i]!;
  if (start === RAW_NULL) return null;
  if (start === RAW_UNCHANGED) return UNCHANGED;
  return t.data.subarray(start, t.at[2 * i + 1]);
}

/** Every column of a tuple as RawColumns. */
export function rawColumns(t: RawTuple): RawColumn[] {
  return Array.from({ length: t.at.length / 2 }, (_, i) => rawColumn(t, i));
}

/** A RawTuple of the given columns (their bytes copied into one buffer): tests build messages with it. */
export function rawTuple(cols: readonly RawColumn[]): RawTuple {
  const parts: Buffer[] = [];
  const at: number[] = [];
  let pos = 0;
  for (const c of cols) {
    if (c === null) at.push(RAW_NULL, 0);
    else if (c === UNCHANGED) at.push(RAW_UNCHANGED, 0);
    else {
      at.push(pos, pos + c.length);
      parts.push(c);
      pos += c.length;
    }
  }
  return { data: Buffer.concat(parts), at };
}

/** The Byte1('K'|'O') before an old tuple. */
function oldKindOf(byte: number): "key" | "full" | null {
  if (byte === 0x4b) return "key"; // 'K'
  if (byte === 0x4f) return "full"; // 'O'
  return null;
}

function expectNewTupleMarker(): void {
  const b = u8();
  if (b !== 0x4e /* 'N' */) {
    throw new DecodeError(
      `pgoutput: expected new-tuple marker 'N' at byte ${pos - 1}, got 0x${b.toString(16).padStart(2, "0")}: ` +
        "protocol version mismatch or a decoder bug",
    );
  }
}

function relation(): Relation {
  // Relation: Int32 relation id, String namespace (empty for pg_catalog), String name,
  // Int8 replica identity (pg_class.relreplident), Int16 column count, then per column
  // Int8 flags (1 = part of the key), String name, Int32 type OID, Int32 type modifier.
  const id = u32();
  const schema = cstring();
  const name = cstring();
  const ident = u8();
  if (ident !== 0x64 && ident !== 0x6e && ident !== 0x66 && ident !== 0x69) {
    throw new DecodeError(`pgoutput relation ${schema}.${name} has unknown replica identity 0x${ident.toString(16)}: protocol mismatch`);
  }
  const n = u16();
  const columns: RelationColumn[] = [];
  for (let i = 0; i < n; i++) {
    const flags = u8();
    const colName = cstring();
    const typeOid = u32();
    const typeMod = i32();
    columns.push({ name: colName, typeOid, typeMod, isKey: (flags & 1) === 1 });
  }
  return { id, schema, name, replicaIdentity: String.fromCharCode(ident) as Relation["replicaIdentity"], columns };
}

function body(tag: number): PgoutputMessage {
  switch (tag) {
    case 0x42: // 'B' Begin: Int64 final LSN, Int64 commit timestamp, Int32 xid
      return { tag: "begin", finalLsn: lsn(), commitTime: timestamp(), xid: u32() };
    case 0x43: // 'C' Commit: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit timestamp
      return { tag: "commit", flags: u8(), commitLsn: lsn(), endLsn: lsn(), commitTime: timestamp() };
    case 0x4f: // 'O' Origin: Int64 commit LSN on the origin server, String origin name
      return { tag: "origin", originLsn: lsn(), name: cstring() };
    case 0x52: // 'R' Relation
      return { tag: "relation", relation: relation() };
    case 0x59: // 'Y' Type: Int32 type OID, String namespace (empty for pg_catalog), String name
      return { tag: "type", typeOid: u32(), schema: cstring(), name: cstring() };
    case 0x49: {
      // 'I' Insert: Int32 relation id, Byte1('N'), TupleData
      const relationId = u32();
      expectNewTupleMarker();
      return { tag: "insert", relationId, row: tuple() };
    }
    case 0x55: {
      // 'U' Update: Int32 relation id, optionally Byte1('K') or Byte1('O') + TupleData (old key /
      // old row), then Byte1('N') + TupleData (new row)
      const relationId = u32();
      let old: RawTuple | null = null;
      const oldKind = oldKindOf(buf[pos] ?? 0);
      if (oldKind !== null) {
        pos += 1;
        old = tuple();
      }
      expectNewTupleMarker();
      return { tag: "update", relationId, old, oldKind, row: tuple() };
    }
    case 0x44: {
      // 'D' Delete: Int32 relation id, Byte1('K') or Byte1('O'), TupleData
      const relationId = u32();
      const marker = u8();
      const oldKind = oldKindOf(marker);
      if (oldKind === null) {
        throw new DecodeError(
          `pgoutput delete: expected 'K' or 'O' before the old tuple, got 0x${marker.toString(16).padStart(2, "0")}: ` +
            "protocol version mismatch or a decoder bug",
        );
      }
      return { tag: "delete", relationId, old: tuple(), oldKind };
    }
    case 0x54: {
      // 'T' Truncate: Int32 relation count, Int8 options (1 = CASCADE, 2 = RESTART IDENTITY),
      // Int32 relation id per relation
      const n = u32();
      const options = u8();
      const relationIds: number[] = [];
      for (let i = 0; i < n; i++) relationIds.push(u32());
      return { tag: "truncate", relationIds, cascade: (options & 1) !== 0, restartIdentity: (options & 2) !== 0 };
    }
    case 0x4d: {
      // 'M' Message (pg_logical_emit_message, only with `messages 'true'`): Int8 flags
      // (1 = transactional), Int64 LSN, String prefix, Int32 length, Byten content
      const flags = u8();
      const at = lsn();
      const prefix = cstring();
      const content = bytes(i32());
      return { tag: "message", transactional: (flags & 1) !== 0, lsn: at, prefix, content };
    }
    default:
      throw new DecodeError(
        `unknown pgoutput message tag 0x${tag.toString(16).padStart(2, "0")} (${tagName(tag)}): ` +
          "this decoder supports protocol version 1 only; was the slot read with another proto_version " +
          "or with streaming/two_phase enabled?",
      );
  }
}

/**
 * Decode one pgoutput message (protocol version 1). Tuple values are offsets into `input` (and a
 * message's content a view of it): keep `input` unchanged while the message is in use.
 */
export function decodePgoutput(input: Buffer): PgoutputMessage {
  buf = input;
  pos = 0;
  try {
    const msg = body(u8());
    if (pos !== input.length) {
      throw new DecodeError(
        `pgoutput message '${tagName(input[0])}' has ${input.length - pos} unexpected trailing bytes ` +
          `(decoded ${pos} of ${input.length}): protocol version mismatch or a decoder bug`,
      );
    }
    return msg;
  } catch (e: unknown) {
    // Buffer.read* past the end throws a RangeError; say what was being read instead.
    if (e instanceof RangeError) throw Object.assign(truncated(), { cause: e });
    throw e;
  } finally {
    // Don't keep the last message alive through the module-level cursor.
    buf = EMPTY;
  }
}
