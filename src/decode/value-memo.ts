import type { ColumnValue } from "./types.js";
import { decodeValueAt } from "./values.js";

/** Values longer than this are decoded every time: the comparison would cost what it saves. */
const MAX_BYTES = 64;

/**
 * A column whose values never repeat (task_instance.id, a heartbeat's microsecond timestamp) only
 * pays for the memo: a comparison and a copy per value. After this many misses in a row it is
 * decoded directly for the next REST values, then the memo is tried again (a column's values can
 * start repeating: a scheduler wave after worker updates).
 */
const GIVE_UP_AFTER = 16;
const REST = 256;

/** Types whose decoded value is an object (json/jsonb, bytea): never shared between rows, since a consumer could change it. */
const OBJECT_TYPES = new Set([114, 3802, 17]);

/**
 * One column's last decoded value and its bytes. Consecutive rows of a table repeat many values
 * (pool, queue, executor, span_status on every task instance; dag_id, run_id and the transaction's
 * now() across a scheduler wave), and decoding text means a native call and a new string per
 * column. When the bytes equal the last ones, the same string (or number) is handed out again: a
 * string is a value, so sharing it changes nothing a consumer can see. The bytes are copied (at
 * most 64): holding a view would keep the replication stream's whole input chunk alive.
 */
export class ValueMemo {
  private readonly bytes = new Uint8Array(MAX_BYTES);
  private len = -1;
  private value: ColumnValue = null;
  /** Misses in a row; at GIVE_UP_AFTER the memo rests for REST values. */
  private misses = 0;
  private resting = 0;

  private constructor(private readonly typeOid: number) {}

  /** A memo for a column of this type, or null when its values must not be shared. */
  static for(typeOid: number): ValueMemo | null {
    return OBJECT_TYPES.has(typeOid) ? null : new ValueMemo(typeOid);
  }

  /** decodeValueAt(typeOid, data, start, end), the last value again when the bytes are the same. */
  decode(data: Buffer, start: number, end: number): ColumnValue {
    const len = end - start;
    if (len > MAX_BYTES) return decodeValueAt(this.typeOid, data, start, end);
    if (this.resting > 0) {
      this.resting--;
      return decodeValueAt(this.typeOid, data, start, end);
    }
    const bytes = this.bytes;
    if (len === this.len) {
      let i = 0;
      while (i < len && bytes[i] === data[start + i]) i++;
      if (i === len) {
        this.misses = 0;
        return this.value;
      }
    }
    // Decoded before it is remembered: a value that fails to decode (DecodeError) leaves the memo as it was.
    const value = decodeValueAt(this.typeOid, data, start, end);
    for (let i = 0; i < len; i++) bytes[i] = data[start + i]!;
    this.len = len;
    this.value = value;
    if (++this.misses >= GIVE_UP_AFTER) {
      this.misses = 0;
      this.resting = REST;
    }
    return value;
  }
}
