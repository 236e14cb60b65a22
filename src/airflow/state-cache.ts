/**
 * Last known state per row, to tell transitions from column churn. The WAL carries no old row
 * under REPLICA IDENTITY DEFAULT, so "did the state change?" is answered from what this process
 * saw earlier, or read back from Kafka at start. Bounded: least recently touched entries go first (a Map keeps insertion order, and
 * touching re-inserts).
 */
export class LruCache<V> {
  private readonly map = new Map<string, V>();
  /**
   * The key touched last, already at the end of the map's order. The mapper reads a row's entry and
   * then writes it: the write need not move it again (one delete + insert fewer per change; the
   * cache was ~5% of a drain's CPU).
   */
  private newest: string | undefined = undefined;

  constructor(private readonly capacity: number) {}

  get(key: string): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined && key !== this.newest) {
      this.map.delete(key);
      this.map.set(key, v);
      this.newest = key;
    }
    return v;
  }

  set(key: string, value: V): void {
    if (key === this.newest) {
      // Updated in place: a Map keeps an existing key's position.
      this.map.set(key, value);
      return;
    }
    this.map.delete(key);
    this.map.set(key, value);
    this.newest = key;
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next();
      if (!oldest.done) {
        this.map.delete(oldest.value);
        if (oldest.value === this.newest) this.newest = undefined;
      }
    }
  }

  delete(key: string): void {
    this.map.delete(key);
    if (key === this.newest) this.newest = undefined;
  }

  clear(): void {
    this.map.clear();
    this.newest = undefined;
  }

  get size(): number {
    return this.map.size;
  }
}
