import type { StreamEvent } from "../airflow/events.js";

/** One event as SSE sends it. `dagId` null: an event about every DAG (table_truncated, stream_gap). */
export interface RecentEvent {
  position: string;
  dagId: string | null;
  type: string;
  json: string;
}

export type RecentListener = (e: RecentEvent) => void;

/**
 * The last `cap` events applied to the view, for SSE: live clients are handed each one as it comes,
 * and a client resuming with Last-Event-ID gets the ones after its position from here. A resume
 * from before the oldest held is not read from Kafka: the client is told (event `reset`) and
 * re-reads the runs it shows, which the REST API answers from the whole view. A ring of strings
 * as published: ~1 KB per event, so the default 10,000 hold ~10 MB.
 */
export class RecentEvents {
  private readonly ring: (RecentEvent | undefined)[];
  private next = 0;
  private held = 0;
  private readonly listeners = new Set<RecentListener>();
  /** Events about every DAG come once per partition: only the first copy is kept. */
  private lastBroadcast: string | null = null;
  private wrapped = false;
  /** The position the follower read the event topics from: every event after it passed through here (until the ring wraps). */
  since: string | null = null;

  constructor(readonly cap: number) {
    this.ring = new Array<RecentEvent | undefined>(cap);
  }

  push(event: StreamEvent, json: string): void {
    const broadcast = event.type === "table_truncated" || event.type === "stream_gap";
    // Asset events live on their own topic; should one be read here, it belongs to the DAG that produced it, if any.
    const dagId = broadcast ? null : event.type === "asset_event" ? event.source_dag_id : event.dag_id;
    if (broadcast) {
      if (this.lastBroadcast !== null && event.source.position <= this.lastBroadcast) return;
      this.lastBroadcast = event.source.position;
    }
    const e: RecentEvent = { position: event.source.position, dagId, type: event.type, json };
    this.ring[this.next] = e;
    this.next = (this.next + 1) % this.cap;
    if (this.held === this.cap) this.wrapped = true;
    this.held = Math.min(this.held + 1, this.cap);
    for (const l of this.listeners) l(e);
  }

  subscribe(l: RecentListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Oldest first. */
  all(): RecentEvent[] {
    const out: RecentEvent[] = [];
    for (let i = 0; i < this.held; i++) out.push(this.ring[(this.next - this.held + i + this.cap) % this.cap]!);
    return out;
  }

  /**
   * The held events after `position`, and whether the buffer reaches back to it (complete: false
   * means events between it and the oldest held were dropped from the buffer).
   */
  after(position: string): { events: RecentEvent[]; complete: boolean } {
    const all = this.all();
    // The partitions' events arrive interleaved, not in position order across DAGs: a later
    // arrival can carry a lower position. When the client's last event is held (a reconnect to this
    // replica), what came after it in arrival order is exactly what it missed, whatever the
    // positions. Otherwise (another replica, or it left the buffer) positions decide, which is
    // exact per DAG and may skip a later-arriving lower position of another DAG.
    let at = -1;
    for (let i = all.length - 1; i >= 0; i--)
      if (all[i]!.position === position) {
        at = i;
        break;
      }
    if (at >= 0) return { events: all.slice(at + 1), complete: true };
    const oldest = all[0];
    const covered =
      (oldest !== undefined && oldest.position <= position) || (!this.wrapped && this.since !== null && position >= this.since);
    return { events: all.filter((e) => e.position > position), complete: covered };
  }
}
