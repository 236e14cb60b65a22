import type { ColumnValue, RowChange } from "../decode/types.js";
import { UNCHANGED } from "../decode/types.js";
import type { Logger } from "../log.js";
import { position, type ChangeEvent, type TxContext } from "./envelope.js";
import { NotificationValue, type NotificationEvent } from "./events.js";
import type { RunContextCache } from "./run-context-cache.js";
import { tiKey } from "./row-keys.js";
import { int, str } from "./row-values.js";
import type { TaskInstanceMapper } from "./task-instance.js";

export interface NotificationOptions {
  /** XCom key whose values become notifications; null: XComs are ignored. */
  xcomKey: string | null;
  /** Largest raw value carried by a notification that failed validation. */
  notificationRawMaxBytes: number;
}

type Parsed = { ok: true; value: unknown; rawText: string } | { ok: false; error: string; rawText: string };

/** 3.x stores XCom values as jsonb (decoded already); 2.x as bytea holding JSON, or a pickle. */
function parseXComValue(v: ColumnValue | undefined): Parsed {
  if (v === undefined || v === null) return { ok: false, error: "the XCom value is empty", rawText: "" };
  if (Buffer.isBuffer(v)) {
    const text = v.toString("utf8");
    if (!Buffer.from(text, "utf8").equals(v)) {
      return {
        ok: false,
        error: "the XCom value is not JSON (a pickled XCom? enable_xcom_pickling must be off)",
        rawText: v.toString("base64"),
      };
    }
    try {
      return { ok: true, value: JSON.parse(text) as unknown, rawText: text };
    } catch {
      return { ok: false, error: "the XCom value is not valid JSON", rawText: text };
    }
  }
  // jsonb arrives parsed: the raw text is its JSON form (a JSON string keeps its quotes, as on 2.x).
  return { ok: true, value: v, rawText: JSON.stringify(v) };
}

/** The original PushOperator's camelCase names, accepted as aliases. */
function withSnakeCase(v: unknown): unknown {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return v;
  const o = { ...(v as Record<string, unknown>) };
  for (const [from, to] of [
    ["requestId", "request_id"],
    ["payloadURI", "payload_uri"],
    ["payloadUri", "payload_uri"],
  ] as const) {
    if (from in o && !(to in o)) {
      o[to] = o[from];
      delete o[from];
    }
  }
  return o;
}

/** xcom row changes -> notification events: a task's notification is an XCom written under the configured key. */
export class NotificationMapper {
  constructor(
    private readonly opts: NotificationOptions,
    private readonly log: Logger,
    private readonly tis: TaskInstanceMapper,
    private readonly contexts: RunContextCache,
  ) {}

  /** Setting an XCom is DELETE + INSERT: the INSERT is the notification. */
  map(change: Exclude<RowChange, { kind: "truncate" }>, ev: ChangeEvent, tx: TxContext): NotificationEvent | null {
    if (change.kind === "delete") return null;
    const row = change.row;
    const key = str(row, "key");
    if (key === null || key !== this.opts.xcomKey) return null;
    const dagId = str(row, "dag_id") ?? "";
    const taskId = str(row, "task_id") ?? "";
    const runId = str(row, "run_id") ?? "";
    const mapIndex = int(row, "map_index") ?? -1;
    const base = {
      type: "notification" as const,
      dag_id: dagId,
      task_id: taskId,
      run_id: runId,
      map_index: mapIndex,
      try_number: this.tis.tryOf(tiKey(dagId, taskId, runId, mapIndex)),
      logical_date: this.contexts.fields(dagId, runId).logical_date,
      time: str(row, "timestamp") ?? tx.commitTime,
      xcom_key: key,
      source: position(ev, tx),
    };
    const empty = { request_id: null, start: null, end: null, metadata: null, payload: null, payload_uri: null, files: null };
    const raw = row.value;
    const parsed = parseXComValue(raw === UNCHANGED ? undefined : raw);
    if (!parsed.ok) return this.invalid(base, empty, parsed.error, parsed.rawText);
    const checked = NotificationValue.safeParse(withSnakeCase(parsed.value));
    if (!checked.success) {
      const message = checked.error.issues.map((i) => `${i.path.join(".") || "value"}: ${i.message}`).join("; ");
      return this.invalid(base, empty, message, parsed.rawText);
    }
    const v = checked.data;
    return {
      ...base,
      request_id: v.request_id ?? null,
      start: v.start ?? null,
      end: v.end ?? null,
      metadata: v.metadata ?? null,
      payload: v.payload ?? null,
      payload_uri: v.payload_uri ?? null,
      files: v.files ?? null,
      error: null,
    };
  }

  private invalid<B extends { dag_id: string; task_id: string; run_id: string }, E>(base: B, empty: E, message: string, rawText: string) {
    const max = this.opts.notificationRawMaxBytes;
    const bytes = Buffer.byteLength(rawText);
    const truncated = bytes > max;
    const raw = truncated ? Buffer.from(rawText).subarray(0, max).toString("utf8") : rawText;
    this.log.warn(
      { dag_id: base.dag_id, task_id: base.task_id, run_id: base.run_id, error: message },
      "notification XCom does not validate; published with its error",
    );
    return { ...base, ...empty, error: { message, raw, truncated } };
  }
}
