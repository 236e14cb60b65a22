import { StreamEvent } from "../../airflow/events.js";
import type { StateEntry } from "../../sink/state-topic.js";
import type { InsightEvent } from "../schemas.js";
import { deriveFromEvent, noteEmitted, timerStep, type EmittedStuck, type StuckThreshold } from "./derive.js";
import { PartitionView, type CauseRef, type KeyedTaskEvent } from "./view.js";
import { parseEventValue } from "../../sink/wire-format.js";

/**
 * What the writer holds for one events partition it owns: the view of the partition's DAG runs,
 * the task_stuck it published that have no task_unstuck yet, and the next offset to read (the
 * group's committed offset when it took the partition, then one past the last event handled).
 *
 * The view is built from the current-state topic, which is as of its end: usually a little ahead
 * of the committed offset (the previous owner's last events were folded into the state topic by
 * the daemon, but their insights were not committed). The first event read after taking the
 * partition says how far: every state entry at or after its position is rolled back to before its
 * latest event (previous_state and previous_try_number; an insert is dropped), and the events
 * from the committed offset on then move the view forward again. Exact when a row changed once in
 * that window (the common case: the window is the previous owner's last uncommitted batch and the
 * session timeout); with several changes, the view holds the state before the last one until the
 * replay reaches the first, and derivation prefers the event's own previous_state anyway.
 */
export class OwnedPartition {
  readonly emitted: EmittedStuck = new Map();
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

  noteEmitted(insights: readonly InsightEvent[]): void {
    for (const i of insights) noteEmitted(this.emitted, i);
  }

  /** The view; built at the first call, rolling back the state entries at or after `firstPosition` (null: none read). */
  private viewAsOf(firstPosition: string | null): PartitionView {
    if (this.view !== null) return this.view;
    const view = new PartitionView();
    const sorted = [...this.entries].sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
    for (const entry of sorted) {
      const parsed = StreamEvent.safeParse(entry.event);
      if (!parsed.success) continue;
      const ahead = firstPosition !== null && entry.position >= firstPosition;
      const event = ahead ? rolledBack(parsed.data) : parsed.data;
      if (event === null) continue;
      apply(view, event, { position: entry.position, topic: this.stateTopic, partition: this.partition, offset: null });
    }
    this.entries = [];
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
