import { StringArena } from "./string-arena.js";

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
 * - strings: in a StringArena (string-arena.ts), by first slot and UTF-16 length;
 * - the index: open addressing with linear probing over a power-of-two table of entry numbers, at
 *   most half full, deletes by backward shift (no tombstones to clean up);
 * - recency: a doubly linked list of entries through two Int32Arrays, newest first.
 *
 * Everything grows as entries come (the entry arrays and the index by doubling, up to `capacity`
 * entries; the arena by half), so a large EVENTSTREAM_STATE_CACHE_SIZE costs memory only as rows
 * are seen.
 */

const NONE = -1;
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

  private readonly arena: StringArena;

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
    this.arena = new StringArena(this.allocated * 4);
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
    this.heads[s] = this.arena.write(key);
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
    for (let c = 0; c < this.strCols; c++) this.arena.free(this.heads[s + c]!);
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
    this.arena.reset();
  }

  /** Bytes the table holds outside the heap (its arrays as allocated). */
  get bytes(): number {
    const arrays = [this.nums, this.heads, this.lens, this.hashes, this.older, this.newer, this.table, this.table2, this.hashes2];
    return arrays.reduce((n, a) => n + a.byteLength, this.arena.bytes);
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
    return len < 0 ? null : this.arena.read(this.heads[s]!, len);
  }

  /** Whether string column `col` of entry `e` is `v`, compared in the arena (nothing allocated). */
  stringIs(e: number, col: number, v: string | null): boolean {
    const s = e * this.strCols + col;
    const len = this.lens[s]!;
    if (v === null || len < 0) return v === null && len < 0;
    return len === v.length && this.arena.holds(this.heads[s]!, v);
  }

  /** Sets string column `col` (not the key) of entry `e`. */
  setString(e: number, col: number, v: string | null): void {
    if (col === 0) throw new RangeError("the key of an entry cannot change");
    const indexed = this.indexed && col === 1;
    if (indexed) this.unindex2(e);
    const s = e * this.strCols + col;
    this.arena.free(this.heads[s]!);
    this.heads[s] = v === null ? NONE : this.arena.write(v);
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
