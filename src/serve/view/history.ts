import type { HistoryEntry } from "../schemas.js";

type Kind = HistoryEntry["kind"];
const KINDS: readonly Kind[] = ["run_state", "run_cleared", "task_state", "task_try", "task_cleared"];
const NULL_INT = -2147483648;

/** State names <-> small codes, shared by every log (Airflow has a dozen states; 0 is null). */
const stateNames: (string | null)[] = [null];
const stateCodes = new Map<string, number>();
function stateCode(s: string | null): number {
  if (s === null) return 0;
  let c = stateCodes.get(s);
  if (c === undefined && stateNames.length < 65535) {
    c = stateNames.length;
    stateNames.push(s);
    stateCodes.set(s, c);
  }
  return c ?? -1;
}

/** The task instance a history entry is about, as the log refers to it (the view's task record). */
export interface TaskRef {
  taskId: string;
  mapIndex: number;
}

/**
 * A run's history, columnar: most of the view's memory would otherwise be history entries (an
 * object and two strings of its own, the position and the commit time, ~190 bytes each; a busy run
 * has several per task instance). Here an entry is ~40 bytes: the position as its LSN and index, the
 * commit time as microseconds, kind and states as codes, the task as a reference to its record.
 * Positions and times that would not format back to the very same string (none the daemon writes)
 * are kept as given, beside the columns.
 */
export class HistoryLog {
  private n = 0;
  dropped = 0;
  private kind = new Uint8Array(4);
  private from = new Uint16Array(4);
  private to = new Uint16Array(4);
  private tries = new Int32Array(4);
  private clears = new Int32Array(4);
  private lsn = new Float64Array(4);
  private index = new Uint32Array(4);
  private micros = new Float64Array(4);
  private tasks: (TaskRef | null)[] = [];
  /** Entry number (counting dropped ones) -> strings that did not fit the columns. */
  private odd: Map<number, { position: string; commitTime: string; from: string | null; to: string | null }> | undefined;

  constructor(private readonly cap: number) {}

  get length(): number {
    return this.n;
  }

  push(e: Omit<HistoryEntry, "task_id" | "map_index">, task: TaskRef | null): void {
    if (this.n === this.kind.length) this.grow();
    const i = this.n++;
    const pos = encodePosition(e.position);
    const us = encodeTime(e.commit_time);
    const from = stateCode(e.from);
    const to = stateCode(e.to);
    this.kind[i] = KINDS.indexOf(e.kind);
    this.from[i] = Math.max(from, 0);
    this.to[i] = Math.max(to, 0);
    this.tries[i] = e.try_number ?? NULL_INT;
    this.clears[i] = e.clear_number ?? NULL_INT;
    this.lsn[i] = pos?.lsn ?? 0;
    this.index[i] = pos?.index ?? 0;
    this.micros[i] = us ?? 0;
    this.tasks[i] = task;
    if (pos === null || us === null || from < 0 || to < 0)
      (this.odd ??= new Map()).set(this.dropped + i, { position: e.position, commitTime: e.commit_time, from: e.from, to: e.to });
    if (this.n > this.cap) this.drop(Math.max(1, Math.floor(this.cap / 10)));
  }

  entries(): HistoryEntry[] {
    const out: HistoryEntry[] = [];
    for (let i = 0; i < this.n; i++) {
      const odd = this.odd?.get(this.dropped + i);
      const task = this.tasks[i] ?? null;
      out.push({
        position: odd?.position ?? formatPosition(this.lsn[i]!, this.index[i]!),
        commit_time: odd?.commitTime ?? formatTime(this.micros[i]!),
        kind: KINDS[this.kind[i]!]!,
        task_id: task?.taskId ?? null,
        map_index: task?.mapIndex ?? null,
        from: odd !== undefined ? odd.from : stateNames[this.from[i]!]!,
        to: odd !== undefined ? odd.to : stateNames[this.to[i]!]!,
        try_number: this.tries[i] === NULL_INT ? null : this.tries[i]!,
        clear_number: this.clears[i] === NULL_INT ? null : this.clears[i]!,
      });
    }
    return out;
  }

  private grow(): void {
    const size = Math.min(this.kind.length * 2, this.cap + 1);
    const bigger = <T extends Uint8Array | Uint16Array | Int32Array | Uint32Array | Float64Array>(a: T, make: (n: number) => T): T => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.kind = bigger(this.kind, (s) => new Uint8Array(s));
    this.from = bigger(this.from, (s) => new Uint16Array(s));
    this.to = bigger(this.to, (s) => new Uint16Array(s));
    this.tries = bigger(this.tries, (s) => new Int32Array(s));
    this.clears = bigger(this.clears, (s) => new Int32Array(s));
    this.lsn = bigger(this.lsn, (s) => new Float64Array(s));
    this.index = bigger(this.index, (s) => new Uint32Array(s));
    this.micros = bigger(this.micros, (s) => new Float64Array(s));
  }

  /** Drops the oldest `k` at once (dropping one per push would move the whole log each time). */
  private drop(k: number): void {
    for (const a of [this.kind, this.from, this.to, this.tries, this.clears, this.lsn, this.index, this.micros]) a.copyWithin(0, k, this.n);
    this.tasks.splice(0, k);
    this.n -= k;
    if (this.odd !== undefined) for (const key of this.odd.keys()) if (key < this.dropped + k) this.odd.delete(key);
    this.dropped += k;
  }
}

/** "XXXXXXXXXXXXXXXX-YYYYYYYY" as numbers, when they format back to the same string. */
function encodePosition(p: string): { lsn: number; index: number } | null {
  const lsn = Number.parseInt(p.slice(0, 16), 16);
  const index = Number.parseInt(p.slice(17), 16);
  if (!Number.isSafeInteger(lsn) || !Number.isSafeInteger(index)) return null;
  return formatPosition(lsn, index) === p ? { lsn, index } : null;
}

function formatPosition(lsn: number, index: number): string {
  return `${lsn.toString(16).toUpperCase().padStart(16, "0")}-${index.toString(16).toUpperCase().padStart(8, "0")}`;
}

/** "2026-11-25T08:17:27.123456Z" as microseconds since the epoch, when it formats back to the same string. */
function encodeTime(t: string): number | null {
  const m = /\.(\d{6})Z$/.exec(t);
  const ms = Date.parse(t);
  if (m === null || !Number.isFinite(ms)) return null;
  const us = Math.floor(ms / 1000) * 1_000_000 + Number(m[1]);
  return formatTime(us) === t ? us : null;
}

function formatTime(us: number): string {
  const seconds = Math.floor(us / 1_000_000);
  const frac = String(us - seconds * 1_000_000).padStart(6, "0");
  return `${new Date(seconds * 1000).toISOString().slice(0, 19)}.${frac}Z`;
}
