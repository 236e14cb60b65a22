import { describe, expect, it } from "vitest";
import type { StreamEvent } from "../../../src/airflow/events.js";
import { ConfigError } from "../../../src/errors.js";
import { RecentEvents } from "../../../src/serve/recent.js";
import { parseStuckConfig } from "../../../src/serve/thresholds.js";
import { Waiters } from "../../../src/serve/waiters.js";
import { HistoryLog } from "../../../src/serve/view/history.js";
import { RunStore } from "../../../src/serve/view/store.js";
import { DEFAULT_THRESHOLDS } from "../../../src/serve/view/stuck.js";
import { Stream } from "./events.js";

describe("parseStuckConfig", () => {
  it("changes the defaults and sets per-DAG thresholds", () => {
    const cfg = parseStuckConfig("queued=300, running=7200", "etl_daily:running=14400;fast:queued=60,up_for_retry=10");
    expect(cfg.defaults).toEqual({ ...DEFAULT_THRESHOLDS, queued: 300, running: 7200 });
    expect(cfg.perDag).toEqual({ etl_daily: { running: 14400 }, fast: { queued: 60, up_for_retry: 10 } });
    expect(parseStuckConfig("", "")).toEqual({ defaults: DEFAULT_THRESHOLDS, perDag: {} });
  });

  it("refuses a state that cannot be stuck, a bad number, a DAG part without a colon", () => {
    expect(() => parseStuckConfig("success=5", "")).toThrow(ConfigError);
    expect(() => parseStuckConfig("success=5", "")).toThrow(/not a state a task can be stuck in/);
    expect(() => parseStuckConfig("queued=-1", "")).toThrow(/not a positive number/);
    expect(() => parseStuckConfig("queued", "")).toThrow(/not a positive number/);
    expect(() => parseStuckConfig("", "queued=5")).toThrow(/EVENTSTREAM_SERVE_STUCK_DAGS/);
  });
});

describe("Waiters", () => {
  it("answers the moment the run's answer turns final, and only re-checks on that run's changes", async () => {
    const store = new RunStore();
    const s = new Stream(store);
    s.ti("d", "r", "a", "running");
    const waiters = new Waiters(store, 10);
    let checks = 0;
    const started = Date.now();
    const pending = waiters.wait("d", "r", 5_000, () => {
      checks++;
      const v = store.ready("d", "r", ["a"]);
      return { done: v?.ready === true, value: v };
    });
    expect(waiters.size).toBe(1);
    s.ti("d", "other", "a", "success");
    expect(checks).toBe(1);
    setTimeout(() => s.ti("d", "r", "a", "success"), 50);
    const answer = await pending!;
    expect(answer!.ready).toBe(true);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(waiters.size).toBe(0);
    waiters.close();
  });

  it("answers at the deadline with the last answer, and refuses past its cap", async () => {
    const store = new RunStore();
    const waiters = new Waiters(store, 1);
    const first = waiters.wait("d", "r", 50, () => ({ done: false, value: "not yet" }));
    expect(waiters.wait("d", "r", 50, () => ({ done: false, value: "x" }))).toBeNull();
    expect(await first).toBe("not yet");
    expect(await waiters.wait("d", "r", 0, () => ({ done: false, value: "now" }))).toBe("now");
    waiters.close();
  });
});

describe("RecentEvents", () => {
  const ev = (position: string, dag: string | null): StreamEvent =>
    (dag === null
      ? { type: "table_truncated", tables: ["task_instance"], schema: "public", source: { position } }
      : { type: "dag_run", dag_id: dag, source: { position } }) as unknown as StreamEvent;
  const pos = (n: number) => `${n.toString(16).toUpperCase().padStart(16, "0")}-00000000`;

  it("hands out the events after a position, and says when the buffer does not reach back to it", () => {
    const r = new RecentEvents(3);
    r.since = pos(0);
    for (let i = 1; i <= 3; i++) r.push(ev(pos(i), "d"), `{"n":${i}}`);
    expect(r.after(pos(1))).toEqual({
      events: [expect.objectContaining({ position: pos(2) }), expect.objectContaining({ position: pos(3) })],
      complete: true,
    });
    expect(r.after(pos(0)).complete).toBe(true);
    r.push(ev(pos(4), "d"), "{}");
    expect(r.all().map((e) => e.position)).toEqual([pos(2), pos(3), pos(4)]);
    expect(r.after(pos(0)).complete).toBe(false);
    expect(r.after(pos(2)).complete).toBe(true);
  });

  it("resumes after the client's last event in arrival order when it holds it: another DAG's lower position that came later is not skipped", () => {
    const r = new RecentEvents(10);
    r.since = pos(0);
    // Two partitions interleave: DAG b's event at position 3 arrives after DAG a's at 5.
    r.push(ev(pos(5), "a"), "{}");
    r.push(ev(pos(3), "b"), "{}");
    r.push(ev(pos(6), "a"), "{}");
    expect(r.after(pos(5)).events.map((e) => `${e.dagId}@${e.position}`)).toEqual([`b@${pos(3)}`, `a@${pos(6)}`]);
    // A position not held (a client of another replica): positions decide.
    expect(r.after(pos(4)).events.map((e) => e.position)).toEqual([pos(5), pos(6)]);
  });

  it("keeps one copy of an event about every DAG (it comes once per partition)", () => {
    const r = new RecentEvents(10);
    const seen: string[] = [];
    r.subscribe((e) => seen.push(`${e.position}:${e.dagId}`));
    r.push(ev(pos(5), null), "{}");
    r.push(ev(pos(5), null), "{}");
    r.push(ev(pos(6), "d"), "{}");
    expect(seen).toEqual([`${pos(5)}:null`, `${pos(6)}:d`]);
  });
});

describe("HistoryLog", () => {
  const entry = (position: string, commitTime: string, to: string | null) => ({
    position,
    commit_time: commitTime,
    kind: "task_state" as const,
    from: null,
    to,
    try_number: 2,
    clear_number: null,
  });

  it("gives back exactly what was pushed, also strings that do not fit its columns, and drops the oldest past its cap", () => {
    const log = new HistoryLog(10);
    const task = { taskId: "t", mapIndex: 3 };
    log.push(entry("00000000016B3748-0000000A", "2026-11-25T08:17:27.123456Z", "running"), task);
    log.push(entry("not-a-position", "2026-11-25T08:17:27Z", "a_state_from_the_future"), null);
    expect(log.entries()).toEqual([
      { ...entry("00000000016B3748-0000000A", "2026-11-25T08:17:27.123456Z", "running"), task_id: "t", map_index: 3 },
      { ...entry("not-a-position", "2026-11-25T08:17:27Z", "a_state_from_the_future"), task_id: null, map_index: null },
    ]);
    for (let i = 0; i < 20; i++)
      log.push(entry(`${"0".repeat(15)}1-${i.toString(16).toUpperCase().padStart(8, "0")}`, "2026-11-25T08:17:27.000001Z", null), task);
    expect(log.length).toBeLessThanOrEqual(10);
    expect(log.dropped + log.length).toBe(22);
    expect(log.entries().at(-1)!.position).toBe("0000000000000001-00000013");
  });
});
