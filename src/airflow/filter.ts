import type { StreamEvent } from "./events.js";
import { assertNever } from "../errors.js";

/**
 * EVENTSTREAM_INCLUDE_DAGS / _EXCLUDE_DAGS / _INCLUDE_TASKS / _EXCLUDE_TASKS: which events are
 * published. Each is a list of globs (`*` any run of characters, `?` one character, anything else
 * itself, case-sensitive, matched against the whole id); the lists are validated by the settings'
 * schema (src/config/settings.ts), so a glob here is never malformed.
 *
 * The filter decides publication only: the loop still maps every change (the mapper's memory of a
 * row stays exact whatever is filtered) and a transaction of filtered changes is still a commit for
 * the acknowledgement rule.
 */
export interface FilterLists {
  includeDags: readonly string[];
  excludeDags: readonly string[];
  includeTasks: readonly string[];
  excludeTasks: readonly string[];
}

export const NO_FILTERS: FilterLists = { includeDags: [], excludeDags: [], includeTasks: [], excludeTasks: [] };

/** A glob as an anchored regular expression: every character but `*` and `?` stands for itself. */
export function globToRegExp(glob: string): RegExp {
  let src = "";
  for (const ch of glob) {
    if (ch === "*") src += "[\\s\\S]*";
    else if (ch === "?") src += "[\\s\\S]";
    // Only the syntax characters: under the u flag any other escape is an error.
    else src += ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  // The u flag: `?` is one character, also outside the BMP.
  return new RegExp(`^(?:${src})$`, "u");
}

/** A list of globs: names without `*` or `?` are looked up, the others tried as one expression. */
export class GlobList {
  private readonly exact: Set<string>;
  private readonly pattern: RegExp | null;

  constructor(readonly globs: readonly string[]) {
    this.exact = new Set(globs.filter((g) => !/[*?]/.test(g)));
    const wild = globs.filter((g) => /[*?]/.test(g));
    this.pattern = wild.length === 0 ? null : new RegExp(wild.map((g) => globToRegExp(g).source).join("|"), "u");
  }

  get empty(): boolean {
    return this.globs.length === 0;
  }

  matches(name: string): boolean {
    return this.exact.has(name) || (this.pattern !== null && this.pattern.test(name));
  }
}

/** Decisions remembered per id, at most; a DAG or task id seen again is then one map lookup. */
const REMEMBERED = 10_000;

/** An include list and an exclude list over one kind of id: excluded beats included; an empty include list includes all. */
class IdFilter {
  private readonly include: GlobList;
  private readonly exclude: GlobList;
  private readonly decided = new Map<string, boolean>();

  constructor(include: readonly string[], exclude: readonly string[]) {
    this.include = new GlobList(include);
    this.exclude = new GlobList(exclude);
  }

  get active(): boolean {
    return !this.include.empty || !this.exclude.empty;
  }

  /** null: an id the WAL did not carry (a 3.x task-instance delete of a row not seen before): published, since it may be an included one's. */
  admits(id: string | null): boolean {
    if (id === null) return true;
    let ok = this.decided.get(id);
    if (ok !== undefined) return ok;
    ok = !this.exclude.matches(id) && (this.include.empty || this.include.matches(id));
    // Ids are few in practice (DAGs, tasks); a flood of new ones starts the memory over rather than grow it.
    if (this.decided.size >= REMEMBERED) this.decided.clear();
    this.decided.set(id, ok);
    return ok;
  }
}

export class EventFilter {
  private readonly dags: IdFilter;
  private readonly tasks: IdFilter;

  constructor(readonly lists: FilterLists) {
    this.dags = new IdFilter(lists.includeDags, lists.excludeDags);
    this.tasks = new IdFilter(lists.includeTasks, lists.excludeTasks);
  }

  /** False when no list is set: every event is published. */
  get active(): boolean {
    return this.dags.active || this.tasks.active;
  }

  /**
   * Whether the event is published. DAG lists apply to task_instance, dag_run and notification
   * events, task lists to task_instance and notification events (a run has no task); stream_gap
   * and table_truncated speak of every DAG and are always published; an asset_event goes by its
   * source DAG and task.
   */
  admits(event: StreamEvent): boolean {
    switch (event.type) {
      case "task_instance":
      case "notification":
        return this.dags.admits(event.dag_id) && this.tasks.admits(event.task_id);
      case "dag_run":
        return this.dags.admits(event.dag_id);
      case "asset_event":
        // By the task whose outlet made it; an event from no task (the REST API) is always published.
        return event.source_dag_id === null || (this.dags.admits(event.source_dag_id) && this.tasks.admits(event.source_task_id));
      case "table_truncated":
      case "stream_gap":
        return true;
      default:
        return assertNever(event);
    }
  }
}

/** What the filters do, for the start-up log line; null when nothing is filtered. */
export function describeFilters(lists: FilterLists): Record<string, readonly string[]> | null {
  const out: Record<string, readonly string[]> = {};
  if (lists.includeDags.length > 0) out.includeDags = lists.includeDags;
  if (lists.excludeDags.length > 0) out.excludeDags = lists.excludeDags;
  if (lists.includeTasks.length > 0) out.includeTasks = lists.includeTasks;
  if (lists.excludeTasks.length > 0) out.excludeTasks = lists.excludeTasks;
  return Object.keys(out).length === 0 ? null : out;
}
