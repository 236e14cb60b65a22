import type { Message } from "kafkajs";
import { z } from "zod";
import type { DagRunEvent, StreamEvent, TaskInstanceEvent } from "../airflow/events.js";
import { assertNever } from "../errors.js";
import type { Logger } from "../log.js";
import { parseEventValue } from "./wire-format.js";

/**
 * The current-state topic (EVENTSTREAM_STATE_TOPIC, compacted): under each task instance's and DAG
 * run's identity, the latest event about it, exactly as published on the event topic; a delete is a
 * tombstone. It is written with the events (same produce request; in exactly-once the same
 * transaction: see Publisher), so a reader gets a state as of a position without reading the whole
 * event history, and the events after that position from the event topic.
 *
 * Keys are UTF-8 JSON with a fixed field order, so equal identities are equal bytes (compaction
 * compares bytes):
 *   {"type":"task_instance","dag_id":D,"run_id":R,"task_id":T,"map_index":M}
 *   {"type":"dag_run","dag_id":D,"run_id":R}
 *   {"type":"table_truncated","table":"task_instance" | "dag_run"}
 * A TRUNCATE cannot be written as tombstones (the daemon cannot enumerate the keys it removed), so
 * its event goes under the table's key, and readers apply the truncate rule (applyStateRecord): an
 * entry of that table whose position is lower than the truncate's is gone. Notifications (xcom) are
 * not state and are not written here.
 */

/** One record of the state topic: `value` null is a tombstone. */
export interface StateRecord {
  key: string;
  value: string | null;
}

type StateTable = "task_instance" | "dag_run";

/** The key of a task instance's or DAG run's state record; null when the event does not say whose it is (see StateRecords). */
export function stateKey(event: TaskInstanceEvent | DagRunEvent): string | null {
  if (!event.dag_id || !event.run_id) return null;
  // Written out rather than JSON.stringify of a new object (once per event): the same bytes, the
  // strings escaped by JSON.stringify itself, the integer map_index as JSON writes it. Joined, not
  // a template: a template is a tree of ~9 cons strings until something flattens it, and the key
  // waits for Kafka (thousands in flight), so the collector copied and marked every node.
  const dagRun = dagRunPart(event.dag_id, event.run_id);
  if (event.type === "dag_run") return ['{"type":"dag_run",', dagRun, "}"].join("");
  if (!event.task_id || event.map_index === null) return null;
  return [
    '{"type":"task_instance",',
    dagRun,
    ',"task_id":',
    JSON.stringify(event.task_id),
    ',"map_index":',
    JSON.stringify(event.map_index),
    "}",
  ].join("");
}

/** The last run's `"dag_id":..,"run_id":..` part: consecutive events are mostly of one run (a scheduler wave, its workers). */
let lastDagId = "";
let lastRunId = "";
let lastDagRun = "";

function dagRunPart(dagId: string, runId: string): string {
  if (dagId !== lastDagId || runId !== lastRunId || lastDagRun === "") {
    lastDagRun = ['"dag_id":', JSON.stringify(dagId), ',"run_id":', JSON.stringify(runId)].join("");
    lastDagId = dagId;
    lastRunId = runId;
  }
  return lastDagRun;
}

/** The key under which a TRUNCATE of `table` is written. */
export function truncateStateKey(table: StateTable): string {
  return JSON.stringify({ type: "table_truncated", table });
}

/**
 * The state records of one event, made by the one function every writer uses (the message loop;
 * the snapshot). Counts, and warns of once per instance (one per session), the deletes it cannot
 * key: on Airflow 3.x the WAL names a deleted task_instance row by its id alone, and unless the
 * daemon saw the row earlier its dag_id, run_id and task_id are unknown. The old state then stays
 * in the topic; REPLICA IDENTITY FULL on the table makes the WAL carry the whole row.
 */
export class StateRecords {
  /** Deletes that could not be keyed, this session. */
  unkeyed = 0;
  /** State records left out because they were over EVENTSTREAM_MAX_MESSAGE_BYTES, this session. */
  oversized = 0;

  constructor(private readonly log: Logger) {}

  /** The records to write with `event`, whose JSON (as published) is `value`; undefined when none. */
  of(event: StreamEvent, value: string): StateRecord[] | undefined {
    switch (event.type) {
      // A gap voids no row by itself: the snapshot requested with it writes every row again.
      case "notification":
      case "asset_event":
      case "stream_gap":
        return undefined;
      case "table_truncated": {
        const tables = event.tables.filter((t): t is StateTable => t !== "xcom");
        return tables.length === 0 ? undefined : tables.map((t) => ({ key: truncateStateKey(t), value }));
      }
      case "task_instance":
      case "dag_run": {
        const key = stateKey(event);
        if (key === null) {
          this.unkeyedDelete(event);
          return undefined;
        }
        return [{ key, value: event.op === "delete" ? null : value }];
      }
      default:
        return assertNever(event);
    }
  }

  /** An event's state records are over the size limit: left out (the event itself took the dead-letter path, or went alone). */
  leftOut(event: StreamEvent, bytes: number): void {
    this.oversized++;
    this.log.warn(
      { type: event.type, position: event.source.position, bytes, state_records_left_out_total: this.oversized },
      "a state record over EVENTSTREAM_MAX_MESSAGE_BYTES was not written: the current-state topic keeps the row's previous state until its next change",
    );
  }

  private unkeyedDelete(event: TaskInstanceEvent | DagRunEvent): void {
    this.unkeyed++;
    if (this.unkeyed > 1) return;
    this.log.warn(
      { table: event.type, position: event.source.position },
      `a ${event.type} row was deleted whose identity the WAL did not carry (REPLICA IDENTITY DEFAULT, row not seen since start): its entry stays in the current-state topic. Set REPLICA IDENTITY FULL on the table (EVENTSTREAM_REPLICA_IDENTITY=full) so deletes carry the whole row; said once per session`,
    );
  }
}

/**
 * The state topic's messages of one produce request, in batch order: each event's state records,
 * and the records a replay re-sends to the state topic itself (MessageLoop), interleaved as pushed,
 * so each key's records keep the order of the changes.
 */
export function stateMessages(
  batch: readonly { topic: string; key: string | null; value: string | null; state?: readonly StateRecord[] }[],
  stateTopic: string,
): Message[] {
  // Only each key's last record of the request is written. A key's records all land in one
  // partition's batch of this one request, written whole or not at all (a transaction in
  // exactly-once), so the earlier ones could only ever be overwritten within it: compaction and
  // the fold keep the last. Under load a task instance moves several times per request, and
  // writing each move cost about a third of the drain rate.
  // Walked from the end (each key's last record is met first), in push order reversed: a
  // record on the state topic itself before the state records pushed with it. A StateRecord is
  // already a Kafka message ({ key, value }): handed over as is, no copy per event.
  const seen = new Set<string>();
  const last: Message[] = [];
  for (let i = batch.length - 1; i >= 0; i--) {
    const r = batch[i]!;
    const state = r.state;
    if (state !== undefined) {
      for (let j = state.length - 1; j >= 0; j--) {
        const st = state[j]!;
        if (seen.has(st.key)) continue;
        seen.add(st.key);
        last.push(st);
      }
    }
    if (r.topic !== stateTopic) continue;
    if (r.key !== null) {
      if (seen.has(r.key)) continue;
      seen.add(r.key);
    }
    last.push({ key: r.key, value: r.value });
  }
  return last.reverse();
}

const StateKey = z.discriminatedUnion("type", [
  z.object({ type: z.literal("task_instance"), dag_id: z.string(), run_id: z.string(), task_id: z.string(), map_index: z.number().int() }),
  z.object({ type: z.literal("dag_run"), dag_id: z.string(), run_id: z.string() }),
  z.object({ type: z.literal("table_truncated"), table: z.enum(["task_instance", "dag_run"]) }),
]);

/** What a reader needs of a record's value; the rest is the event as published (src/airflow/events.ts). */
const StateValue = z.object({ source: z.object({ position: z.string().regex(/^[0-9A-F]{16}-[0-9A-F]{8}$/) }).passthrough() }).passthrough();

/** One entry of the folded state: the latest event of a task instance or DAG run. */
export interface StateEntry {
  table: StateTable;
  position: string;
  event: Record<string, unknown>;
}

/** The state topic folded: key -> entry, with the latest truncate of each table and the highest position seen. */
export interface FoldedState {
  entries: Map<string, StateEntry>;
  /** table -> position of its latest TRUNCATE. */
  truncated: Map<StateTable, string>;
  /** The highest `source.position` of any record read; null: none yet. */
  position: string | null;
  /** Records whose key or value was not the state topic's format (skipped). */
  invalid: number;
}

export function emptyState(): FoldedState {
  return { entries: new Map(), truncated: new Map(), position: null, invalid: 0 };
}

/**
 * Applies one record of the state topic, in offset order per partition. Per key the last record
 * wins, as compaction keeps it: a tombstone removes the key. A table_truncated record removes every
 * entry of its table whose position is lower, and an entry arriving with a position lower than its
 * table's latest truncate is dropped (partitions are read in no common order, and a replay may
 * write an entry again after the truncate that removed it). Positions compare as strings.
 */
export function applyStateRecord(state: FoldedState, key: string | Buffer | null, value: string | Buffer | null): void {
  const k = parseJson(key, StateKey);
  if (k === null) {
    state.invalid++;
    return;
  }
  if (value === null) {
    if (k.type !== "table_truncated") state.entries.delete(keyText(key!));
    return;
  }
  const v = parseJson(value, StateValue);
  if (v === null) {
    state.invalid++;
    return;
  }
  const position = v.source.position;
  if (state.position === null || position > state.position) state.position = position;
  if (k.type === "table_truncated") {
    const before = state.truncated.get(k.table);
    if (before !== undefined && before >= position) return;
    state.truncated.set(k.table, position);
    for (const [key, entry] of state.entries) if (entry.table === k.table && entry.position < position) state.entries.delete(key);
    return;
  }
  const truncatedAt = state.truncated.get(k.type);
  if (truncatedAt !== undefined && position < truncatedAt) {
    state.entries.delete(keyText(key!));
    return;
  }
  state.entries.set(keyText(key!), { table: k.type, position, event: v });
}

function keyText(key: string | Buffer): string {
  return typeof key === "string" ? key : key.toString("utf8");
}

function parseJson<T extends z.ZodType>(raw: string | Buffer | null, schema: T): z.infer<T> | null {
  if (raw === null) return null;
  try {
    // Keys are plain JSON; values may be in the registry's wire format (wire-format.ts).
    const r = schema.safeParse(parseEventValue(raw));
    return r.success ? (r.data as z.infer<T>) : null;
  } catch {
    return null;
  }
}
