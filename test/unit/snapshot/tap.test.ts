import { describe, expect, it } from "vitest";
import type { Relation, Row, TxEvent } from "../../../src/decode/types.js";
import type { ChunkRead } from "../../../src/snapshot/chunk-reader.js";
import { REQUEST_PREFIX, WATERMARK_PREFIX, type SnapshotSpec } from "../../../src/snapshot/spec.js";
import { SnapshotTap, type ChunkOutcome, type OpenChunk } from "../../../src/snapshot/tap.js";
import { parseSnapshot } from "../../../src/snapshot/window.js";

const runRel: Relation = {
  id: 1,
  schema: "public",
  name: "dag_run",
  replicaIdentity: "d",
  columns: [
    { name: "id", typeOid: 23, typeMod: -1, isKey: true },
    { name: "state", typeOid: 25, typeMod: -1, isKey: false },
  ],
};
const chunkRel: Relation = { ...runRel, id: -1, replicaIdentity: "f", columns: runRel.columns.map((c) => ({ ...c, isKey: false })) };

function message(prefix: string, body: unknown, lsn: bigint, transactional = false): Extract<TxEvent, { kind: "message" }> {
  return { kind: "message", transactional, lsn, prefix, content: Buffer.from(JSON.stringify(body)) };
}

function update(xid: number, commitLsn: bigint, id: number): Extract<TxEvent, { kind: "change" }> {
  const row: Row = { id, state: "running" };
  return { kind: "change", xid, commitLsn, index: 0, change: { kind: "update", relation: runRel, row, old: null, oldKind: null } };
}

function chunkOf(ids: number[], snapshot = "100:100:"): { open: OpenChunk; outcomes: ChunkOutcome[] } {
  const outcomes: ChunkOutcome[] = [];
  const read: ChunkRead = {
    rows: ids.map((id) => ({ row: { id, state: "queued" }, key: [String(id)] })),
    scanned: ids.length,
    lastKey: [String(ids[ids.length - 1])],
    snapshot: parseSnapshot(snapshot),
    relation: chunkRel,
    readAt: "2026-12-03T00:00:00.000000Z",
  };
  const open: OpenChunk = {
    run: "r1",
    job: "j",
    chunk: 1,
    table: "dag_run",
    low: null,
    touched: new Set(),
    spoiled: false,
    read,
    settle: (o) => outcomes.push(o),
  };
  return { open, outcomes };
}

const wm = (kind: "low" | "high", run = "r1") => ({ run, job: "j", chunk: 1, kind });

describe("SnapshotTap", () => {
  it("publishes at the high watermark the chunk's rows no published event touched since the low one", () => {
    const tap = new SnapshotTap("public", () => undefined);
    const { open } = chunkOf([1, 2, 3, 4]);
    tap.register(open);
    tap.changed(update(90, 900n, 1), true); // before the low watermark, seen by the snapshot
    expect(tap.message(message(WATERMARK_PREFIX, wm("low"), 1000n))).toBeNull();
    tap.changed(update(101, 1100n, 2), true);
    tap.changed(update(102, 1200n, 3), false); // churn: no event, the chunk's state stands
    const out = tap.message(message(WATERMARK_PREFIX, wm("high"), 1300n));
    expect(out?.lsn).toBe(1300n);
    expect(out?.rows.map((r) => r.row.id)).toEqual([1, 3, 4]);
  });

  it("ignores watermarks of another session's coordinator and of chunks no longer open", () => {
    const tap = new SnapshotTap("public", () => undefined);
    const { open } = chunkOf([1]);
    tap.register(open);
    expect(tap.message(message(WATERMARK_PREFIX, wm("low", "old"), 1000n))).toBeNull();
    expect(open.low).toBeNull();
    tap.message(message(WATERMARK_PREFIX, wm("low"), 1000n));
    expect(tap.message(message(WATERMARK_PREFIX, wm("high", "old"), 1100n))).toBeNull();
    expect(tap.message(message(WATERMARK_PREFIX, wm("high"), 1200n))).not.toBeNull();
    // Re-delivered: the chunk is closed.
    expect(tap.message(message(WATERMARK_PREFIX, wm("high"), 1200n))).toBeNull();
  });

  it("a TRUNCATE of the table in the window makes the chunk be read again", () => {
    const tap = new SnapshotTap("public", () => undefined);
    const { open, outcomes } = chunkOf([1]);
    tap.register(open);
    tap.message(message(WATERMARK_PREFIX, wm("low"), 1000n));
    tap.changed(
      {
        kind: "change",
        xid: 5,
        commitLsn: 1100n,
        index: 0,
        change: { kind: "truncate", relations: [runRel], cascade: false, restartIdentity: false },
      },
      true,
    );
    expect(tap.message(message(WATERMARK_PREFIX, wm("high"), 1200n))).toBeNull();
    expect(outcomes).toEqual([{ kind: "retry", reason: expect.stringMatching(/truncated/) }]);
  });

  it("hands valid requests to the coordinator, drops malformed ones", () => {
    const got: SnapshotSpec[] = [];
    const tap = new SnapshotTap("public", (s) => got.push(s));
    const spec: SnapshotSpec = { id: "x", tables: ["dag_run"], dags: [], runs_since: null, active_only: false, requested_at: "now" };
    tap.message(message(REQUEST_PREFIX, spec, 10n, true));
    tap.message(message(REQUEST_PREFIX, { id: 3 }, 11n, true));
    expect(got).toEqual([spec]);
  });
});
