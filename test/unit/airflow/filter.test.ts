import { describe, expect, it } from "vitest";
import { EventFilter, GlobList, NO_FILTERS, describeFilters, globToRegExp, type FilterLists } from "../../../src/airflow/filter.js";
import type { StreamEvent } from "../../../src/airflow/events.js";
import { loadConfig } from "../../../src/config.js";
import { ConfigError } from "../../../src/errors.js";
import { dagRunEvent, sourceAt, taskInstanceEvent } from "../../support/events.js";

const lists = (l: Partial<FilterLists>): FilterLists => ({ ...NO_FILTERS, ...l });
const ti = (dag_id: string, task_id: string): StreamEvent => taskInstanceEvent({ dag_id, task_id });
const run = (dag_id: string): StreamEvent => dagRunEvent({ dag_id });
const notification = (dag_id: string, task_id: string): StreamEvent => ({
  type: "notification",
  dag_id,
  task_id,
  run_id: "r",
  map_index: -1,
  try_number: 1,
  logical_date: null,
  time: "2026-12-01T00:00:00.000000Z",
  xcom_key: "eventstream",
  request_id: null,
  start: null,
  end: null,
  metadata: null,
  payload: null,
  payload_uri: null,
  files: null,
  error: null,
  source: sourceAt(),
});

describe("globToRegExp", () => {
  it("matches the whole id: * any run (also none), ? exactly one character", () => {
    const star = globToRegExp("etl_*");
    expect(["etl_", "etl_daily", "etl_a.b-c"].map((s) => star.test(s))).toEqual([true, true, true]);
    expect(["etl", "my_etl_daily", "ETL_daily"].map((s) => star.test(s))).toEqual([false, false, false]);
    const q = globToRegExp("run_?");
    expect(["run_1", "run_a"].map((s) => q.test(s))).toEqual([true, true]);
    expect(["run_", "run_12"].map((s) => q.test(s))).toEqual([false, false]);
    expect(globToRegExp("*").test("")).toBe(true);
    expect(globToRegExp("a*b*c").test("aXXbYYc")).toBe(true);
    expect(globToRegExp("a*b*c").test("aXXbYY")).toBe(false);
  });

  it("takes every other character literally: '.' is a dot, not any character", () => {
    const dot = globToRegExp("group.task");
    expect(dot.test("group.task")).toBe(true);
    expect(dot.test("groupXtask")).toBe(false);
    expect(globToRegExp("a-b").test("a-b")).toBe(true);
    expect(globToRegExp("dag.*").test("dag.x")).toBe(true);
    expect(globToRegExp("dag.*").test("dagx")).toBe(false);
  });

  it("counts a character outside the BMP as one for ?", () => {
    expect(globToRegExp("ü?").test("ü😀")).toBe(true);
  });
});

describe("GlobList", () => {
  it("mixes exact names and globs", () => {
    const l = new GlobList(["report", "etl_*", "t?"]);
    expect(["report", "etl_x", "t1"].map((s) => l.matches(s))).toEqual([true, true, true]);
    expect(["reports", "report_", "t12", "xetl_"].map((s) => l.matches(s))).toEqual([false, false, false, false]);
    expect(new GlobList([]).empty).toBe(true);
    expect(new GlobList([]).matches("x")).toBe(false);
  });
});

describe("EventFilter", () => {
  it("without lists admits everything and says it is inactive", () => {
    const f = new EventFilter(NO_FILTERS);
    expect(f.active).toBe(false);
    expect(f.admits(ti("a", "b"))).toBe(true);
    expect(describeFilters(NO_FILTERS)).toBeNull();
  });

  it("includes DAGs: task instances, runs and notifications of other DAGs are left out", () => {
    const f = new EventFilter(lists({ includeDags: ["etl_*", "report"] }));
    expect(f.active).toBe(true);
    for (const make of [(d: string) => ti(d, "t"), run, (d: string) => notification(d, "t")]) {
      expect(f.admits(make("etl_daily"))).toBe(true);
      expect(f.admits(make("report"))).toBe(true);
      expect(f.admits(make("other"))).toBe(false);
    }
  });

  it("exclude wins over include, for DAGs and for tasks", () => {
    const f = new EventFilter(
      lists({ includeDags: ["etl_*"], excludeDags: ["etl_test*"], includeTasks: ["load*"], excludeTasks: ["load_tmp"] }),
    );
    expect(f.admits(ti("etl_daily", "load"))).toBe(true);
    expect(f.admits(ti("etl_test_1", "load"))).toBe(false);
    expect(f.admits(run("etl_test_1"))).toBe(false);
    expect(f.admits(ti("etl_daily", "load_tmp"))).toBe(false);
    expect(f.admits(notification("etl_daily", "load_tmp"))).toBe(false);
    expect(f.admits(ti("etl_daily", "extract"))).toBe(false);
  });

  it("task lists leave DAG runs alone: a run has no task", () => {
    const f = new EventFilter(lists({ includeTasks: ["only_this"], excludeTasks: ["*"] }));
    expect(f.admits(run("any"))).toBe(true);
    expect(f.admits(ti("any", "only_this"))).toBe(false);
  });

  it("never filters stream_gap and table_truncated, which speak of every DAG", () => {
    const f = new EventFilter(lists({ excludeDags: ["*"], excludeTasks: ["*"] }));
    const truncated: StreamEvent = { type: "table_truncated", tables: ["task_instance"], schema: "public", source: sourceAt() };
    const gap: StreamEvent = {
      type: "stream_gap",
      reason: "slot_missing",
      from_lsn: "0/1",
      to_lsn: "0/2",
      checkpoint_written_at: null,
      detected_at: "2026-12-01T00:00:00.000000Z",
      snapshot: null,
      source: sourceAt(),
    };
    expect(f.admits(truncated)).toBe(true);
    expect(f.admits(gap)).toBe(true);
    expect(f.admits(run("x"))).toBe(false);
  });

  it("publishes a task-instance delete whose ids the WAL did not carry: it may be an included DAG's", () => {
    const f = new EventFilter(lists({ includeDags: ["etl"], includeTasks: ["load"] }));
    const unknown = taskInstanceEvent({ op: "delete", dag_id: null, task_id: null, run_id: null, map_index: null });
    expect(f.admits(unknown)).toBe(true);
  });

  it("decides the same for an id seen again, and past the remembered decisions", () => {
    const f = new EventFilter(lists({ excludeDags: ["x*"] }));
    for (let i = 0; i < 25_000; i++) expect(f.admits(run(i % 2 === 0 ? `x${i}` : `y${i}`))).toBe(i % 2 !== 0);
    expect(f.admits(run("x0"))).toBe(false);
    expect(f.admits(run("y1"))).toBe(true);
  });
});

describe("filter settings", () => {
  it("parse comma-separated globs, trimmed; unset or blank is no list", () => {
    const c = loadConfig({ EVENTSTREAM_INCLUDE_DAGS: "etl_*, report ,a?c", EVENTSTREAM_EXCLUDE_TASKS: "group.tmp_*" });
    expect(c.filters).toEqual({
      includeDags: ["etl_*", "report", "a?c"],
      excludeDags: [],
      includeTasks: [],
      excludeTasks: ["group.tmp_*"],
    });
    expect(loadConfig({ EVENTSTREAM_EXCLUDE_DAGS: "" }).filters.excludeDags).toEqual([]);
    expect(describeFilters(c.filters)).toEqual({ includeDags: ["etl_*", "report", "a?c"], excludeTasks: ["group.tmp_*"] });
  });

  const problem = (env: Record<string, string>): string => {
    try {
      loadConfig(env);
    } catch (e: unknown) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message;
    }
    throw new Error("expected a configuration error");
  };

  it("refuse an empty item, naming the variable, its value and the item", () => {
    expect(problem({ EVENTSTREAM_INCLUDE_DAGS: "etl,,report" })).toContain(
      'EVENTSTREAM_INCLUDE_DAGS="etl,,report" (from the environment): item 2 is empty; separate globs with single commas',
    );
    expect(problem({ EVENTSTREAM_EXCLUDE_TASKS: "a," })).toContain(
      'EVENTSTREAM_EXCLUDE_TASKS="a," (from the environment): item 2 is empty',
    );
    expect(problem({ EVENTSTREAM_EXCLUDE_DAGS: " , " })).toContain("item 1 is empty");
  });

  it("refuse a glob with syntax it does not support, and list every bad one", () => {
    const msg = problem({
      EVENTSTREAM_INCLUDE_TASKS: "load_[ab],ok_*",
      EVENTSTREAM_EXCLUDE_DAGS: "{a,b}",
      EVENTSTREAM_INCLUDE_DAGS: "my dag",
    });
    expect(msg).toContain(
      `EVENTSTREAM_INCLUDE_TASKS="load_[ab],ok_*" (from the environment): item 1 "load_[ab]" is not a glob of Airflow ids`,
    );
    expect(msg).toContain('EVENTSTREAM_INCLUDE_DAGS="my dag" (from the environment): item 1 "my dag" is not a glob');
    // Commas separate items, so "{a,b}" is two bad items.
    expect(msg).toContain('item 1 "{a" is not a glob');
    expect(msg).toContain('item 2 "b}" is not a glob');
  });
});
