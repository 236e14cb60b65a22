import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { bootstrapFromState, type BootstrapDeps } from "../../../src/consumer/bootstrap.js";
import { DagSequencer } from "../../../src/consumer/sequencer.js";
import { emptyState, type FoldedState } from "../../../src/sink/state-topic.js";
import { dagRunEvent, position as pos, sourceAt } from "../../support/events.js";

function runEvent(dagId: string, runId: string, state: string, position: string): Record<string, unknown> {
  return dagRunEvent({ dag_id: dagId, run_id: runId, state, source: sourceAt(position) });
}

function state(rows: [string, string, string, string][], position: string): FoldedState {
  const s = emptyState();
  for (const [dag, run, st, p] of rows) s.entries.set(`${dag}/${run}`, { table: "dag_run", position: p, event: runEvent(dag, run, st, p) });
  s.position = position;
  return s;
}

function deps(
  folded: FoldedState,
  stored: Record<string, string>,
  dags: string[] | null,
): { d: BootstrapDeps; calls: string[]; saved: Map<string, string> } {
  const calls: string[] = [];
  const saved = new Map(Object.entries(stored));
  const sequencer = new DagSequencer({
    load: async (dag) => saved.get(dag) ?? null,
    save: async (dag, p) => void saved.set(dag, p),
  });
  const set = dags === null ? null : new Set(dags);
  return {
    calls,
    saved,
    d: {
      state: async () => folded,
      stateTopic: "airflow.state",
      dags,
      which: (dag) => (set === null ? true : set.has(dag)),
      reason: "position-not-in-kafka",
      detail: "gone",
      sequencer,
      log: pino({ level: "silent" }),
      run: {
        from: "earliest",
        positions: { load: async () => null, save: async () => undefined },
        onBootstrap: (info) => void calls.push(`onBootstrap ${info.reason} ${info.dags.join(",")} ${info.rows} ${info.position}`),
        handler: async (e, ctx) => {
          if (e.type !== "dag_run") throw new Error("unexpected");
          calls.push(`${ctx.bootstrap ? "row" : "event"} ${ctx.dagId} ${e.run_id} ${ctx.position} ${ctx.partition} ${ctx.offset}`);
        },
      },
    },
  };
}

describe("bootstrapFromState", () => {
  const folded = state(
    [
      ["a", "r2", "running", pos(30)],
      ["a", "r1", "success", pos(10)],
      ["b", "r1", "failed", pos(20)],
      ["c", "r1", "queued", pos(25)],
    ],
    pos(40),
  );

  it("says so first, then hands the listed DAGs' rows in position order, then moves their positions to the state's", async () => {
    const { d, calls, saved } = deps(folded, {}, ["a", "b"]);
    expect(await bootstrapFromState(d)).toBe(pos(40));
    expect(calls).toEqual([
      `onBootstrap position-not-in-kafka a,b 3 ${pos(40)}`,
      `row a r1 ${pos(10)} null null`,
      `row b r1 ${pos(20)} null null`,
      `row a r2 ${pos(30)} null null`,
    ]);
    expect(Object.fromEntries(saved)).toEqual({ a: pos(40), b: pos(40) });
  });

  it("drops rows at or below a DAG's stored position: the consumer has them", async () => {
    const { d, calls } = deps(folded, { a: pos(10) }, ["a"]);
    await bootstrapFromState(d);
    expect(calls.filter((c) => c.startsWith("row"))).toEqual([`row a r2 ${pos(30)} null null`]);
  });

  it("without a list, takes every DAG `which` accepts and names them", async () => {
    const { d, calls } = deps(folded, {}, null);
    await bootstrapFromState(d);
    expect(calls[0]).toBe(`onBootstrap position-not-in-kafka a,b,c 4 ${pos(40)}`);
  });

  it("for a partition without listed DAGs, only returns the state's position", async () => {
    const { d, calls, saved } = deps(folded, {}, []);
    expect(await bootstrapFromState(d)).toBe(pos(40));
    expect(calls).toEqual([]);
    expect(saved.size).toBe(0);
  });
});
