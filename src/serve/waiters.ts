import type { RunStore } from "./view/store.js";

/**
 * Long polls (ready?wait=): each waiter re-checks its answer when the view changes its run, and
 * resolves the moment the answer is final or at its deadline. Waiters are indexed by run, so an
 * event wakes only the waiters of its own run (a busy stream must not re-check every waiter per
 * event), and capped: past `max` a new wait is refused rather than let clients hold unbounded timers.
 */
export class Waiters {
  private readonly byRun = new Map<string, Set<() => void>>();
  private count = 0;
  private readonly off: () => void;

  constructor(
    store: RunStore,
    private readonly max: number,
  ) {
    this.off = store.onChange((dagId, runId) => {
      for (const key of [`${dagId}\u0000${runId}`, `${dagId}\u0000*`]) for (const wake of this.byRun.get(key) ?? []) wake();
    });
  }

  get size(): number {
    return this.count;
  }

  /**
   * Calls `check` now and after every change of the run (`runId` "*": any run of the DAG, for a wait
   * by logical date whose run may not exist yet) until it returns done or `ms` pass; resolves with
   * the last answer. null when the cap is reached.
   */
  wait<T>(dagId: string, runId: string, ms: number, check: () => { done: boolean; value: T }): Promise<T> | null {
    const first = check();
    if (first.done || ms <= 0) return Promise.resolve(first.value);
    if (this.count >= this.max) return null;
    const key = `${dagId}\u0000${runId}`;
    this.count++;
    return new Promise<T>((resolve) => {
      let set = this.byRun.get(key);
      if (set === undefined) this.byRun.set(key, (set = new Set()));
      const finish = (value: T) => {
        clearTimeout(timer);
        set.delete(wake);
        if (set.size === 0) this.byRun.delete(key);
        this.count--;
        resolve(value);
      };
      const wake = () => {
        const now = check();
        if (now.done) finish(now.value);
      };
      const timer = setTimeout(() => finish(check().value), ms);
      set.add(wake);
    });
  }

  close(): void {
    this.off();
  }
}
