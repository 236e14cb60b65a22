/**
 * Last known state per row, to tell transitions from column churn. The WAL carries no old row
 * under REPLICA IDENTITY DEFAULT, so "did the state change?" is answered from what this process
 * saw earlier, or read back from Kafka at start. Bounded: least recently touched entries go first (a Map keeps insertion order, and
 * touching re-inserts).
 */
export class LruCache<V> {
  private readonly map = new Map<string, V>();

  constructor(private readonly capacity: number) {}

  get(key: string): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key: string, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}
