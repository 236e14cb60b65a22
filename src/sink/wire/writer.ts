/**
 * The encode buffer of the wire producer: one scratch Buffer, grown geometrically and reused for
 * every request, written in place (no Buffer per record, no intermediate Buffer per string). What
 * leaves it is copied once, per request, into a Buffer of the exact size (finish()), because a
 * Buffer handed to socket.write must stay untouched until the write completes.
 */

/** Bytes of a zigzag varint of n (a non-negative int32 here: lengths and deltas). */
export function varintSize(n: number): number {
  let z = (n << 1) ^ (n >> 31);
  z >>>= 0;
  let size = 1;
  while (z >= 0x80) {
    z >>>= 7;
    size++;
  }
  return size;
}

export class Writer {
  buf: Buffer;
  pos = 0;

  constructor(initial = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  reset(): void {
    this.pos = 0;
  }

  /** Room for n more bytes: the buffer doubles (at least) and what was written is kept. */
  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  int8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
  }

  int16(v: number): void {
    this.ensure(2);
    this.buf.writeInt16BE(v, this.pos);
    this.pos += 2;
  }

  int32(v: number): void {
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
  }

  /** An int64 from a JS number (a timestamp: exact below 2^53), without BigInt. */
  int64(v: number): void {
    this.ensure(8);
    const hi = Math.floor(v / 0x1_0000_0000);
    this.buf.writeInt32BE(hi | 0, this.pos);
    this.buf.writeUInt32BE(v - hi * 0x1_0000_0000, this.pos + 4);
    this.pos += 8;
  }

  bigInt64(v: bigint): void {
    this.ensure(8);
    this.buf.writeBigInt64BE(v, this.pos);
    this.pos += 8;
  }

  /** Kafka's zigzag varint (int32). */
  varint(v: number): void {
    this.ensure(5);
    let z = ((v << 1) ^ (v >> 31)) >>> 0;
    const buf = this.buf;
    let pos = this.pos;
    while (z >= 0x80) {
      buf[pos++] = (z & 0x7f) | 0x80;
      z >>>= 7;
    }
    buf[pos++] = z;
    this.pos = pos;
  }

  /** A protocol STRING / NULLABLE_STRING: int16 length, UTF-8 bytes. */
  string(s: string | null): void {
    if (s === null) {
      this.int16(-1);
      return;
    }
    this.ensure(2 + s.length * 3);
    const n = this.buf.write(s, this.pos + 2, "utf8");
    this.buf.writeInt16BE(n, this.pos);
    this.pos += 2 + n;
  }

  /**
   * A record's key, value or header part: varint length (-1 for null), then the bytes. A string's
   * UTF-8 length lies in [length, 3 * length]; when both ends need the same varint size (always
   * below ~2,700 characters) its length prefix is reserved exactly and filled after the write, so
   * the string is neither measured first (Buffer.byteLength walks it once more) nor moved.
   * Otherwise the prefix is reserved for the longest case and the bytes moved back if shorter.
   */
  varBytes(v: string | Buffer | null | undefined): void {
    if (v === null || v === undefined) {
      this.varint(-1);
      return;
    }
    if (typeof v !== "string") {
      this.varint(v.length);
      this.ensure(v.length);
      v.copy(this.buf, this.pos);
      this.pos += v.length;
      return;
    }
    const reserve = varintSize(v.length * 3);
    // 5: room for varint()'s own check, so it never grows (and drops) the bytes just written.
    this.ensure(5 + v.length * 3);
    const start = this.pos;
    const n = this.buf.write(v, start + reserve, "utf8");
    const size = varintSize(n);
    if (size !== reserve) this.buf.copyWithin(start + size, start + reserve, start + reserve + n);
    this.varint(n);
    this.pos = start + size + n;
  }

  /** The bytes written so far, copied once into a Buffer of their own (safe to hand to a socket). */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }
}
