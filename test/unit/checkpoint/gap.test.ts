import { describe, expect, it } from "vitest";
import { parseLsn } from "../../../src/lsn.js";
import { assessGap, gapMessage, type GapVerdict, type SlotFacts } from "../../../src/checkpoint/gap.js";
import type { Checkpoint } from "../../../src/checkpoint/position.js";

const L = parseLsn;

function checkpoint(ackedLsn: string | null, position: string | null = "0/1000"): Checkpoint {
  return {
    position: position === null ? null : { commitLsn: L(position), index: 3 },
    ackedLsn: ackedLsn === null ? null : L(ackedLsn),
    slot: "s",
    systemIdentifier: "7",
    database: "airflow",
    writtenAt: "2026-11-25T09:17:26.050Z",
  };
}

function slot(confirmed: string | null, walStatus: string | null = "reserved", createdNow = false): SlotFacts {
  return {
    slot: "s",
    state:
      confirmed === null
        ? null
        : { confirmedFlushLsn: L(confirmed), walStatus, invalidationReason: walStatus === "lost" ? "wal_removed" : null, createdNow },
    walLsn: L("0/9000"),
    maxSlotWalKeepSize: "1MB",
    idleReplicationSlotTimeout: "0",
  };
}

describe("gap detection: checkpoint against slot", () => {
  it.each<[string, Checkpoint | null, SlotFacts, GapVerdict]>([
    // Normal operation.
    ["first start: no checkpoint, slot missing", null, slot(null), { kind: "ok", basis: "no checkpoint" }],
    ["first start with gap detection: no checkpoint, slot exists", null, slot("0/5000"), { kind: "ok", basis: "no checkpoint" }],
    ["slot exactly at acked_lsn (clean stop)", checkpoint("0/2000"), slot("0/2000"), { kind: "ok", basis: "acked_lsn" }],
    // The daemon persists acked_lsn first and reports after: a crash in between leaves the slot behind.
    [
      "slot behind acked_lsn (crash after the checkpoint, before the report)",
      checkpoint("0/2000"),
      slot("0/1800"),
      { kind: "ok", basis: "acked_lsn" },
    ],
    ["slot unreserved: still usable", checkpoint("0/2000"), slot("0/2000", "unreserved"), { kind: "ok", basis: "acked_lsn" }],
    ["slot extended", checkpoint("0/2000"), slot("0/2000", "extended"), { kind: "ok", basis: "acked_lsn" }],
    // Previous version's checkpoint: only a missing or lost slot can be told.
    [
      "checkpoint without acked_lsn, slot ahead of its position",
      checkpoint(null),
      slot("0/5000"),
      { kind: "ok", basis: "checkpoint without acked_lsn (earlier version): only a missing or invalidated slot is detected" },
    ],
    // Gaps.
    [
      "slot past acked_lsn (recreated or advanced by someone else)",
      checkpoint("0/2000"),
      slot("0/2001"),
      { kind: "gap", reason: "slot_ahead", from: L("0/2000"), to: L("0/2001") },
    ],
    [
      "slot missing, checkpoint present",
      checkpoint("0/2000"),
      slot(null),
      { kind: "gap", reason: "slot_missing", from: L("0/2000"), to: L("0/9000") },
    ],
    [
      "slot missing, checkpoint of the previous version",
      checkpoint(null),
      slot(null),
      { kind: "gap", reason: "slot_missing", from: L("0/1000"), to: L("0/9000") },
    ],
    [
      "slot missing, checkpoint with neither position nor acked_lsn",
      checkpoint(null, null),
      slot(null),
      { kind: "gap", reason: "slot_missing", from: null, to: L("0/9000") },
    ],
    [
      "slot created by this session, checkpoint found after",
      checkpoint("0/2000"),
      slot("0/8000", "reserved", true),
      { kind: "gap", reason: "slot_missing", from: L("0/2000"), to: L("0/8000") },
    ],
    [
      "slot invalidated, no checkpoint",
      null,
      slot("0/1800", "lost"),
      { kind: "gap", reason: "slot_lost", from: L("0/1800"), to: L("0/9000") },
    ],
    [
      "slot invalidated, checkpoint ahead of it",
      checkpoint("0/2000"),
      slot("0/1800", "lost"),
      { kind: "gap", reason: "slot_lost", from: L("0/2000"), to: L("0/9000") },
    ],
    [
      "slot invalidated, even when exactly at acked_lsn",
      checkpoint("0/2000"),
      slot("0/2000", "lost"),
      { kind: "gap", reason: "slot_lost", from: L("0/2000"), to: L("0/9000") },
    ],
    [
      "slot invalidated, checkpoint of the previous version",
      checkpoint(null),
      slot("0/1800", "lost"),
      { kind: "gap", reason: "slot_lost", from: L("0/1800"), to: L("0/9000") },
    ],
  ])("%s", (_, cp, facts, expected) => {
    expect(assessGap(cp, facts)).toEqual(expected);
  });

  it("compares LSNs as numbers: 9/0 is before 10/0 although it sorts after as text", () => {
    expect(assessGap(checkpoint("9/0"), slot("10/0"))).toMatchObject({ kind: "gap", reason: "slot_ahead" });
    expect(assessGap(checkpoint("10/0"), slot("9/0"))).toEqual({ kind: "ok", basis: "acked_lsn" });
  });
});

describe("gap message", () => {
  const ctx = { slot: "s", checkpointTopic: "ops.checkpoints", createSlot: true };
  const gap = (cp: Checkpoint | null, facts: SlotFacts) => {
    const v = assessGap(cp, facts);
    if (v.kind !== "gap") throw new Error("expected a gap");
    return gapMessage(v, cp, facts, ctx);
  };

  it.each<[string, Checkpoint | null, SlotFacts, string[]]>([
    [
      "slot ahead",
      checkpoint("0/2000"),
      slot("0/2001"),
      ["is at LSN 0/2001", "LSN 0/2000", "recreated, or advanced", "between LSN 0/2000 and 0/2001"],
    ],
    [
      "slot missing",
      checkpoint("0/2000"),
      slot(null),
      ['replication slot "s" does not exist', "up to LSN 0/2000", "current WAL position 0/9000", "Nothing was created", "a new slot"],
    ],
    [
      "slot lost",
      checkpoint("0/2000"),
      slot("0/1800", "lost"),
      [
        'wal_status "lost"',
        "max_slot_wal_keep_size (1MB)",
        "after LSN 0/2000",
        "up to the current WAL position 0/9000",
        "drops the invalidated slot",
      ],
    ],
  ])("%s: names the gap, says events were lost, and how to recover", (_, cp, facts, needles) => {
    const m = gap(cp, facts);
    for (const n of needles) expect(m).toContain(n);
    expect(m).toContain("EVENTS WERE LOST");
    expect(m).toContain("re-snapshot");
    expect(m).toContain("airflow-eventstream reset-checkpoint");
    expect(m).toContain(
      'checkpoint of slot "s" in topic ops.checkpoints: last event 0000000000001000-00000003, written 2026-11-25T09:17:26.050Z',
    );
  });

  const lostBecause = (reason: string | null, more: Partial<SlotFacts> = {}) => {
    const facts = { ...slot("0/1800", "lost"), ...more };
    facts.state!.invalidationReason = reason;
    return gap(checkpoint("0/2000"), facts);
  };

  it.each<[string | null, string[], string[]]>([
    // Before PostgreSQL 17 the server gives no reason: a primary invalidates for WAL removal only.
    [null, ["max_slot_wal_keep_size (1MB) behind", "raise max_slot_wal_keep_size"], ["invalidation_reason"]],
    ["wal_removed", ['invalidation_reason "wal_removed"', "max_slot_wal_keep_size (1MB) behind", "raise max_slot_wal_keep_size"], []],
    [
      "rows_removed",
      ['invalidation_reason "rows_removed"', "standby", "primary removed rows", "hot_standby_feedback = on", "physical replication slot"],
      ["max_slot_wal_keep_size"],
    ],
    [
      "wal_level_insufficient",
      ['invalidation_reason "wal_level_insufficient"', "primary's wal_level went below logical", "wal_level = logical"],
      ["max_slot_wal_keep_size", "hot_standby_feedback"],
    ],
    [
      "conflicting",
      ["conflicting with recovery", "PostgreSQL 16", "rows_removed", "wal_level_insufficient", "hot_standby_feedback = on"],
      ["max_slot_wal_keep_size"],
    ],
    [
      "some_future_reason",
      ['invalidation_reason "some_future_reason", as PostgreSQL gave it'],
      ["max_slot_wal_keep_size", "hot_standby_feedback"],
    ],
  ])("invalidation_reason %s: named and explained", (reason, needles, absent) => {
    const m = lostBecause(reason);
    for (const n of needles) expect(m).toContain(n);
    for (const n of absent) expect(m).not.toContain(n);
    expect(m).toContain("EVENTS WERE LOST");
    expect(m).toContain("drops the invalidated slot");
  });

  it("idle_timeout (PostgreSQL 18): shows the server's idle_replication_slot_timeout and what it means for a stopped daemon", () => {
    const m = lostBecause("idle_timeout", { idleReplicationSlotTimeout: "1min" });
    expect(m).toContain('invalidation_reason "idle_timeout"');
    expect(m).toContain("longer than idle_replication_slot_timeout (1min)");
    expect(m).toContain("a daemon stopped (or unable to connect) for that long loses its slot");
    expect(m).toContain("0 turns it off");
    expect(m).not.toContain("max_slot_wal_keep_size");
    // The setting unknown: the reason is still named, without a made-up value.
    expect(lostBecause("idle_timeout", { idleReplicationSlotTimeout: null })).toContain("longer than idle_replication_slot_timeout, so");
  });

  it("without a checkpoint topic (gap detection off) it still explains an invalidated slot", () => {
    const facts = slot("0/1800", "lost");
    const v = assessGap(null, facts);
    if (v.kind !== "gap") throw new Error("expected a gap");
    const m = gapMessage(v, null, facts, { ...ctx, checkpointTopic: null });
    expect(m).toContain("after LSN 0/1800");
    expect(m).not.toContain("topic");
  });

  it("a slot this session created (a race with a checkpoint written meanwhile) is not said to be uncreated", () => {
    const facts = slot("0/8000", "reserved", true);
    const m = gap(checkpoint("0/2000"), facts);
    expect(m).toContain("it was created just now");
    expect(m).toContain("between LSN 0/2000 and 0/8000");
    expect(m).not.toContain("Nothing was created");
  });

  it("with slot creation off, the recovery says to create the slot", () => {
    const facts = slot(null);
    const v = assessGap(checkpoint("0/2000"), facts);
    if (v.kind !== "gap") throw new Error("expected a gap");
    expect(gapMessage(v, checkpoint("0/2000"), facts, { ...ctx, createSlot: false })).toContain("EVENTSTREAM_CREATE_SLOT is false");
  });
});
