/** Reads a Kafka response body (big-endian, non-flexible versions: int16-length strings, int32-count arrays). */
export class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}

  int8(): number {
    return this.buf.readInt8(this.pos++);
  }

  int16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  int32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  int64(): bigint {
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  skip(n: number): void {
    this.pos += n;
  }

  string(): string | null {
    const n = this.int16();
    if (n < 0) return null;
    const s = this.buf.toString("utf8", this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** An ARRAY of what `item` reads (a null array reads as empty). */
  array<T>(item: (r: Reader) => T): T[] {
    const n = this.int32();
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(item(this));
    return out;
  }
}
