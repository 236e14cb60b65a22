import { describe, expect, it } from "vitest";
import {
  isRecoveryWriteError,
  primaryWalLevelError,
  standbyVerdict,
  standbyWriteError,
  type StandbyFacts,
} from "../../../src/source/standby.js";
import { UserActionError, WalLevelError } from "../../../src/errors.js";
import type { Config } from "../../../src/config.js";

const standby = (over: Partial<StandbyFacts> = {}): StandbyFacts => ({
  inRecovery: true,
  serverVersionNum: 160010,
  hotStandbyFeedback: "on",
  primarySlotName: "pair_standby",
  ...over,
});

/** An error as node-postgres gives it: SQLSTATE in `code`. */
function pgError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

describe("decoding from a standby: the start's verdict", () => {
  it("a primary: nothing to say", () => {
    expect(standbyVerdict(standby({ inRecovery: false, serverVersionNum: 150000, hotStandbyFeedback: "off" }))).toEqual({
      problem: null,
      warnings: [],
    });
  });

  it("a standby before PostgreSQL 16: refused, naming the version needed and what to do", () => {
    const v = standbyVerdict(standby({ serverVersionNum: 150014 }));
    expect(v.problem).toContain("running PostgreSQL 15: logical decoding from a standby needs PostgreSQL 16 or later");
    expect(v.problem).toContain("Point PGHOST at the primary");
  });

  it("hot_standby_feedback off: refused, naming rows_removed and the reload that fixes it", () => {
    const v = standbyVerdict(standby({ hotStandbyFeedback: "off" }));
    expect(v.problem).toContain("hot_standby_feedback off");
    expect(v.problem).toContain("invalidation_reason rows_removed");
    expect(v.problem).toContain("ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();");
  });

  it("no physical slot on the primary: a warning only", () => {
    const v = standbyVerdict(standby({ primarySlotName: "" }));
    expect(v.problem).toBeNull();
    expect(v.warnings).toHaveLength(1);
    expect(v.warnings[0]).toContain("primary_slot_name is empty");
    expect(standbyVerdict(standby())).toEqual({ problem: null, warnings: [] });
  });
});

describe("writes a standby refuses", () => {
  // The errors PostgreSQL 17 gave pg_logical_emit_message on a standby (measured).
  const transactional = pgError("XX000", "cannot assign TransactionIds during recovery");
  const plain = pgError("XX000", "cannot make new WAL entries during recovery");

  it("pg_logical_emit_message in recovery: a UserActionError naming what needed it and what to do", () => {
    for (const e of [transactional, plain, pgError("25006", "cannot execute CREATE TABLE in a read-only transaction")]) {
      expect(isRecoveryWriteError(e)).toBe(true);
      const u = standbyWriteError(e, "the snapshot request");
      expect(u).toBeInstanceOf(UserActionError);
      expect(u!.message).toContain("the snapshot request writes pg_logical_emit_message, which a standby refuses");
      expect(u!.message).toContain("point PGHOST at the primary");
    }
  });

  it("any other failure is left alone", () => {
    expect(standbyWriteError(pgError("08006", "connection terminated"), "x")).toBeNull();
    expect(standbyWriteError(pgError("XX000", "could not read block"), "x")).toBeNull();
  });

  it("a primary below wal_level logical refusing the standby's slot: a WalLevelError saying to set it on the primary", () => {
    const cfg = { slot: "s" } as Config;
    const e = primaryWalLevelError(pgError("55000", "logical decoding on standby requires wal_level >= logical on the primary"), cfg);
    expect(e).toBeInstanceOf(WalLevelError);
    expect(e!.message).toContain("On the primary run: ALTER SYSTEM SET wal_level = logical");
    expect(primaryWalLevelError(pgError("42710", "already exists"), cfg)).toBeNull();
  });
});
