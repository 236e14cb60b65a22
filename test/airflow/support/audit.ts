import type { DagRunEvent, StreamEvent, TaskInstanceEvent } from "../../../src/airflow/events.js";
import { withPg } from "../../support/harness.js";
import { tiName } from "./sequences.js";

/**
 * An independent record of what Airflow committed, to judge the events by: a test-only trigger on
 * task_instance and dag_run writes every row version (INSERT, each UPDATE, DELETE) into an audit
 * table, in Airflow's own transactions, so a version is in the audit exactly when Airflow's change
 * committed (a rollback, a savepoint rolled back, takes its audit rows with it).
 *
 * From the audit this file derives the transitions as docs/events.md "What counts as a transition" defines
 * them, written here from that definition and not from src/airflow/mapper.ts: an INSERT and a
 * DELETE are always one; an UPDATE of a task instance is one when state, try_number or map_index
 * changed; of a DAG run when state or clear_number changed.
 *
 * Order: the audit's sequence number is taken when the trigger fires, inside the writing
 * transaction, so across rows it is not commit order. Per row it is: a second transaction updating
 * a row waits on the first's row lock until that one commits, so one row's versions are numbered in
 * commit order, and within one transaction in statement order, which is the WAL's. Events are only
 * ordered per DAG (one Kafka key), and what is compared here is per task instance and per DAG run,
 * so per-row order is all the comparison needs; each transition also carries its transaction's id,
 * which pins the event to the very commit that made it.
 *
 * The audit lives in a schema of its own: the daemon publishes only the tables it names
 * (src/source/preflight.ts, `CREATE PUBLICATION … FOR TABLE` in Airflow's schema), never this one; the
 * suite checks that too (`publishedTables`).
 */

export const AUDIT_SCHEMA = "eventstream_test_audit";

/** One committed row version, as the trigger wrote it. */
export interface AuditRow {
  seq: string;
  /** txid_current(): the transaction's 64-bit id (epoch and xid). */
  txid: string;
  tbl: "task_instance" | "dag_run";
  op: "insert" | "update" | "delete";
  old: RowImage | null;
  new: RowImage | null;
}

/** The columns the trigger keeps of a row: identity (2.x natural key; 3.x also `id`), state, try, clear. */
export interface RowImage {
  id?: string | number;
  dag_id: string;
  task_id?: string;
  run_id: string;
  map_index?: number;
  state: string | null;
  try_number?: number | null;
  clear_number?: number | null;
}

/** Installs the audit in `database` (before anything runs: `CREATE DATABASE … TEMPLATE` copies it). */
export async function installAudit(database: string): Promise<void> {
  const kept = ["id", "dag_id", "task_id", "run_id", "map_index", "state", "try_number", "clear_number"];
  await withPg(database, (c) =>
    c.query(`
      CREATE SCHEMA ${AUDIT_SCHEMA};
      CREATE TABLE ${AUDIT_SCHEMA}.row_version (
        seq bigserial PRIMARY KEY,
        txid bigint NOT NULL DEFAULT txid_current(),
        tbl text NOT NULL,
        op text NOT NULL,
        old jsonb,
        new jsonb
      );
      -- to_jsonb(row) with only the kept keys: the same function on 2.x (no task_instance.id) and 3.x.
      CREATE FUNCTION ${AUDIT_SCHEMA}.keep(r jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
        SELECT jsonb_object_agg(k, v) FROM jsonb_each(r) AS e(k, v) WHERE k = ANY('{${kept.join(",")}}'::text[])
      $$;
      CREATE FUNCTION ${AUDIT_SCHEMA}.record() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO ${AUDIT_SCHEMA}.row_version (tbl, op, old, new) VALUES (
          TG_TABLE_NAME,
          lower(TG_OP),
          CASE WHEN TG_OP <> 'INSERT' THEN ${AUDIT_SCHEMA}.keep(to_jsonb(OLD)) END,
          CASE WHEN TG_OP <> 'DELETE' THEN ${AUDIT_SCHEMA}.keep(to_jsonb(NEW)) END
        );
        RETURN NULL;
      END
      $$;
      CREATE TRIGGER eventstream_test_audit AFTER INSERT OR UPDATE OR DELETE ON task_instance
        FOR EACH ROW EXECUTE FUNCTION ${AUDIT_SCHEMA}.record();
      CREATE TRIGGER eventstream_test_audit AFTER INSERT OR UPDATE OR DELETE ON dag_run
        FOR EACH ROW EXECUTE FUNCTION ${AUDIT_SCHEMA}.record();
    `),
  );
}

export async function readAudit(database: string): Promise<AuditRow[]> {
  return withPg(
    database,
    async (c) =>
      (await c.query<AuditRow>(`SELECT seq::text, txid::text, tbl, op, old, new FROM ${AUDIT_SCHEMA}.row_version AS v ORDER BY v.seq`))
        .rows,
  );
}

/** The tables the publication holds, schema-qualified: the audit must not be among them. */
export async function publishedTables(database: string, publication: string): Promise<string[]> {
  return withPg(database, async (c) =>
    (
      await c.query<{ t: string }>("SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", [
        publication,
      ])
    ).rows.map((r) => r.t),
  );
}

/** A transition Airflow committed, in the terms an event states it. */
export interface AuditTransition {
  op: "insert" | "update" | "delete";
  state: string | null;
  try_number: number | null;
  map_index: number;
  clear_number: number | null;
  /** The row's values before the change (null for an insert; for a delete, the deleted row's). */
  previous_state: string | null;
  previous_try_number: number | null;
  /** The 32-bit xid PostgreSQL's WAL (and so the event's source.xid) carries. */
  xid: number;
}

/** One task instance or DAG run through its whole life in the audit. */
export interface AuditChain {
  kind: "task_instance" | "dag_run";
  dag_id: string;
  run_id: string;
  /** `task` or `task[i]` (the map index the row ended with) for a task instance; `run` for a DAG run. */
  name: string;
  /** Every committed version (the last one is what the table holds now, unless deleted). */
  versions: AuditRow[];
  transitions: AuditTransition[];
}

export interface AuditReading {
  chains: AuditChain[];
  /** Inconsistencies inside the audit itself (an UPDATE whose old row is not the version before it, ...). */
  problems: string[];
}

/**
 * Follows each row through its versions: a task instance by its natural key (dag_id, task_id,
 * run_id, map_index), moved along when an UPDATE changes it (the -1 row of a mapped task becoming
 * index 0; 3.x's new `id` per try leaves the natural key alone); a DAG run by its id.
 */
export function auditChains(rows: AuditRow[]): AuditReading {
  const problems: string[] = [];
  const live = new Map<string, AuditChain>();
  const all: AuditChain[] = [];
  const keyOf = (tbl: string, r: RowImage) =>
    tbl === "dag_run" ? `run\u0000${r.id}` : `ti\u0000${r.dag_id}\u0000${r.task_id}\u0000${r.run_id}\u0000${r.map_index}`;
  for (const row of rows) {
    const xid = Number(BigInt(row.txid) & 0xffffffffn);
    const image = (row.op === "delete" ? row.old : row.new)!;
    if (row.op === "insert") {
      const key = keyOf(row.tbl, image);
      if (live.has(key)) problems.push(`audit seq ${row.seq}: INSERT of ${key} while that row exists`);
      const chain: AuditChain = { kind: row.tbl, dag_id: image.dag_id, run_id: image.run_id, name: "", versions: [], transitions: [] };
      live.set(key, chain);
      all.push(chain);
      chain.versions.push(row);
      chain.transitions.push(transition(row, image, null, xid));
      continue;
    }
    const old = row.old!;
    const oldKey = keyOf(row.tbl, old);
    const chain = live.get(oldKey);
    if (!chain) {
      problems.push(`audit seq ${row.seq}: ${row.op.toUpperCase()} of ${oldKey}, a row the audit never saw inserted`);
      continue;
    }
    const before = chain.versions[chain.versions.length - 1]!;
    const last = (before.op === "delete" ? before.old : before.new)!;
    if (!sameImage(last, old))
      problems.push(
        `audit seq ${row.seq}: the old row ${JSON.stringify(old)} is not the version before it (seq ${before.seq}: ${JSON.stringify(last)})`,
      );
    chain.versions.push(row);
    if (row.op === "delete") {
      live.delete(oldKey);
      chain.transitions.push(transition(row, old, old, xid));
      continue;
    }
    const next = row.new!;
    const newKey = keyOf(row.tbl, next);
    if (newKey !== oldKey) {
      if (live.has(newKey)) problems.push(`audit seq ${row.seq}: UPDATE moves ${oldKey} onto ${newKey}, which exists`);
      live.delete(oldKey);
      live.set(newKey, chain);
    }
    const changed =
      row.tbl === "dag_run"
        ? old.state !== next.state || old.clear_number !== next.clear_number
        : old.state !== next.state || old.try_number !== next.try_number || old.map_index !== next.map_index;
    if (changed) chain.transitions.push(transition(row, next, old, xid));
  }
  for (const chain of all) {
    const last = chain.versions[chain.versions.length - 1]!;
    const image = (last.op === "delete" ? last.old : last.new)!;
    chain.name = chain.kind === "dag_run" ? "run" : tiName(image.task_id!, image.map_index!);
  }
  return { chains: all, problems };
}

function transition(row: AuditRow, image: RowImage, before: RowImage | null, xid: number): AuditTransition {
  return {
    op: row.op,
    state: image.state,
    try_number: image.try_number ?? null,
    map_index: image.map_index ?? -1,
    clear_number: image.clear_number ?? null,
    previous_state: before ? before.state : null,
    previous_try_number: before ? (before.try_number ?? null) : null,
    xid,
  };
}

function sameImage(a: RowImage, b: RowImage): boolean {
  return (
    a.state === b.state &&
    a.try_number === b.try_number &&
    a.map_index === b.map_index &&
    a.clear_number === b.clear_number &&
    a.task_id === b.task_id
  );
}

/** A transition in the suite's notation (support/sequences.ts), with the transaction that committed it. */
export function token(
  t: { op: string; state: string | null; try_number?: number | null; map_index?: number | null; clear_number?: number | null; xid: number },
  kind: AuditChain["kind"],
): string {
  const op = t.op === "insert" ? "+" : t.op === "delete" ? "-" : "";
  const detail = kind === "dag_run" ? `#${t.clear_number}` : `/${t.try_number}[${t.map_index}]`;
  return `${op}${t.state ?? "none"}${detail} x${t.xid}`;
}

/** The audit's chain in the notation of test/airflow/expected.ts (for the scripted check). */
export function renderAudit(chain: AuditChain): string {
  return chain.transitions
    .map((t, i) => {
      const prev = chain.transitions[i - 1];
      const op = t.op === "insert" ? "+" : t.op === "delete" ? "-" : "";
      if (chain.kind === "dag_run")
        return `${op}${t.state ?? "none"}${prev && prev.clear_number !== t.clear_number ? `#${t.clear_number}` : ""}`;
      return `${op}${prev && prev.map_index !== t.map_index ? `[${t.map_index}]` : ""}${t.state ?? "none"}/${t.try_number}`;
    })
    .join(" ");
}

/** An event in the same terms as `token`. */
export function eventToken(e: TaskInstanceEvent | DagRunEvent): string {
  return token({ ...e, xid: e.source.xid }, e.type);
}

/**
 * The events of one chain checked against its audit transitions, beyond the tokens (which the
 * caller compares whole): the previous state and try each event states are the row's before the
 * change. `previous_state_known: false` is accepted only after a daemon session restart (docs/events.md:
 * the daemon's memory of rows starts empty), and then the previous fields must be null.
 */
export function previousProblems(
  name: string,
  events: (TaskInstanceEvent | DagRunEvent)[],
  audit: AuditTransition[],
  restarted: boolean,
): string[] {
  const out: string[] = [];
  events.forEach((e, i) => {
    const t = audit[i];
    if (!t) return;
    const at = `${name} event ${i} (${eventToken(e)})`;
    if (!e.previous_state_known) {
      if (!restarted) out.push(`${at}: previous_state_known false, but the daemon did not restart`);
      if (e.previous_state !== null || (e.type === "task_instance" && e.previous_try_number !== null))
        out.push(`${at}: previous fields set although previous_state_known is false`);
      return;
    }
    if (e.previous_state !== t.previous_state)
      out.push(`${at}: previous_state ${e.previous_state}, Airflow's row held ${t.previous_state}`);
    if (e.type === "task_instance" && e.previous_try_number !== t.previous_try_number) {
      out.push(`${at}: previous_try_number ${e.previous_try_number}, Airflow's row held ${t.previous_try_number}`);
    }
  });
  return out;
}

/** Task-instance and DAG-run events a chain of events cannot be attributed to (a delete without its key). */
export function unattributable(events: StreamEvent[]): StreamEvent[] {
  return events.filter(
    (e) =>
      (e.type === "task_instance" && (e.dag_id === null || e.task_id === null || e.run_id === null || e.map_index === null)) ||
      (e.type === "dag_run" && e.dag_id === null),
  );
}
