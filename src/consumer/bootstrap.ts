import { StreamEvent } from "../airflow/events.js";
import { comparePositions, parsePosition } from "../lsn.js";
import type { Logger } from "../log.js";
import type { DagSequencer } from "./sequencer.js";
import type { FoldedState } from "../sink/state-topic.js";
import type { BootstrapInfo, RunOptions } from "./types.js";

export interface BootstrapDeps {
  state: () => Promise<FoldedState>;
  stateTopic: string;
  /** The DAGs asked for; null: every DAG `which` accepts that the state holds. */
  dags: string[] | null;
  which: (dagId: string) => boolean;
  reason: BootstrapInfo["reason"];
  detail: string | undefined;
  sequencer: DagSequencer;
  run: RunOptions;
  log: Logger;
}

/**
 * Hands the handler the current row of every task instance and DAG run of the DAGs (the latest
 * event of each, ctx.bootstrap true), in position order, then moves each DAG's position to the
 * state's: the event topic goes on after it, and the events the state already folded in are
 * dropped as seen. Rows at or below a DAG's stored position are dropped too (the user has them).
 * Says so first, in the log and to `onBootstrap`. Resolves to the state's position (null: empty).
 */
export async function bootstrapFromState(d: BootstrapDeps): Promise<string | null> {
  const state = await d.state();
  // A partition without any of the listed DAGs only needs the state's position.
  if (d.dags !== null && d.dags.length === 0) return state.position;
  const rows: { dagId: string; position: string; event: StreamEvent }[] = [];
  for (const entry of state.entries.values()) {
    const dagId = entry.event.dag_id;
    if (typeof dagId !== "string" || !d.which(dagId)) continue;
    const parsed = StreamEvent.safeParse(entry.event);
    if (!parsed.success)
      throw new Error(
        `the state topic ${d.stateTopic} holds a value that is not an event (at ${entry.position}): ${parsed.error.message.slice(0, 300)}`,
      );
    rows.push({ dagId, position: entry.position, event: parsed.data });
  }
  rows.sort((a, b) => comparePositions(parsePosition(a.position), parsePosition(b.position)));
  const dags = d.dags ?? [...new Set(rows.map((r) => r.dagId))].sort();
  const info: BootstrapInfo = {
    reason: d.reason,
    dags,
    position: state.position,
    rows: rows.length,
    ...(d.detail ? { detail: d.detail } : {}),
  };
  d.log.warn(
    { ...info, dags: dags.length <= 20 ? dags : `${dags.length} DAGs`, state_topic: d.stateTopic },
    d.reason === "requested"
      ? "bootstrapping from the current-state topic (from: state): its rows first, then the event topic after its position"
      : "the stored position is older than the event topic holds: bootstrapping from the current-state topic, then the event topic after its position",
  );
  await d.run.onBootstrap?.(info);
  for (const row of rows) {
    await d.sequencer.offer(row.dagId, row.position, () =>
      d.run.handler(row.event, {
        dagId: row.dagId,
        position: row.position,
        bootstrap: true,
        topic: d.stateTopic,
        partition: null,
        offset: null,
      }),
    );
  }
  if (state.position !== null) for (const dag of dags) await d.sequencer.offer(dag, state.position, () => Promise.resolve());
  return state.position;
}
