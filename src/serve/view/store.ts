import type { StreamEvent } from "../../airflow/events.js";
import type { DagListItem, HistoryEntry, RunView, StuckItem } from "../schemas.js";
import { type ApplyContext, applyRunEvent, applyTaskEvent, secondsBetween } from "./fold.js";
import { type ReadyView, readyOf } from "./ready.js";
import { Interner, type RunRecord, emptyRun, runKey, taskKey, taskLabel } from "./records.js";
import { isRanState } from "./rerun.js";
import { DEFAULT_THRESHOLDS, DurationHistory, type StuckConfig, findStuck } from "./stuck.js";
import { toView } from "./to-view.js";

export type { ApplyContext } from "./fold.js";

export interface RunStoreOptions {
  /** Runs not complete kept at most; past it the least recently updated are dropped (EVENTSTREAM_SERVE_MAX_RUNS). */
  maxRuns: number;
  /** Complete runs kept, least recently used dropped first (EVENTSTREAM_SERVE_RECENT_RUNS). */
  recentRuns: number;
  /** History entries per run; the oldest go first. */
  historyPerRun: number;
  stuck: StuckConfig;
}

export const DEFAULT_STORE_OPTIONS: RunStoreOptions = {
  maxRuns: 20_000,
  recentRuns: 2_000,
  historyPerRun: 1_000,
  stuck: { defaults: DEFAULT_THRESHOLDS, perDag: {} },
};

export type ChangeListener = (dagId: string, runId: string, position: string) => void;

/** What the store dropped or refused, for /status-like reporting and tests. */
export interface StoreCounters {
  applied: number;
  /** Active runs dropped past maxRuns. */
  droppedActive: number;
  /** Complete runs dropped past recentRuns. */
  droppedRecent: number;
  /** Events before a truncate or gap that voided them (arriving late from another partition). */
  voided: number;
}

const FINISHED = new Set(["success", "failed"]);

/**
 * The bounded view of DAG runs `serve` answers from: events folded per run, in position order per
 * DAG (one DAG's events are in one partition). Runs not complete are kept up to `maxRuns`, complete
 * ones up to `recentRuns` in LRU order; the two Maps' insertion order is the recency order (a touch
 * re-inserts), so eviction is O(1).
 */
export class RunStore {
  private readonly active = new Map<string, RunRecord>();
  private readonly recent = new Map<string, RunRecord>();
  private readonly byDag = new Map<string, Set<string>>();
  private readonly durations = new Map<string, DurationHistory>();
  private readonly lastEvent = new Map<string, string>();
  private readonly listeners = new Set<ChangeListener>();
  private readonly intern = new Interner();
  /** Position of the latest truncate (per table) or gap: earlier events arriving later are void. */
  private voidTask: string | null = null;
  private voidRun: string | null = null;
  private stuckCache: { at: number; applied: number; counts: Map<string, number> } | undefined;
  private stuckAll: { at: number; items: StuckItem[] } | undefined;
  readonly counters: StoreCounters = { applied: 0, droppedActive: 0, droppedRecent: 0, voided: 0 };
  readonly opts: RunStoreOptions;

  constructor(opts: Partial<RunStoreOptions> = {}) {
    this.opts = { ...DEFAULT_STORE_OPTIONS, ...opts };
  }

  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  apply(event: StreamEvent, ctx: ApplyContext): void {
    switch (event.type) {
      case "notification":
        return;
      case "table_truncated":
        if (event.tables.includes("task_instance")) this.voidTask = maxPos(this.voidTask, ctx.position);
        if (event.tables.includes("dag_run")) this.voidRun = maxPos(this.voidRun, ctx.position);
        return this.voidBefore(ctx.position, event.tables.includes("task_instance"), event.tables.includes("dag_run"));
      case "stream_gap":
        // Every row held may be stale and a row deleted in the gap is never named again: drop the
        // view; the snapshot the daemon publishes after a gap (EVENTSTREAM_ON_GAP=snapshot) refills it.
        this.voidTask = maxPos(this.voidTask, ctx.position);
        this.voidRun = maxPos(this.voidRun, ctx.position);
        return this.voidBefore(ctx.position, true, true);
      case "task_instance":
      case "dag_run":
        return this.applyState(event, ctx);
    }
  }

  private applyState(event: Extract<StreamEvent, { type: "task_instance" | "dag_run" }>, ctx: ApplyContext): void {
    const voidPos = event.type === "task_instance" ? this.voidTask : this.voidRun;
    if (voidPos !== null && ctx.position < voidPos) {
      this.counters.voided++;
      return;
    }
    const { dag_id: dagId, run_id: runId } = event;
    if (dagId === null || runId === null) return;
    const key = runKey(dagId, runId);
    let run = this.active.get(key) ?? this.recent.get(key);
    if (event.op === "delete") {
      if (run === undefined) return;
      if (event.type === "dag_run") this.remove(key, run);
      else if (event.task_id !== null && event.map_index !== null) run.tasks.delete(`${event.task_id}\u0000${event.map_index}`);
      this.changed(run, ctx);
      return;
    }
    if (run === undefined) {
      run = emptyRun(this.intern.of(dagId), runId, ctx.position, ctx.commitTime, this.opts.historyPerRun);
      let keys = this.byDag.get(run.dagId);
      if (keys === undefined) this.byDag.set(run.dagId, (keys = new Set()));
      keys.add(key);
    }
    if (event.type === "task_instance")
      applyTaskEvent(run, event as typeof event & { task_id: string; map_index: number }, ctx, this.intern);
    else applyRunEvent(run, event, ctx, this.intern);
    if (FINISHED.has(run.state ?? "") && !run.durationCounted) this.countDuration(run);
    this.place(key, run);
    this.changed(run, ctx);
  }

  private changed(run: RunRecord, ctx: ApplyContext): void {
    this.counters.applied++;
    if (ctx.position > run.position) run.position = ctx.position;
    if (ctx.commitTime > run.lastCommitTime) run.lastCommitTime = ctx.commitTime;
    const last = this.lastEvent.get(run.dagId);
    if (last === undefined || ctx.commitTime > last) this.lastEvent.set(run.dagId, ctx.commitTime);
    for (const l of this.listeners) l(run.dagId, run.runId, ctx.position);
  }

  private countDuration(run: RunRecord): void {
    const seconds = secondsBetween(run.startDate, run.endDate);
    if (seconds === null || seconds < 0) return;
    run.durationCounted = true;
    let h = this.durations.get(run.dagId);
    if (h === undefined) this.durations.set(run.dagId, (h = new DurationHistory()));
    h.add(seconds);
  }

  /** Re-inserts the run at the recent end of the map its state belongs in, then evicts past the caps. */
  private place(key: string, run: RunRecord): void {
    this.active.delete(key);
    this.recent.delete(key);
    if (FINISHED.has(run.state ?? "")) this.recent.set(key, run);
    else this.active.set(key, run);
    this.evict(this.active, this.opts.maxRuns, "droppedActive");
    this.evict(this.recent, this.opts.recentRuns, "droppedRecent");
  }

  private evict(map: Map<string, RunRecord>, cap: number, counter: "droppedActive" | "droppedRecent"): void {
    while (map.size > cap) {
      const [key, run] = map.entries().next().value!;
      this.remove(key, run);
      this.counters[counter]++;
    }
  }

  private remove(key: string, run: RunRecord): void {
    this.active.delete(key);
    this.recent.delete(key);
    const keys = this.byDag.get(run.dagId);
    keys?.delete(key);
    if (keys?.size === 0) this.byDag.delete(run.dagId);
  }

  private voidBefore(position: string, tasks: boolean, runs: boolean): void {
    for (const map of [this.active, this.recent])
      for (const [key, run] of map) {
        if (tasks) for (const [tk, t] of run.tasks) if (t.position < position) run.tasks.delete(tk);
        if (runs && run.runSeen && (run.runPosition ?? "") < position) run.runSeen = false;
        if (!run.runSeen && run.tasks.size === 0) this.remove(key, run);
      }
  }

  /**
   * A clear the view's bootstrap cannot see, from its task_cleared insight (at `position`): the
   * state topic holds a task's latest event only, so a clear and the rerun after it, both before
   * the start, are in no entry. The insights writer's view restores clears by the same rule
   * (src/serve/insights/view.ts), so that both name the same rerun tasks. `reranBefore`: it ran
   * between earlier clears (lastClears).
   */
  restoreClear(dagId: string, runId: string, taskId: string, mapIndex: number, position: string, reranBefore: boolean): void {
    const run = this.active.get(runKey(dagId, runId)) ?? this.recent.get(runKey(dagId, runId));
    const rec = run?.tasks.get(taskKey(taskId, mapIndex));
    if (run === undefined || rec === undefined) return;
    if (reranBefore) run.rerun.add(taskLabel(rec.taskId, rec.mapIndex));
    // The entry is the clear itself, or older than it: the events from the bootstrap on fold it.
    if (rec.position <= position) return;
    if (isRanState(rec.state)) {
      rec.cleared = false;
      run.rerun.add(taskLabel(rec.taskId, rec.mapIndex));
    } else rec.cleared = true;
  }

  private find(dagId: string, runId: string): RunRecord | undefined {
    const key = runKey(dagId, runId);
    const done = this.recent.get(key);
    if (done !== undefined) {
      // A read is a use: the LRU keeps what is asked for.
      this.recent.delete(key);
      this.recent.set(key, done);
      return done;
    }
    return this.active.get(key);
  }

  run(dagId: string, runId: string): RunView | null {
    const r = this.find(dagId, runId);
    return r === undefined ? null : toView(r);
  }

  /** The run's rerun task instances, for summarize() callers holding a RunView. */
  rerunTasks(dagId: string, runId: string): string[] {
    return [...(this.find(dagId, runId)?.rerun ?? [])];
  }

  history(dagId: string, runId: string): { entries: HistoryEntry[]; dropped: number } | null {
    const r = this.find(dagId, runId);
    return r === undefined ? null : { entries: r.history.entries(), dropped: r.history.dropped };
  }

  ready(dagId: string, runId: string, tasks: readonly string[]): ReadyView | null {
    const view = this.run(dagId, runId);
    return view === null ? null : readyOf(view, tasks);
  }

  hasDag(dagId: string): boolean {
    return this.byDag.has(dagId);
  }

  /** The DAG's runs, newest first (logical date, else when first seen), at most `limit`. */
  runs(dagId: string, opts: { limit: number }): RunView[] {
    const recs = [...(this.byDag.get(dagId) ?? [])].map((k) => (this.active.get(k) ?? this.recent.get(k))!);
    recs.sort((a, b) => (sortKey(b) < sortKey(a) ? -1 : sortKey(b) > sortKey(a) ? 1 : 0));
    return recs.slice(0, opts.limit).map(toView);
  }

  /** The run of `dagId` with this logical date (compared as instants, so any ISO spelling matches); the newest if several. */
  runByLogicalDate(dagId: string, iso: string): RunView | null {
    const want = Date.parse(iso);
    if (!Number.isFinite(want)) return null;
    let best: RunRecord | undefined;
    for (const k of this.byDag.get(dagId) ?? []) {
      const r = (this.active.get(k) ?? this.recent.get(k))!;
      if (r.logicalDate !== null && Date.parse(r.logicalDate) === want && (best === undefined || r.position > best.position)) best = r;
    }
    return best === undefined ? null : toView(best);
  }

  dags(now = Date.now()): DagListItem[] {
    const stuck = this.stuckCounts(now);
    return [...this.byDag.entries()]
      .map(([dagId, keys]) => {
        let active = 0;
        for (const k of keys) if (this.active.has(k)) active++;
        return {
          dag_id: dagId,
          active_runs: active,
          recent_runs: keys.size - active,
          last_event: this.lastEvent.get(dagId) ?? null,
          stuck: stuck.get(dagId) ?? 0,
        };
      })
      .sort((a, b) => (a.dag_id < b.dag_id ? -1 : a.dag_id > b.dag_id ? 1 : 0));
  }

  /**
   * Stuck items per DAG for /dags, the page's list: counting them walks every task instance held
   * (half a million at the bound), so the count is reused for a second while nothing changed.
   */
  private stuckCounts(now: number): Map<string, number> {
    const c = this.stuckCache;
    if (c !== undefined && c.applied === this.counters.applied && now >= c.at && now - c.at < 1_000) return c.counts;
    const counts = new Map<string, number>();
    for (const s of this.stuck(now)) counts.set(s.dag_id, (counts.get(s.dag_id) ?? 0) + 1);
    this.stuckCache = { at: now, applied: this.counters.applied, counts };
    return counts;
  }

  /** Task instances waiting past their state's threshold, and runs running past their DAG's p95 duration; longest first. */
  stuck(now: number, dagId?: string): StuckItem[] {
    // Every DAG's answer walks every task instance held (163 ms for 10,000 runs x 50 tasks,
    // bench/serve-memory.ts): it is worked out at most once a second and shared, its durations up to
    // a second old. One DAG's question walks that DAG's runs only.
    if (dagId === undefined) {
      const c = this.stuckAll;
      if (c !== undefined && now >= c.at && now - c.at < 1_000) return c.items;
      const items = findStuck(this.active.values(), now, this.opts.stuck, (d) => this.durations.get(d)?.p95() ?? null);
      this.stuckAll = { at: now, items };
      return items;
    }
    const runs = [...(this.byDag.get(dagId) ?? [])].flatMap((k) => this.active.get(k) ?? []);
    return findStuck(runs, now, this.opts.stuck, (d) => this.durations.get(d)?.p95() ?? null, dagId);
  }

  /** Runs held: not complete, complete. */
  size(): { active: number; recent: number } {
    return { active: this.active.size, recent: this.recent.size };
  }
}

function maxPos(a: string | null, b: string): string {
  return a === null || b > a ? b : a;
}

function sortKey(r: RunRecord): string {
  return r.logicalDate ?? r.startDate ?? r.stateSince;
}
