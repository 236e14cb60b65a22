/**
 * A least-recently-used table from a string key to a few numbers and strings, kept in typed arrays
 * outside the JavaScript heap: the task-instance state cache (task-instance.ts).
 *
 * Why not a Map (state-cache.ts): that cache is most of what the daemon keeps alive (25,000 task
 * instances by default, each a row id, a name and a state object, with the Map's slots), and V8's
 * old-generation collector marks every live object each time it runs, which under the launcher's
 * old-space limit is every ~12-15 MB promoted. With the cache's objects out of the heap, a collection has
 * ~75,000 fewer objects to mark and a move to the newest end is four index writes, not a Map
 * delete and insert (whose holes make V8 rebuild the Map's ~1 MB table again and again).
 * Measured in bench/README.md ("The state cache off the heap"). No npm library keeps string-keyed
 * entries outside the heap (lru-cache and the like are Maps of objects), so this is written here.
 *
 * Layout:
 * - entries: numbered 0..; per entry `numbers` Float64 columns (NaN by default, so that null can
 *   be told apart by the caller) and `strings` string columns, column 0 the key;
 * - strings: chains of SLOT-byte slots in one growing byte arena. A UTF-16 code unit below 0xff is
 *   one byte, any other is 0xff and its two bytes, so every string round-trips exactly (lone
 *   surrogates included) and the usual ASCII names take a byte a character;
 * - the index: open addressing with linear probing over a power-of-two table of entry numbers, at
 *   most half full, deletes by backward shift (no tombstones to clean up);
 * - recency: a doubly linked list of entries through two Int32Arrays, newest first.
 *
 * Everything grows as entries come (the entry arrays and the index by doubling, up to `capacity`
 * entries; the arena by half), so a large EVENTSTREAM_STATE_CACHE_SIZE costs memory only as rows
 * are seen.
 */

const NONE = -1;
/** Bytes per arena slot: a 36-character row id in two, a typical name in three to five. */
const SLOT = 24;
const FIRST_ENTRIES = 1024;

export interface TableShape {
  /** Float64 columns per entry. */
  numbers: number;
  /** String columns per entry besides the key (a null string is kept as such). */
  strings: number;
  /**
   * A second index on string column 1: findBy answers which entry was last given that string
   * (a second name of the same row, looked up without a second table that would copy it).
   */
  secondIndex?: boolean;
}

export class OffHeapLru {
  private readonly numCols: number;
  /** The key is string column 0. */
  private readonly strCols: number;
  private allocated = 0;
  private nums = new Float64Array(0);
  /** First arena slot of each string column (NONE: empty or null). */
  private heads = new Int32Array(0);
  /** UTF-16 length of each string column; -1 for null. */
  private lens = new Int32Array(0);
  /** The key's mixed hash. */
  private hashes = new Int32Array(0);
  private older = new Int32Array(0);
  private newer = new Int32Array(0);
  private newest = NONE;
  private oldest = NONE;
  private count = 0;
  /** Entries below this were handed out; freed ones are chained through `newer`. */
  private used = 0;
  private freeEntries = NONE;

  private table = new Int32Array(0);
  private mask = 0;
  /** The second index (string column 1), when the shape asks for one; its hashes by entry. */
  private readonly indexed: boolean;
  private table2 = new Int32Array(0);
  private hashes2 = new Int32Array(0);

  private bytes = new Uint8Array(0);
  private links = new Int32Array(0);
  private slotsUsed = 0;
  private freeSlots = NONE;
  /** Where writeString puts the next byte. */
  private cursorSlot = NONE;
  private cursorPos = 0;

  constructor(
    readonly capacity: number,
    shape: TableShape,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.numCols = shape.numbers;
    this.strCols = shape.strings + 1;
    this.indexed = shape.secondIndex === true;
    if (this.indexed && this.strCols < 2) throw new RangeError("a second index needs a string column besides the key");
    this.growEntries(Math.min(capacity, FIRST_ENTRIES));
    this.growTable(this.allocated * 2);
    this.growArena(this.allocated * 4);
  }

  get size(): number {
    return this.count;
  }

  /** The key's entry, or NONE; `touch` makes it the newest. */
  find(key: string, touch: boolean): number {
    const h = hashOf(key);
    const { table, mask, hashes } = this;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const e = table[i]!;
      if (e === NONE) return NONE;
      if (hashes[e] === h && this.stringIs(e, 0, key)) {
        if (touch) this.touch(e);
        return e;
      }
    }
  }

  /**
   * A new entry for `key`, which must not be in the table, made the newest; when the table holds
   * `capacity` entries the oldest goes first. Its numbers are NaN, its strings null.
   */
  add(key: string): number {
    if (this.count === this.capacity) this.removeEntry(this.oldest);
    let e: number;
    if (this.freeEntries !== NONE) {
      e = this.freeEntries;
      this.freeEntries = this.newer[e]!;
    } else {
      if (this.used === this.allocated) this.growEntries(Math.min(this.capacity, this.allocated * 2));
      e = this.used++;
    }
    if ((this.count + 1) * 2 > this.table.length) this.growTable(this.table.length * 2);
    const h = hashOf(key);
    this.hashes[e] = h;
    const s = e * this.strCols;
    this.heads[s] = this.writeString(key);
    this.lens[s] = key.length;
    for (let c = 1; c < this.strCols; c++) {
      this.heads[s + c] = NONE;
      this.lens[s + c] = -1;
    }
    this.nums.fill(NaN, e * this.numCols, (e + 1) * this.numCols);
    this.place(e, h);
    this.linkNewest(e);
    this.count++;
    return e;
  }

  /** The key's entry, made the newest; added (see add) when missing. */
  upsert(key: string): number {
    const e = this.find(key, true);
    return e !== NONE ? e : this.add(key);
  }

  /** Removes the key's entry, if any. */
  delete(key: string): void {
    const e = this.find(key, false);
    if (e !== NONE) this.removeEntry(e);
  }

  removeEntry(e: number): void {
    const { table, mask, hashes } = this;
    let i = hashes[e]! & mask;
    while (table[i] !== e) i = (i + 1) & mask;
    deleteAt(table, i, hashes);
    if (this.indexed) this.unindex2(e);
    const s = e * this.strCols;
    for (let c = 0; c < this.strCols; c++) this.freeChain(this.heads[s + c]!);
    this.unlink(e);
    this.newer[e] = this.freeEntries;
    this.freeEntries = e;
    this.count--;
  }

  clear(): void {
    this.table.fill(NONE);
    this.table2.fill(NONE);
    this.newest = this.oldest = NONE;
    this.count = this.used = 0;
    this.freeEntries = NONE;
    this.slotsUsed = 0;
    this.freeSlots = NONE;
  }

  number(e: number, col: number): number {
    return this.nums[e * this.numCols + col]!;
  }

  setNumber(e: number, col: number, v: number): void {
    this.nums[e * this.numCols + col] = v;
  }

  /** String column `col` (0: the key) of entry `e`, read out of the arena: a new string. */
  string(e: number, col: number): string | null {
    const s = e * this.strCols + col;
    const len = this.lens[s]!;
    if (len < 0) return null;
    const units = new Array<number>(len);
    const { bytes, links } = this;
    let slot = this.heads[s]!;
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

  /** Whether string column `col` of entry `e` is `v`, compared in the arena (nothing allocated). */
  stringIs(e: number, col: number, v: string | null): boolean {
    const s = e * this.strCols + col;
    const len = this.lens[s]!;
    if (v === null || len < 0) return v === null && len < 0;
    if (len !== v.length) return false;
    const { bytes, links } = this;
    let slot = this.heads[s]!;
    let at = slot * SLOT;
    let pos = 0;
    for (let i = 0; i < len; i++) {
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

  /** Sets string column `col` (not the key) of entry `e`. */
  setString(e: number, col: number, v: string | null): void {
    if (col === 0) throw new RangeError("the key of an entry cannot change");
    const indexed = this.indexed && col === 1;
    if (indexed) this.unindex2(e);
    const s = e * this.strCols + col;
    this.freeChain(this.heads[s]!);
    this.heads[s] = v === null ? NONE : this.writeString(v);
    this.lens[s] = v === null ? -1 : v.length;
    if (indexed && v !== null) this.index2(e, v);
  }

  /** The entry last given `v` as string column 1 (secondIndex), or NONE; nothing is touched. */
  findBy(v: string): number {
    const h = hashOf(v);
    const { table2, hashes2 } = this;
    const mask = table2.length - 1;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const e = table2[i]!;
      if (e === NONE) return NONE;
      if (hashes2[e] === h && this.stringIs(e, 1, v)) return e;
    }
  }

  /** Indexes entry `e` under `v`, taking the place of the entry that had it. */
  private index2(e: number, v: string): void {
    const h = hashOf(v);
    this.hashes2[e] = h;
    const { table2, hashes2 } = this;
    const mask = table2.length - 1;
    let i = h & mask;
    for (; table2[i] !== NONE; i = (i + 1) & mask) {
      const o = table2[i]!;
      if (hashes2[o] === h && this.stringIs(o, 1, v)) break;
    }
    table2[i] = e;
  }

  /** Takes entry `e` out of the second index, when the index names it (a later entry may have its string). */
  private unindex2(e: number): void {
    if (this.lens[e * this.strCols + 1]! < 0) return;
    const { table2, hashes2 } = this;
    const mask = table2.length - 1;
    let i = hashes2[e]! & mask;
    while (table2[i] !== NONE && table2[i] !== e) i = (i + 1) & mask;
    if (table2[i] === NONE) return;
    deleteAt(table2, i, hashes2);
  }

  /** Entries from the oldest to the newest (tests and diagnostics). */
  *keysOldestFirst(): Generator<string> {
    for (let e = this.oldest; e !== NONE; e = this.newer[e]!) yield this.string(e, 0)!;
  }

  private touch(e: number): void {
    if (e === this.newest) return;
    this.unlink(e);
    this.linkNewest(e);
  }

  private linkNewest(e: number): void {
    this.older[e] = this.newest;
    this.newer[e] = NONE;
    if (this.newest !== NONE) this.newer[this.newest] = e;
    this.newest = e;
    if (this.oldest === NONE) this.oldest = e;
  }

  private unlink(e: number): void {
    const o = this.older[e]!;
    const n = this.newer[e]!;
    if (o !== NONE) this.newer[o] = n;
    else this.oldest = n;
    if (n !== NONE) this.older[n] = o;
    else this.newest = o;
  }

  private place(e: number, h: number): void {
    placeIn(this.table, e, h);
  }

  private growEntries(n: number): void {
    const grow = <T extends Float64Array | Int32Array>(a: T, per: number, make: (len: number) => T): T => {
      const b = make(n * per);
      b.set(a);
      return b;
    };
    this.nums = grow(this.nums, this.numCols, (l) => new Float64Array(l));
    this.heads = grow(this.heads, this.strCols, (l) => new Int32Array(l));
    this.lens = grow(this.lens, this.strCols, (l) => new Int32Array(l));
    this.hashes = grow(this.hashes, 1, (l) => new Int32Array(l));
    if (this.indexed) this.hashes2 = grow(this.hashes2, 1, (l) => new Int32Array(l));
    this.older = grow(this.older, 1, (l) => new Int32Array(l));
    this.newer = grow(this.newer, 1, (l) => new Int32Array(l));
    this.allocated = n;
  }

  private growTable(n: number): void {
    let size = 16;
    while (size < n) size *= 2;
    this.table = new Int32Array(size).fill(NONE);
    this.mask = size - 1;
    // Every entry in use (on the recency list) is placed again.
    for (let e = this.oldest; e !== NONE; e = this.newer[e]!) this.place(e, this.hashes[e]!);
    if (!this.indexed) return;
    // The second index keeps which entry holds each string; the table2 slots are moved as they are.
    const old = this.table2;
    this.table2 = new Int32Array(size).fill(NONE);
    for (const e of old) if (e !== NONE) placeIn(this.table2, e, this.hashes2[e]!);
  }

  private growArena(slots: number): void {
    const bytes = new Uint8Array(slots * SLOT);
    bytes.set(this.bytes);
    const links = new Int32Array(slots);
    links.set(this.links);
    this.bytes = bytes;
    this.links = links;
  }

  private allocSlot(): number {
    if (this.freeSlots !== NONE) {
      const s = this.freeSlots;
      this.freeSlots = this.links[s]!;
      this.links[s] = NONE;
      return s;
    }
    // By half, not double: the arena is most of the table's memory, and a doubled one would
    // hold up to twice what its strings need.
    if (this.slotsUsed === this.links.length) this.growArena(Math.ceil(this.links.length * 1.5));
    const s = this.slotsUsed++;
    this.links[s] = NONE;
    return s;
  }

  private freeChain(head: number): void {
    if (head === NONE) return;
    let last = head;
    while (this.links[last] !== NONE) last = this.links[last]!;
    this.links[last] = this.freeSlots;
    this.freeSlots = head;
  }

  /** Writes `v` into a new chain of slots; returns its first slot (NONE for ""). */
  private writeString(v: string): number {
    if (v.length === 0) return NONE;
    const head = this.allocSlot();
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

  private put(b: number): void {
    if (this.cursorPos === SLOT) {
      const s = this.allocSlot();
      this.links[this.cursorSlot] = s;
      this.cursorSlot = s;
      this.cursorPos = 0;
    }
    this.bytes[this.cursorSlot * SLOT + this.cursorPos++] = b;
  }
}

function placeIn(table: Int32Array, e: number, h: number): void {
  const mask = table.length - 1;
  let i = h & mask;
  while (table[i] !== NONE) i = (i + 1) & mask;
  table[i] = e;
}

/**
 * Empties slot `i` of an open-addressing table: every later entry of the run whose home is not in
 * the cyclic range i+1 .. its slot moves back into the hole (no tombstones to clean up).
 */
function deleteAt(table: Int32Array, i: number, hashes: Int32Array): void {
  const mask = table.length - 1;
  for (let j = (i + 1) & mask; table[j] !== NONE; j = (j + 1) & mask) {
    const home = hashes[table[j]!]! & mask;
    const stays = i <= j ? home > i && home <= j : home > i || home <= j;
    if (!stays) {
      table[i] = table[j]!;
      i = j;
    }
  }
  table[i] = NONE;
}

/** FNV-1a over the UTF-16 code units, then murmur3's finaliser (FNV alone clusters in the low bits). */
function hashOf(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h & 0x7fffffff;
}
