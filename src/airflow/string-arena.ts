/**
 * Strings kept outside the JavaScript heap, for the state table (state-table.ts): each string a
 * chain of SLOT-byte slots in one growing byte arena, named by its first slot; the caller keeps
 * its UTF-16 length. A UTF-16 code unit below 0xff is one byte, any other is 0xff and its two
 * bytes, so every string round-trips exactly (lone surrogates included) and the usual ASCII names
 * take a byte a character. Freed chains are reused slot by slot, so churn does not grow the arena.
 */

const NONE = -1;
/** Bytes per slot: a 36-character row id in two, a typical task-instance name in three to five. */
const SLOT = 24;

export class StringArena {
  private bytesOf = new Uint8Array(0);
  /** The next slot of each slot's chain (NONE: the last); free slots are chained the same way. */
  private links = new Int32Array(0);
  private slotsUsed = 0;
  private freeSlots = NONE;
  /** Where write() puts the next byte. */
  private cursorSlot = NONE;
  private cursorPos = 0;

  constructor(slots: number) {
    this.grow(slots);
  }

  /** Bytes held (as allocated). */
  get bytes(): number {
    return this.bytesOf.byteLength + this.links.byteLength;
  }

  /** Writes `v` into a new chain; returns its first slot (NONE for ""). */
  write(v: string): number {
    if (v.length === 0) return NONE;
    const head = this.alloc();
    this.cursorSlot = head;
    this.cursorPos = 0;
    for (let i = 0; i < v.length; i++) {
      const u = v.charCodeAt(i);
      if (u < 0xff) this.put(u);
      else {
        this.put(0xff);
        this.put(u >>> 8);
        this.put(u & 0xff);
      }
    }
    return head;
  }

  /** Whether the chain at `head`, of v.length UTF-16 units, is `v` (nothing allocated). */
  holds(head: number, v: string): boolean {
    const { bytesOf: bytes, links } = this;
    let slot = head;
    let at = slot * SLOT;
    let pos = 0;
    for (let i = 0; i < v.length; i++) {
      const u = v.charCodeAt(i);
      if (pos === SLOT) {
        slot = links[slot]!;
        at = slot * SLOT;
        pos = 0;
      }
      if (u < 0xff) {
        if (bytes[at + pos++] !== u) return false;
        continue;
      }
      // 0xff, then the unit's high and low byte (each may start the next slot).
      if (bytes[at + pos++] !== 0xff) return false;
      for (let k = 0; k < 2; k++) {
        if (pos === SLOT) {
          slot = links[slot]!;
          at = slot * SLOT;
          pos = 0;
        }
        if (bytes[at + pos++] !== (k === 0 ? u >>> 8 : u & 0xff)) return false;
      }
    }
    return true;
  }

  /** The chain at `head`, of `len` UTF-16 units, as a new string. */
  read(head: number, len: number): string {
    const units = new Array<number>(len);
    const { bytesOf: bytes, links } = this;
    let slot = head;
    let pos = 0;
    const next = (): number => {
      if (pos === SLOT) {
        slot = links[slot]!;
        pos = 0;
      }
      return bytes[slot * SLOT + pos++]!;
    };
    for (let i = 0; i < len; i++) {
      const b = next();
      units[i] = b < 0xff ? b : (next() << 8) | next();
    }
    let out = "";
    for (let i = 0; i < len; i += 4096) out += String.fromCharCode(...units.slice(i, i + 4096));
    return out;
  }

  /** Returns the chain at `head` to the free slots (NONE: nothing). */
  free(head: number): void {
    if (head === NONE) return;
    let last = head;
    while (this.links[last] !== NONE) last = this.links[last]!;
    this.links[last] = this.freeSlots;
    this.freeSlots = head;
  }

  /** Forgets every chain (the memory stays allocated). */
  reset(): void {
    this.slotsUsed = 0;
    this.freeSlots = NONE;
  }

  private grow(slots: number): void {
    const bytes = new Uint8Array(slots * SLOT);
    bytes.set(this.bytesOf);
    const links = new Int32Array(slots);
    links.set(this.links);
    this.bytesOf = bytes;
    this.links = links;
  }

  private alloc(): number {
    if (this.freeSlots !== NONE) {
      const s = this.freeSlots;
      this.freeSlots = this.links[s]!;
      this.links[s] = NONE;
      return s;
    }
    // By half, not double: the arena is most of the table's memory, and a doubled one would
    // hold up to twice what its strings need.
    if (this.slotsUsed === this.links.length) this.grow(Math.ceil(this.links.length * 1.5));
    const s = this.slotsUsed++;
    this.links[s] = NONE;
    return s;
  }

  private put(b: number): void {
    if (this.cursorPos === SLOT) {
      const s = this.alloc();
      this.links[this.cursorSlot] = s;
      this.cursorSlot = s;
      this.cursorPos = 0;
    }
    this.bytesOf[this.cursorSlot * SLOT + this.cursorPos++] = b;
  }
}
