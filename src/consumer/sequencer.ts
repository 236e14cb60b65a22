import { comparePositions, parsePosition, type Position } from "../lsn.js";

/**
 * Where the consumer's user keeps the last position it processed, per DAG: the truth about what
 * was handled. Kafka's group offsets are only a hint (the user's store may live in the same
 * database transaction as the handler's own writes; a group offset never can).
 */
export interface PositionStore {
  /** The last position saved for this DAG (`source.position` form), or null when none. */
  load(dagId: string): Promise<string | null>;
  /** Called after the handler resolved for an event of this DAG; `position` only ever increases per DAG. */
  save(dagId: string, position: string): Promise<void>;
}

export type Offered = "delivered" | "duplicate";

/**
 * Per-DAG order and de-duplication, free of Kafka: one DAG's deliveries run one after the other
 * (each waits for the previous one's handler and save), different DAGs' side by side, and an event
 * whose position is not above the last one saved for its DAG is dropped. Positions are compared
 * parsed (commit LSN as a bigint, then index), never as text.
 *
 * The last positions are cached after the first load; `forget()` drops the cache, for when another
 * process may have moved them (a consumer-group rebalance hands a partition to another member and
 * back). The store is read again then, so it stays the one truth.
 */
export class DagSequencer {
  private readonly last = new Map<string, Position | null>();
  private readonly tails = new Map<string, Promise<void>>();

  constructor(private readonly store: PositionStore) {}

  /**
   * Runs `deliver` if `position` is above the DAG's last one, then saves it; resolves once done (or
   * dropped). Rejects with `deliver`'s or the store's error; the position is then not advanced.
   */
  async offer(dagId: string, position: string, deliver: () => Promise<void>): Promise<Offered> {
    const parsed = parsePosition(position);
    return this.exclusive(dagId, async () => {
      const last = await this.lastPosition(dagId);
      if (last !== null && comparePositions(parsed, last) <= 0) return "duplicate";
      await deliver();
      await this.store.save(dagId, position);
      this.last.set(dagId, parsed);
      return "delivered";
    });
  }

  /** The DAG's last position, from the cache or the store. */
  async lastPosition(dagId: string): Promise<Position | null> {
    if (this.last.has(dagId)) return this.last.get(dagId)!;
    const text = await this.store.load(dagId);
    const p = text === null ? null : parsePosition(text);
    this.last.set(dagId, p);
    return p;
  }

  forget(): void {
    this.last.clear();
  }

  /** `fn` after every earlier call for the same DAG has settled; the chain survives a rejection. */
  private exclusive<T>(dagId: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(dagId) ?? Promise.resolve();
    const run = before.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(dagId, tail);
    // Dropped once idle, so a consumer of many DAGs does not keep one settled promise per DAG for ever.
    void tail.then(() => {
      if (this.tails.get(dagId) === tail) this.tails.delete(dagId);
    });
    return run;
  }
}
