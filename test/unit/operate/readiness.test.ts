import { describe, expect, it } from "vitest";
import { readiness, type ReadyFacts } from "../../../src/operate/readiness.js";
import { Metrics } from "../../../src/operate/metrics.js";

const T0 = 1_000_000;
const base: ReadyFacts = {
  role: "active",
  now: T0,
  roleSince: T0 - 600_000,
  lastAckAt: T0 - 1_000,
  lagAtAck: 100,
  lagNow: 100,
  stallMs: 60_000,
};

describe("readiness", () => {
  it("is ready while acknowledgements advance, however large the lag", () => {
    expect(readiness({ ...base, lagNow: 10_000_000 })).toEqual({ ready: true, reason: "ready" });
  });

  it("is not ready once the lag grew and no acknowledgement came for the stall time", () => {
    const r = readiness({ ...base, lastAckAt: T0 - 60_000, lagNow: 5_000 });
    expect(r.ready).toBe(false);
    expect(r.reason).toBe("stalled: the slot's lag grew from 100 to 5000 bytes and no acknowledgement for 60 s");
  });

  it("stays ready just under the stall time", () => {
    expect(readiness({ ...base, lastAckAt: T0 - 59_999, lagNow: 5_000 }).ready).toBe(true);
  });

  it("stays ready when nothing needs acknowledging (quiet Airflow: the lag did not grow)", () => {
    expect(readiness({ ...base, lastAckAt: T0 - 3_600_000, lagNow: 100 }).ready).toBe(true);
  });

  it("does not judge a stall without a probe since the last acknowledgement", () => {
    expect(readiness({ ...base, lastAckAt: T0 - 120_000, lagAtAck: null, lagNow: 5_000 }).ready).toBe(true);
    expect(readiness({ ...base, lastAckAt: T0 - 120_000, lagNow: null }).ready).toBe(true);
  });

  it("counts the stall from becoming active when nothing was acknowledged since", () => {
    const fresh = { ...base, roleSince: T0 - 10_000, lastAckAt: 0, lagNow: 5_000 };
    expect(readiness(fresh).ready).toBe(true);
    expect(readiness({ ...fresh, roleSince: T0 - 60_000 }).ready).toBe(false);
  });

  it("says standby for a daemon waiting for the slot, and not streaming otherwise", () => {
    expect(readiness({ ...base, role: "standby" })).toEqual({ ready: false, reason: "standby" });
    expect(readiness({ ...base, role: "starting" })).toEqual({ ready: false, reason: "not streaming (starting)" });
    expect(readiness({ ...base, role: "stopping" }).ready).toBe(false);
  });
});

describe("Metrics", () => {
  const build = { version: "1.2.3", airflowSchema: "public", delivery: "at-least-once", stallMs: 5_000 };

  it("observes commit → ack once per event, as Kafka acknowledges them", async () => {
    const m = new Metrics(build, false);
    const commit = Date.now() - 2_000;
    m.pushed("task_instance", "running", 1, commit);
    m.pushed("task_instance", "success", 2, commit);
    m.pushed("dag_run", "success", 5, commit);
    m.acked(1);
    const text1 = await m.registry.metrics();
    expect(text1).toMatch(/airflow_eventstream_commit_to_ack_seconds_count 1\n/);
    m.acked(5);
    const text = await m.registry.metrics();
    expect(text).toMatch(/airflow_eventstream_commit_to_ack_seconds_count 3\n/);
    expect(text).toMatch(/airflow_eventstream_commit_to_ack_seconds_bucket\{le="1"\} 0\n/);
    expect(text).toMatch(/airflow_eventstream_events_published_total\{type="task_instance",state="success"\} 1\n/);
    expect(text).toMatch(/airflow_eventstream_build_info\{version="1.2.3",.*delivery="at-least-once"\} 1\n/);
  });

  it("keeps the cache counters monotonic across sessions", async () => {
    const m = new Metrics(build, false);
    const counts = { size: 3, hits: 5, misses: 2, churn: 7 };
    const view = { inflightEvents: () => 0, inflightBytes: () => 0, paused: () => false, cache: () => counts };
    m.bindSession(view);
    expect(await m.registry.metrics()).toMatch(/airflow_eventstream_state_cache_hits_total 5\n/);
    m.bindSession(null);
    m.bindSession({ ...view, cache: () => ({ size: 1, hits: 1, misses: 0, churn: 1 }) });
    const text = await m.registry.metrics();
    expect(text).toMatch(/airflow_eventstream_state_cache_hits_total 6\n/);
    expect(text).toMatch(/airflow_eventstream_churn_dropped_total 8\n/);
    expect(text).toMatch(/airflow_eventstream_state_cache_size 1\n/);
  });

  it("counts the time reading was paused for backpressure, across sessions, the pause under way included", async () => {
    const m = new Metrics(build, false);
    const seconds = async () => Number(/^airflow_eventstream_paused_seconds_total (\S+)$/m.exec(await m.registry.metrics())![1]);
    expect(await seconds()).toBe(0);
    m.backpressure(true);
    await new Promise((r) => setTimeout(r, 60));
    m.backpressure(true); // paused again while paused: the pause goes on from its start
    const during = await seconds();
    expect(during).toBeGreaterThanOrEqual(0.05);
    m.backpressure(false);
    const after = await seconds();
    expect(after).toBeGreaterThanOrEqual(during);
    await new Promise((r) => setTimeout(r, 30));
    expect(await seconds()).toBe(after); // resumed: no more time counted
    m.backpressure(true);
    await new Promise((r) => setTimeout(r, 30));
    m.bindSession(null); // the session ended while paused: its pause ends with it
    const ended = await seconds();
    expect(ended).toBeGreaterThanOrEqual(after + 0.02);
    await new Promise((r) => setTimeout(r, 30));
    expect(await seconds()).toBe(ended);
  });

  it("turns not ready when acknowledgements stop while the slot's lag grows", () => {
    const m = new Metrics(build, false);
    m.setRole("active");
    m.flushed(100n);
    m.probed({ lagBytes: 10, retainedBytes: 10, active: true });
    m.probed({ lagBytes: 900, retainedBytes: 900, active: true });
    expect(m.readiness(Date.now() + 4_000).ready).toBe(true);
    expect(m.readiness(Date.now() + 6_000)).toMatchObject({ ready: false, reason: expect.stringMatching(/^stalled: .* from 10 to 900/) });
    m.flushed(200n);
    expect(m.readiness(Date.now() + 6_000).ready).toBe(true);
  });
});
