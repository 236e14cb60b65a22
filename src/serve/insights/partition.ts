import { StreamEvent } from "../../airflow/events.js";
import type { StateEntry } from "../../sink/state-topic.js";
import type { InsightEvent } from "../schemas.js";
import { deriveFromEvent, noteEmitted, timerStep, type EmittedStuck, type StuckThreshold } from "./derive.js";
import { lastClears } from "../view/rerun.js";
import { PartitionView, rowIdent, runIdent, taskIdent, type CauseRef, type KeyedTaskEvent } from "./view.js";
import { parseEventValue } from "../../sink/wire-format.js";

/**
 * What the writer holds for one events partition it owns: the view of the partition's DAG runs,
 * the task_stuck it published that have no task_unstuck yet, and the next offset to read (the
 * group's committed offset when it took the partition, then one past the last event handled).
 *
 * The view must be the partition's state as of the committed offset. It is built from the
 * current-state topic, which is as of its end: usually ahead of the committed offset (the previous
 * owner's last events were folded into the state topic by the daemon, but their insights were not
 * committed; after a kill, a session timeout's worth of events more). A row whose state entry is at
 * or after the first event from the committed offset is "ahead": its state at the offset is the one
 * before its first event from there (that event's previous_state), which the WindowScan finds by
 * reading the events from the committed offset when the partition is taken. Where it could not (the
 * event is past the end the scan read to, or the daemon did not know the state before), the entry
 * is rolled back to before its own latest event, exact when the row changed once since the offset.
 * A clear the previous owner saw is in neither (the state topic keeps the rerun); it comes back from
 * the task_cleared insights that owner committed.
 */
export class OwnedPartition {
  readonly emitted: EmittedStuck = new Map();
  /** The task_cleared the previous owners published, read when the partition was taken: restored into the view when it is built. */
  private clears: Extract<InsightEvent, { type: "task_cleared" }>[] = [];
  private view: PartitionView | null = null;
  private lastPosition: string | null = null;
  /** Serializes batches and timer ticks of this partition. */
  private chain: Promise<unknown> = Promise.resolve();
  /** A transaction failed after the view moved: the partition must be taken afresh. */
  broken = false;

  constructor(
    readonly partition: number,
    readonly eventsTopic: string,
    readonly stateTopic: string,
    /** The partition's DAGs' entries of the current-state topic, read when it was taken. */
    private entries: StateEntry[],
    public next: bigint,
    /** The end of the events partition (last stable offset) when it was taken: the timer waits until the reader is there. */
    private readonly endAtStart: bigint,
    /** The events from the committed offset, as far as the taking read them; null: not read. */
    private window: WindowScan | null = null,
  ) {}

  /** Runs `fn` after everything queued on this partition. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  get caughtUp(): boolean {
    return this.next >= this.endAtStart;
  }

  /**
   * Derives the insights of one record and applies it to the view. `value` is the record as read;
   * records that are not events, and re-deliveries (a position not above the last handled), give none.
   */
  handle(value: Buffer | null, offset: string, now: Date): InsightEvent[] {
    const parsed = value === null ? null : StreamEvent.safeParse(parseJson(value));
    if (parsed === null || !parsed.success) return [];
    const event = parsed.data;
    const position = event.source.position;
    const view = this.viewAsOf(position);
    if (this.lastPosition !== null && position <= this.lastPosition) return [];
    this.lastPosition = position;
    const cause: CauseRef = { position, topic: this.eventsTopic, partition: this.partition, offset };
    const insights = deriveFromEvent(event, { cause, now }, view, this.emitted);
    for (const i of insights) noteEmitted(this.emitted, i);
    apply(view, event, cause);
    return insights;
  }

  /** task_stuck due now; none until the reader has caught up with the partition's end as of taking it. */
  tick(now: Date, threshold: StuckThreshold): InsightEvent[] {
    if (!this.caughtUp) return [];
    return timerStep(now, this.viewAsOf(null), this.emitted, threshold);
  }

  /** Insights published: by this owner, or (read when taking the partition) by the previous ones. */
  noteEmitted(insights: readonly InsightEvent[]): void {
    for (const i of insights) {
      noteEmitted(this.emitted, i);
      if (i.type === "task_cleared" && this.view === null) this.clears.push(i);
    }
  }

  /** The view; built at the first call, taking the state entries at or after `firstPosition` (null: none read) back to it. */
  private viewAsOf(firstPosition: string | null): PartitionView {
    if (this.view !== null) return this.view;
    const view = new PartitionView();
    const from = this.window?.firstPosition ?? firstPosition;
    const sorted = [...this.entries].sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
    for (const entry of sorted) {
      const parsed = StreamEvent.safeParse(entry.event);
      if (!parsed.success) continue;
      const ahead = from !== null && entry.position >= from;
      const event = ahead ? stateAtOffset(parsed.data, this.window?.firstOf(parsed.data)) : parsed.data;
      if (event === null) continue;
      apply(view, event, { position: entry.position, topic: this.stateTopic, partition: this.partition, offset: null });
    }
    // After the entries: a clear's task is then found with the state its latest event left.
    for (const { clear: c, reranBefore } of lastClears(this.clears))
      view.restoreClear(c.dag_id, c.run_id, c.task_id, c.map_index, c.caused_by.position, reranBefore);
    this.entries = [];
    this.clears = [];
    this.window = null;
    this.view = view;
    return view;
  }
}

/** A record's JSON value; null for a tombstone or what is not JSON (no schema accepts null). */
export function parseJson(value: Buffer | null): unknown {
  if (value === null) return null;
  try {
    return parseEventValue(value);
  } catch {
    return null;
  }
}

/** What the window scan keeps of a row's first event from the committed offset. */
interface FirstChange {
  type: "task_instance" | "dag_run";
  op: string;
  previousStateKnown: boolean;
  previousState: string | null;
  previousTryNumber: number | null;
  tryNumber: number | null;
}

/**
 * The events of a partition from the offset its new owner starts at: which row changed first where,
 * so the view can be taken back to that offset exactly. Fed in offset order; says when it has found
 * the first event of every row whose state entry is ahead of the offset, so the read can stop. It
 * reads the few fields it needs from each record's JSON, not the whole event through its schema:
 * after a long stop it may read the whole backlog once more.
 */
export class WindowScan {
  firstPosition: string | null = null;
  /** Records read (logged when the partition is taken). */
  read = 0;
  private readonly first = new Map<string, FirstChange>();
  private missing: Set<string> | null = null;

  constructor(private readonly entries: readonly StateEntry[]) {}

  /** One record; true once nothing more is needed. */
  add(value: Buffer | null): boolean {
    this.read++;
    const o = parseJson(value);
    if (!isRecord(o)) return false;
    const source = o.source;
    if (!isRecord(source) || typeof source.position !== "string") return false;
    if (this.missing === null) {
      const from = source.position;
      this.firstPosition = from;
      this.missing = new Set();
      for (const entry of this.entries) {
        const id = entry.position >= from ? rawRowIdent(entry.event) : null;
        if (id !== null) this.missing.add(id);
      }
    }
    // Only the rows ahead: a long backlog's other rows are not held.
    const id = rawRowIdent(o);
    if (id !== null && this.missing.delete(id)) this.first.set(id, firstChange(o));
    return this.missing.size === 0;
  }

  /** The first event from the offset of the row `e` is about; undefined when none was read. */
  firstOf(e: StreamEvent): FirstChange | undefined {
    const id = rowIdent(e);
    return id === null ? undefined : this.first.get(id);
  }
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null;
}

/** rowIdent of an event as read, without its schema: null for what is not a keyed task instance or DAG run. */
function rawRowIdent(o: Record<string, unknown>): string | null {
  const { type, dag_id: dag, run_id: run } = o;
  if (typeof dag !== "string" || typeof run !== "string") return null;
  if (type === "dag_run") return runIdent(dag, run);
  if (type !== "task_instance" || typeof o.task_id !== "string" || typeof o.map_index !== "number") return null;
  return taskIdent(dag, run, o.task_id, o.map_index);
}

function firstChange(o: Record<string, unknown>): FirstChange {
  const num = (x: unknown): number | null => (typeof x === "number" ? x : null);
  return {
    type: o.type === "dag_run" ? "dag_run" : "task_instance",
    op: typeof o.op === "string" ? o.op : "",
    previousStateKnown: o.previous_state_known === true,
    previousState: typeof o.previous_state === "string" ? o.previous_state : null,
    previousTryNumber: num(o.previous_try_number),
    tryNumber: num(o.try_number),
  };
}

/**
 * A row's state entry `latest`, taken back to the committed offset: to the state before `first`, the
 * row's first event from there, when it says; else to before `latest` itself. Null: the row did not
 * exist then (or nothing says what it was).
 */
function stateAtOffset(latest: StreamEvent, first: FirstChange | undefined): StreamEvent | null {
  if (first === undefined || first.type !== latest.type) return rolledBack(latest);
  if (first.op === "insert") return null;
  if (first.op === "delete" || !first.previousStateKnown) return rolledBack(latest);
  // What came before the state taken back to is not known: not a transition (a clear) of its own.
  const unknownBefore = { previous_state: null, previous_state_known: false } as const;
  if (latest.type === "dag_run") return { ...latest, ...unknownBefore, state: first.previousState, clear_number: null };
  if (latest.type !== "task_instance") return rolledBack(latest);
  return { ...latest, ...unknownBefore, state: first.previousState, try_number: first.previousTryNumber ?? first.tryNumber };
}

/** The row as it was before `e`, as far as `e` says; null when it did not exist or `e` does not say. */
function rolledBack(e: StreamEvent): StreamEvent | null {
  if (e.type !== "task_instance" && e.type !== "dag_run") return null;
  if (e.op === "insert" || e.op === "delete" || !e.previous_state_known) return null;
  if (e.type === "dag_run") return { ...e, state: e.previous_state, clear_number: null };
  return { ...e, state: e.previous_state, try_number: e.previous_try_number ?? e.try_number };
}

function apply(view: PartitionView, event: StreamEvent, cause: CauseRef): void {
  switch (event.type) {
    case "task_instance":
      if (event.dag_id !== null && event.run_id !== null && event.task_id !== null && event.map_index !== null)
        view.applyTask(event as KeyedTaskEvent, cause, event.source.commit_time);
      return;
    case "dag_run":
      view.applyRun(event);
      return;
    case "table_truncated":
      for (const t of event.tables) view.truncate(t);
      return;
    default:
      return;
  }
}
