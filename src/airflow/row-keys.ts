import type { Relation, Row } from "../decode/types.js";
import { UNCHANGED } from "../decode/types.js";
import { int, str } from "./row-values.js";

/** The cache key of a DAG run's context. NUL joins the parts: PostgreSQL text cannot contain it. */
export function runKey(dagId: string, runId: string): string {
  return [dagId, runId].join("\u0000");
}

/**
 * A task instance by name, as XComs and 2.x's primary key name it. join(), not a template: a
 * template builds a tree of cons strings that keeps the decoded row's strings alive for as long as
 * the key sits in a cache (measured: ~250 B more per entry).
 */
export function tiKey(dagId: string, taskId: string, runId: string, mapIndex: number): string {
  return [dagId, taskId, runId, mapIndex].join("\u0000");
}

const NATURAL_KEY = ["dag_id", "task_id", "run_id", "map_index"];

/**
 * Airflow's primary keys, by table and version. Under REPLICA IDENTITY FULL the Relation message
 * flags every column as part of the key, so the flags would make the whole row its own key (every
 * heartbeat a row never seen before). Known by name rather than read from pg_index at start: the
 * key must follow the Relation messages of the WAL being decoded, not the catalog as it is now
 * (Airflow 3.0's migration turns the composite key into `id`; a slot may still hold 2.x changes),
 * and the mapper stays a pure function of the stream. The two shapes are Airflow's since 2.3
 * (map_index) and 3.0 (id); a version that changed them would need a line here.
 */
function airflowPrimaryKey(rel: Relation): readonly string[] {
  if (rel.name === "task_instance") {
    // 3.x: id uuid (a new one per try); 2.x has no id column.
    return rel.columns.some((c) => c.name === "id") ? ["id"] : NATURAL_KEY;
  }
  return ["id"];
}

/**
 * The columns that name a row, in column order. The Relation's key flags when they name it (DEFAULT:
 * the primary key; USING INDEX: a unique index, and then the old key tuple holds only those
 * columns), so that under DEFAULT keys are what they always were; Airflow's primary key by name
 * under FULL (every column flagged) and NOTHING (none).
 */
function rowKeyColumns(rel: Relation): string[] {
  if (rel.replicaIdentity === "d" || rel.replicaIdentity === "i") {
    const flagged = rel.columns.filter((c) => c.isKey).map((c) => c.name);
    if (flagged.length > 0) return flagged;
  }
  const pk = new Set(airflowPrimaryKey(rel));
  return rel.columns.filter((c) => pk.has(c.name)).map((c) => c.name);
}

interface KeyColumns {
  cols: string[];
  /** 2.x task instances: named by (dag, task, run, map index), the same string as tiKey, kept once. */
  natural: boolean;
}

/** The key naming each row in the state caches, with the key columns worked out once per Relation message. */
export class RowKeys {
  /** Per Relation message rather than per table: rowKey runs for every row, and an ALTER TABLE sends a new one. */
  private readonly keyColumns = new WeakMap<Relation, KeyColumns>();
  /** The last Relation asked about and its key: rows come table by table, and this runs twice per change. */
  private lastRel: Relation | null = null;
  private lastKey: KeyColumns | null = null;

  keyOf(rel: Relation): KeyColumns {
    if (rel === this.lastRel) return this.lastKey!;
    let key = this.keyColumns.get(rel);
    if (key === undefined) {
      const cols = rowKeyColumns(rel);
      key = {
        cols,
        natural: rel.name === "task_instance" && cols.length === NATURAL_KEY.length && NATURAL_KEY.every((k) => cols.includes(k)),
      };
      this.keyColumns.set(rel, key);
    }
    this.lastRel = rel;
    this.lastKey = key;
    return key;
  }

  /** The row's primary-key values, joined (flat, see tiKey): the key of the state caches. */
  rowKey(rel: Relation, row: Row): string {
    const { cols, natural } = this.keyOf(rel);
    if (natural) {
      return tiKey(str(row, "dag_id") ?? "", str(row, "task_id") ?? "", str(row, "run_id") ?? "", int(row, "map_index") ?? -1);
    }
    // One key column (3.x's id, dag_run's id): its value itself, no array per row.
    if (cols.length === 1) return keyPart(row[cols[0]!]);
    const parts: string[] = [];
    for (const name of cols) {
      parts.push(keyPart(row[name]));
    }
    return parts.join("\u0000");
  }
}

/** One key column's value as it goes into a row key: absent or not sent (UNCHANGED) is "". */
function keyPart(v: Row[string] | undefined): string {
  return v === undefined || v === UNCHANGED ? "" : String(v);
}
