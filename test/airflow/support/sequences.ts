import type { DagRunEvent, StreamEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import type { Consumed } from "../../support/harness.js";

/**
 * Turns the events read back from Kafka into one chain per task instance and per DAG run, renders
 * each chain as a compact sequence (the notation of test/airflow/expected.ts and
 * docs/airflow-e2e.md), and checks what must hold for any chain, whatever the DAG.
 *
 * Notation, one token per event, in Kafka order:
 *   task instance: `state/try_number`, state `none` for Airflow's None; `+` marks the INSERT, `-` a
 *                  DELETE; `[i]` before the state when the event moved the row to map index i (the
 *                  unmapped row of a mapped task becoming index 0)
 *   DAG run:       `state`, `+` for the INSERT, `#n` after the state when clear_number became n
 */

export interface TiRow {
  dag_id: string;
  task_id: string;
  run_id: string;
  map_index: number;
  state: string | null;
  try_number: number | null;
}

export interface RunRow {
  id: number;
  dag_id: string;
  run_id: string;
  state: string | null;
  clear_number: number;
}

/**
 * What a consumer does with at-least-once delivery (docs/events.md, "Reading them"): per key, in partition
 * order, skip events whose position is not greater than the last one processed. Re-deliveries
 * happen when a daemon session restarts (a Kafka or PostgreSQL blip) before an acknowledgement.
 */
export function dedupe(consumed: Consumed[], events: StreamEvent[]): { kept: StreamEvent[]; redelivered: number } {
  const last = new Map<string, string>();
  const kept: StreamEvent[] = [];
  let redelivered = 0;
  consumed.forEach((m, i) => {
    const e = events[i]!;
    const k = `${m.partition}\u0000${m.key ?? ""}`;
    const prev = last.get(k);
    if (prev !== undefined && e.source.position <= prev) {
      redelivered++;
      return;
    }
    last.set(k, e.source.position);
    kept.push(e);
  });
  return { kept, redelivered };
}

/**
 * After a session restart the daemon has forgotten the rows' last states (docs/events.md: the first update
 * of each row is published with previous_state_known false, "that includes an update that was only
 * a heartbeat"). With `restarted`, such an event that repeats the chain's last state is dropped
 * (and counted), so the sequences stay comparable; without a restart nothing is dropped and the
 * checks below flag it.
 */
export function dropRestartRepeats<E extends TaskInstanceEvent | DagRunEvent>(
  chain: E[],
  restarted: boolean,
): { chain: E[]; dropped: number } {
  if (!restarted) return { chain, dropped: 0 };
  const out: E[] = [];
  for (const e of chain) {
    const p = out[out.length - 1];
    if (p && !e.previous_state_known && e.state === p.state && sameDetail(p, e)) continue;
    out.push(e);
  }
  return { chain: out, dropped: chain.length - out.length };
}

function sameDetail(p: TaskInstanceEvent | DagRunEvent, e: TaskInstanceEvent | DagRunEvent): boolean {
  if (p.type === "task_instance" && e.type === "task_instance") return p.try_number === e.try_number && p.map_index === e.map_index;
  if (p.type === "dag_run" && e.type === "dag_run") return p.clear_number === e.clear_number;
  return false;
}

export function tiName(taskId: string, mapIndex: number): string {
  return mapIndex >= 0 ? `${taskId}[${mapIndex}]` : taskId;
}

/**
 * The events of one DAG run, one chain per task instance, named `task` or `task[i]`. The row a
 * mapped task starts with (map index -1) becomes index 0 when the task expands: its events head
 * the chain of `task[0]`.
 */
export function tiChains(events: TaskInstanceEvent[], dagId: string, runId: string): Map<string, TaskInstanceEvent[]> {
  const chains = new Map<string, TaskInstanceEvent[]>();
  for (const e of events) {
    if (e.dag_id !== dagId || e.run_id !== runId || e.task_id === null || e.map_index === null) continue;
    const name = tiName(e.task_id, e.map_index);
    let chain = chains.get(name);
    if (!chain && e.op === "update" && e.map_index >= 0 && chains.has(e.task_id)) {
      chain = chains.get(e.task_id)!;
      chains.delete(e.task_id);
      chains.set(name, chain);
    }
    if (!chain) chains.set(name, (chain = []));
    chain.push(e);
  }
  return chains;
}

export function renderTi(chain: TaskInstanceEvent[]): string {
  return chain
    .map((e, i) => {
      const prev = chain[i - 1];
      const op = e.op === "insert" ? "+" : e.op === "delete" ? "-" : "";
      const moved = prev && prev.map_index !== e.map_index ? `[${e.map_index}]` : "";
      return `${op}${moved}${e.state ?? "none"}/${e.try_number}`;
    })
    .join(" ");
}

export function renderRun(chain: DagRunEvent[]): string {
  return chain
    .map((e, i) => {
      const prev = chain[i - 1];
      const op = e.op === "insert" ? "+" : e.op === "delete" ? "-" : "";
      const cleared = prev && prev.clear_number !== e.clear_number ? `#${e.clear_number}` : "";
      return `${op}${e.state ?? "none"}${cleared}`;
    })
    .join(" ");
}

/**
 * What must hold for every task-instance chain, in words (empty when all is well):
 * it starts with the INSERT (the daemon ran before the run existed); every later event is an
 * UPDATE whose previous state and try are those of the event before it (nothing lost, nothing
 * reordered) and that changed the state, the try or the map index (no heartbeat noise); try
 * numbers never go down; the last event says what the database holds now.
 */
export function tiProblems(name: string, chain: TaskInstanceEvent[], row: TiRow | undefined, restarted = false): string[] {
  const out: string[] = [];
  if (chain.length === 0) return [`${name}: no event at all`];
  if (chain[0]!.op !== "insert") out.push(`${name}: first event is an ${chain[0]!.op}, not the insert`);
  for (let i = 1; i < chain.length; i++) {
    const [p, e] = [chain[i - 1]!, chain[i]!];
    const at = `${name} event ${i} (${e.state ?? "none"}/${e.try_number})`;
    if (e.op !== "update") out.push(`${at}: op ${e.op}, expected update`);
    if (!e.previous_state_known) {
      // Legitimate only as the first event of a row after a daemon session restart.
      if (!restarted) out.push(`${at}: previous_state_known false, but the daemon did not restart`);
    } else {
      if (e.previous_state !== p.state) out.push(`${at}: previous_state ${e.previous_state}, the event before says ${p.state}`);
      if (e.previous_try_number !== p.try_number)
        out.push(`${at}: previous_try_number ${e.previous_try_number}, the event before says ${p.try_number}`);
    }
    if (e.state === p.state && e.try_number === p.try_number && e.map_index === p.map_index)
      out.push(`${at}: nothing changed (heartbeat noise)`);
    if ((e.try_number ?? 0) < (p.try_number ?? 0)) out.push(`${at}: try_number went down from ${p.try_number}`);
  }
  const last = chain[chain.length - 1]!;
  if (!row) out.push(`${name}: not in task_instance, but events say ${last.state}/${last.try_number}`);
  else if (last.state !== row.state || last.try_number !== row.try_number || last.map_index !== row.map_index) {
    out.push(
      `${name}: last event ${last.state}/${last.try_number} at map index ${last.map_index}, database holds ${row.state}/${row.try_number} at ${row.map_index}`,
    );
  }
  return out;
}

/** The same for a DAG run's chain: INSERT first, exact previous states, a change of state or clear_number each time, ending where the database is. */
export function runProblems(name: string, chain: DagRunEvent[], row: RunRow | undefined, restarted = false): string[] {
  const out: string[] = [];
  if (chain.length === 0) return [`${name}: no dag_run event at all`];
  if (chain[0]!.op !== "insert") out.push(`${name}: first dag_run event is an ${chain[0]!.op}, not the insert`);
  for (let i = 1; i < chain.length; i++) {
    const [p, e] = [chain[i - 1]!, chain[i]!];
    const at = `${name} dag_run event ${i} (${e.state})`;
    if (e.op !== "update") out.push(`${at}: op ${e.op}, expected update`);
    if (!e.previous_state_known) {
      if (!restarted) out.push(`${at}: previous_state_known false, but the daemon did not restart`);
    } else if (e.previous_state !== p.state) out.push(`${at}: previous_state ${e.previous_state}, the event before says ${p.state}`);
    if (e.state === p.state && e.clear_number === p.clear_number) out.push(`${at}: nothing changed (noise)`);
  }
  const last = chain[chain.length - 1]!;
  if (!row) out.push(`${name}: not in dag_run`);
  else if (last.state !== row.state || last.clear_number !== row.clear_number) {
    out.push(
      `${name}: last dag_run event ${last.state} (clear ${last.clear_number}), database holds ${row.state} (clear ${row.clear_number})`,
    );
  }
  return out;
}
