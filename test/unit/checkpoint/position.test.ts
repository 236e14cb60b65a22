import { describe, expect, it } from "vitest";
import { parseLsn } from "../../../src/lsn.js";
import { encodeCheckpoint, parseCheckpoint, type Checkpoint } from "../../../src/checkpoint/position.js";
import { comparePositions, formatPosition, isAtOrBefore, parsePosition, type Position } from "../../../src/lsn.js";
import { CheckpointError } from "../../../src/errors.js";

const pos = (lsn: string, index: number): Position => ({ commitLsn: parseLsn(lsn), index });

describe("positions", () => {
  it.each([
    // [a, b, sign of compare(a, b)]
    [pos("0/16B3748", 0), pos("0/16B3748", 0), 0],
    [pos("0/16B3748", 0), pos("0/16B3748", 1), -1],
    [pos("0/16B3748", 9), pos("0/16B3749", 0), -1],
    // As text "0/9" > "0/10" and "9/0" > "10/0"; as positions it is the other way round.
    [pos("0/9", 0), pos("0/10", 0), -1],
    [pos("9/0", 0), pos("10/0", 0), -1],
    [pos("A/0", 0), pos("9/FFFFFFFF", 0xffffffff), 1],
    // The index is a number too: 0x10 after 0x9, though "10" < "9" as text.
    [pos("1/0", 16), pos("1/0", 9), 1],
  ])("compare(%o, %o) has the sign of %i", (a, b, sign) => {
    expect(Math.sign(comparePositions(a, b))).toBe(sign);
    expect(Math.sign(comparePositions(b, a))).toBe(-sign || 0);
    expect(isAtOrBefore(a.commitLsn, a.index, b)).toBe(sign <= 0);
  });

  it("formats as the events' source.position and parses back", () => {
    const p = pos("16/B374D848", 10);
    expect(formatPosition(p)).toBe("00000016B374D848-0000000A");
    expect(parsePosition("00000016B374D848-0000000A")).toEqual(p);
    expect(parsePosition("00000016b374d848-0000000a")).toEqual(p);
    expect(formatPosition(pos("FFFFFFFF/FFFFFFFF", 0xffffffff))).toBe("FFFFFFFFFFFFFFFF-FFFFFFFF");
  });

  it("the fixed-width text sorts like the positions (what consumers compare)", () => {
    const ps = [pos("10/0", 0), pos("9/FFFFFFFF", 2), pos("9/FFFFFFFF", 16), pos("0/A", 3), pos("0/9", 300)];
    const byNumber = [...ps].sort(comparePositions).map(formatPosition);
    expect([...ps].map(formatPosition).sort()).toEqual(byNumber);
  });

  it.each([
    "",
    "16/B374D848",
    "00000016B374D848",
    "00000016B374D848-A",
    "0000016B374D848-0000000A",
    "00000016B374D848-0000000G",
    " 00000016B374D848-0000000A",
  ])("rejects %j", (text) => {
    expect(() => parsePosition(text)).toThrow(/not a position/);
  });
});

describe("checkpoint records", () => {
  const cp: Checkpoint = {
    position: pos("1/E3C81460", 11),
    ackedLsn: parseLsn("1/E3C81600"),
    slot: "airflow_eventstream",
    systemIdentifier: "7712023973722884400",
    database: "airflow",
    writtenAt: "2026-11-25T09:17:26.050Z",
  };
  const value = (over: Record<string, unknown>) => JSON.stringify({ ...JSON.parse(encodeCheckpoint(cp)), ...over });

  it("round-trips, with the position as (bigint, number)", () => {
    const text = encodeCheckpoint(cp);
    expect(JSON.parse(text)).toEqual({
      version: 1,
      slot: "airflow_eventstream",
      position: "00000001E3C81460-0000000B",
      commit_lsn: "1/E3C81460",
      index: 11,
      acked_lsn: "1/E3C81600",
      system_identifier: "7712023973722884400",
      database: "airflow",
      written_at: "2026-11-25T09:17:26.050Z",
    });
    const back = parseCheckpoint(text, "test");
    expect(back).toEqual(cp);
    expect(typeof back.position?.commitLsn).toBe("bigint");
    expect(typeof back.ackedLsn).toBe("bigint");
  });

  it("reads a record of the previous version (no acked_lsn) as acked_lsn unknown", () => {
    const legacy = JSON.stringify({
      version: 1,
      slot: "s",
      position: "00000001E3C81460-0000000B",
      commit_lsn: "1/E3C81460",
      index: 11,
      system_identifier: "7",
      database: "airflow",
      written_at: null,
    });
    expect(parseCheckpoint(legacy, "test")).toEqual({
      position: cp.position,
      ackedLsn: null,
      slot: "s",
      systemIdentifier: "7",
      database: "airflow",
      writtenAt: null,
    });
  });

  it("round-trips a checkpoint written before any event (no position, an acked_lsn)", () => {
    const early: Checkpoint = { ...cp, position: null };
    const text = encodeCheckpoint(early);
    expect(JSON.parse(text)).toMatchObject({ position: null, commit_lsn: null, index: null, acked_lsn: "1/E3C81600" });
    expect(parseCheckpoint(text, "test")).toEqual(early);
  });

  it("accepts the zero-padded LSN form and missing optional fields", () => {
    const back = parseCheckpoint(
      JSON.stringify({ version: 1, slot: "s", position: "00000001E3C81460-0000000B", commit_lsn: "00000001/E3C81460", index: 11 }),
      "test",
    );
    expect(back.position).toEqual(cp.position);
    expect(back).toMatchObject({ systemIdentifier: null, database: null, writtenAt: null });
  });

  it.each([
    ["not JSON", "{", /not JSON/],
    ["another version", value({ version: 2 }), /not a checkpoint of this version/],
    ["no index", value({ index: undefined }), /index/],
    ["a negative index", value({ index: -1 }), /index/],
    ["a fractional index", value({ index: 1.5 }), /index/],
    ["an index as text", value({ index: "11" }), /index/],
    ["a bad LSN", value({ commit_lsn: "1-E3C81460" }), /not an LSN/],
    ["a bad position", value({ position: "1/E3C81460" }), /not a position/],
    ["a position that contradicts commit_lsn", value({ commit_lsn: "1/E3C81461" }), /contradicts itself/],
    ["a position that contradicts index", value({ index: 12 }), /contradicts itself/],
    ["a number as LSN", value({ commit_lsn: 8118604896 }), /commit_lsn/],
    ["a bad acked_lsn", value({ acked_lsn: "1E3C81600" }), /not an LSN/],
    ["a number as acked_lsn", value({ acked_lsn: 8118604896 }), /acked_lsn/],
    ["a position without its index", value({ index: null }), /null but not all/],
    ["an index without its position", value({ position: null, commit_lsn: null }), /null but not all/],
  ])("refuses %s, saying how to start over", (_, text, pattern) => {
    let err: unknown;
    try {
      parseCheckpoint(text, "the checkpoint of slot s");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).toContain("the checkpoint of slot s");
    expect((err as Error).message).toContain("tombstone");
  });
});
