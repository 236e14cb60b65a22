import type { DagRunEvent, StreamEvent, StreamGapEvent, TableTruncatedEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import { dagRunEvent, taskInstanceEvent } from "../../support/events.js";
import type { ApplyContext, RunStore } from "../../../src/serve/view/store.js";

/** Builders of events for the view's unit tests: positions increase with each call. */
export class Stream {
  private lsn = 0x1000;
  /** Commit times advance one second per event from here. */
  clock = Date.parse("2026-12-01T00:00:00Z");

  constructor(readonly store: RunStore) {}

  private ctx(bootstrap: boolean): { ctx: ApplyContext; source: TaskInstanceEvent["source"] } {
    this.lsn += 16;
    this.clock += 1000;
    const position = `${this.lsn.toString(16).toUpperCase().padStart(16, "0")}-00000000`;
    const commitTime = new Date(this.clock).toISOString().replace("Z", "000Z");
    return {
      ctx: { position, commitTime, partition: 0, offset: String(this.lsn), bootstrap },
      source: { commit_lsn: `0/${this.lsn.toString(16)}`, xid: 1, index: 0, position, commit_time: commitTime },
    };
  }

  ti(
    dag: string,
    run: string,
    task: string,
    state: string | null,
    more: Partial<Omit<TaskInstanceEvent, "op">> & { op?: "insert" | "update" | "snapshot" | "delete"; bootstrap?: boolean } = {},
  ): string {
    const { ctx, source } = this.ctx(more.bootstrap ?? false);
    const e = taskInstanceEvent({ dag_id: dag, task_id: task, run_id: run, max_tries: 1, state, ...more, source });
    this.store.apply(e, ctx);
    return ctx.position;
  }

  dr(
    dag: string,
    run: string,
    state: string | null,
    more: Partial<Omit<DagRunEvent, "op">> & { op?: "insert" | "update" | "delete"; bootstrap?: boolean } = {},
  ): string {
    const { ctx, source } = this.ctx(more.bootstrap ?? false);
    const e = dagRunEvent({ dag_id: dag, run_id: run, state, ...more, source });
    this.store.apply(e, ctx);
    return ctx.position;
  }

  raw(event: Omit<TableTruncatedEvent, "source"> | Omit<StreamGapEvent, "source">): string {
    const { ctx, source } = this.ctx(false);
    this.store.apply({ ...event, source } as StreamEvent, ctx);
    return ctx.position;
  }
}
