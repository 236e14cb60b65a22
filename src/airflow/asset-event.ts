import type { Row, RowChange } from "../decode/types.js";
import { UNCHANGED } from "../decode/types.js";
import type { Logger } from "../log.js";
import { position, type ChangeEvent, type TxContext } from "./envelope.js";
import type { AssetEventEvent } from "./events.js";
import { int, str } from "./row-values.js";

/** What an asset event carries of its asset: 3.x asset (uri, name, group) or 2.x dataset (uri only). */
export interface AssetInfo {
  uri: string | null;
  name: string | null;
  group: string | null;
}

/** One asset/dataset row as read at start (src/source/airflow-rows.ts readAssets). */
export interface AssetRow extends AssetInfo {
  id: number;
}

/** The tables this mapping reads, by Airflow major: the asset table and the event table with its asset column. */
export const ASSET_TABLES = ["asset", "dataset"] as const;
export const ASSET_EVENT_TABLES = ["asset_event", "dataset_event"] as const;

/**
 * asset_event (3.x) / dataset_event (2.x) inserts -> asset_event events. The event row holds only
 * the asset's id; its URI (and 3.x name and group) live in the asset/dataset table, which the
 * publication carries too: every insert or update of it refreshes an id -> asset map, seeded at
 * start from the table itself (seedAsset), so assets created before the daemon are known.
 *
 * Why that map is complete: the stream replays everything after the slot's confirmed position, and
 * the start's read sees every asset row committed before it. An id can only be missing when its
 * row was deleted before the start read it (the installed Airflow 2.11.2 and 3.3.2 have no code
 * deleting asset/dataset rows; an operator could). A lookup at that moment would find nothing either, so a miss publishes the
 * event with a null URI (null key) and a warning, rather than dropping it or stopping the stream.
 *
 * The map is unbounded on purpose: an evicted asset would turn into a miss, and an Airflow
 * installation has thousands of assets, not millions (one small object each; not measured).
 */
export class AssetEventMapper {
  private readonly assets = new Map<number, AssetInfo>();
  private misses = 0;

  constructor(private readonly log: Logger) {}

  get size(): number {
    return this.assets.size;
  }

  /** An asset row read at start. A row the stream carries later overwrites it. */
  seedAsset(row: AssetRow): void {
    this.assets.set(row.id, { uri: row.uri, name: row.name, group: row.group });
  }

  /**
   * A change of the asset/dataset table. Deletes keep the entry: an event of that asset earlier in
   * the replay, or in the same transaction, still maps to its URI.
   */
  asset(change: Exclude<RowChange, { kind: "truncate" }>): void {
    if (change.kind === "delete") return;
    const row = change.row;
    const id = int(row, "id");
    if (id === null) return;
    const prev = this.assets.get(id);
    // An unchanged TOASTed column (a long URI) is not sent with an UPDATE: keep what was known.
    const keep = (col: keyof AssetInfo): string | null => (row[col] === UNCHANGED ? (prev?.[col] ?? null) : str(row, col));
    this.assets.set(id, { uri: keep("uri"), name: keep("name"), group: keep("group") });
  }

  /** An insert into asset_event/dataset_event: always an event. Updates and deletes of events are not events. */
  map(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): AssetEventEvent | null {
    if (change.kind !== "insert") return null;
    const row = change.row;
    const assetId = int(row, "asset_id") ?? int(row, "dataset_id") ?? 0;
    let asset = this.assets.get(assetId);
    if (asset === undefined) {
      this.misses++;
      this.log.warn(
        { asset_id: assetId, table: change.relation.name, misses_total: this.misses },
        "asset event of an asset the daemon never saw (its row was deleted before the start read the table): published with a null URI and a null key",
      );
      asset = { uri: null, name: null, group: null };
    }
    return {
      type: "asset_event",
      asset: { uri: asset.uri, name: asset.name, group: asset.group },
      asset_id: assetId,
      extra: extraOf(row),
      source_dag_id: str(row, "source_dag_id"),
      source_task_id: str(row, "source_task_id"),
      source_run_id: str(row, "source_run_id"),
      source_map_index: int(row, "source_map_index"),
      timestamp: str(row, "timestamp") ?? tx.commitTime,
      source: position(ev, tx),
    };
  }
}

/** The row's JSON `extra` as an object: {} when null; a JSON value that is not an object is kept under "value". */
function extraOf(row: Row): Record<string, unknown> {
  const v = row.extra;
  if (v === null || v === undefined || v === UNCHANGED) return {};
  if (typeof v === "object" && !Array.isArray(v) && !Buffer.isBuffer(v)) return v;
  return { value: v };
}
