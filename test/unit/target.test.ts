import type pg from "pg";
import { describe, expect, it } from "vitest";
import { loadConfig, type Config } from "../../src/config.js";
import { ConfigError, PrivilegeError, SlotError, TransientError } from "../../src/errors.js";
import { createSlotSql, wantFailover } from "../../src/source/failover-slot.js";
import { connectTarget, parseHostList, type PgHost } from "../../src/source/target.js";

describe("PGHOST / PGPORT host lists (libpq's syntax)", () => {
  it("one port for every host, or one per host", () => {
    expect(parseHostList("a, b", "5433")).toEqual({
      hosts: [
        { host: "a", port: 5433 },
        { host: "b", port: 5433 },
      ],
    });
    expect(parseHostList("a,b", "1,2")).toEqual({
      hosts: [
        { host: "a", port: 1 },
        { host: "b", port: 2 },
      ],
    });
  });

  it("a port list of another length is a configuration error saying what to set", () => {
    expect(() => loadConfig({ PGHOST: "a,b,c", PGPORT: "1,2" })).toThrow(ConfigError);
    expect(() => loadConfig({ PGHOST: "a,b,c", PGPORT: "1,2" })).toThrow(/2 ports for 3 hosts in PGHOST; give one port for all hosts/);
    expect(() => loadConfig({ PGHOST: "a,,b" })).toThrow(/empty entry/);
    expect(() => loadConfig({ PGPORT: "1,70000" })).toThrow(/70000 is not a port/);
  });

  it("defaults: any with one host, read-write with several; an explicit value wins", () => {
    expect(loadConfig({}).pg.targetSessionAttrs).toBe("any");
    expect(loadConfig({ PGHOST: "a,b" }).pg.targetSessionAttrs).toBe("read-write");
    expect(loadConfig({ PGHOST: "a,b", PGTARGETSESSIONATTRS: "standby" }).pg.targetSessionAttrs).toBe("standby");
    expect(() => loadConfig({ PGTARGETSESSIONATTRS: "primary-ish" })).toThrow(/PGTARGETSESSIONATTRS="primary-ish"/);
  });
});

/** A server as the fake client sees it: unreachable, or what it answers. */
type FakeServer = "down" | "refuses-role" | { inRecovery: boolean; readOnly: boolean };

function fakeTarget(servers: Record<string, FakeServer>) {
  const ended: string[] = [];
  const queries: string[] = [];
  const make = (h: PgHost) => {
    const server = servers[h.host]!;
    return {
      host: h.host,
      query: async (sql: string) => {
        queries.push(`${h.host}: ${sql}`);
        if (typeof server === "string") throw new Error("not connected");
        if (sql.includes("pg_is_in_recovery")) return { rows: [{ r: String(server.inRecovery) }] };
        return { rows: [{ transaction_read_only: server.readOnly ? "on" : "off" }] };
      },
      end: async () => void ended.push(h.host),
    } as unknown as pg.Client;
  };
  const connect = async (_c: pg.Client, h: PgHost) => {
    const server = servers[h.host]!;
    if (server === "down") throw new TransientError(`PostgreSQL at ${h.host}:${h.port} is unreachable (ECONNREFUSED); retrying`);
    if (server === "refuses-role") throw new PrivilegeError(`PostgreSQL at ${h.host} refused role`);
  };
  return { opts: { make, connect }, ended, queries };
}

function cfgFor(hosts: string[], attrs?: string): Config {
  return loadConfig({ PGHOST: hosts.join(","), ...(attrs ? { PGTARGETSESSIONATTRS: attrs } : {}) });
}

const primary = { inRecovery: false, readOnly: false };
const standby = { inRecovery: true, readOnly: true };

describe("connectTarget: the first host that matches", () => {
  it("read-write skips a standby and an unreachable host, closing what it opened", async () => {
    const f = fakeTarget({ a: standby, b: "down", c: primary });
    const { host } = await connectTarget(cfgFor(["a", "b", "c"]), f.opts);
    expect(host.host).toBe("c");
    expect(f.ended).toEqual(["a"]);
  });

  it("any with one host asks nothing", async () => {
    const f = fakeTarget({ a: standby });
    expect((await connectTarget(cfgFor(["a"]), f.opts)).host.host).toBe("a");
    expect(f.queries).toEqual([]);
  });

  it("standby, primary and prefer-standby", async () => {
    expect((await connectTarget(cfgFor(["a", "b"], "standby"), fakeTarget({ a: primary, b: standby }).opts)).host.host).toBe("b");
    expect((await connectTarget(cfgFor(["a", "b"], "primary"), fakeTarget({ a: standby, b: primary }).opts)).host.host).toBe("b");
    expect((await connectTarget(cfgFor(["a", "b"], "prefer-standby"), fakeTarget({ a: primary, b: standby }).opts)).host.host).toBe("b");
    // No standby: prefer-standby falls back to any host, the first.
    expect((await connectTarget(cfgFor(["a", "b"], "prefer-standby"), fakeTarget({ a: primary, b: "down" }).opts)).host.host).toBe("a");
  });

  it("read-only and read-write look at transaction_read_only, not recovery", async () => {
    const roPrimary = { inRecovery: false, readOnly: true };
    expect((await connectTarget(cfgFor(["a", "b"], "read-only"), fakeTarget({ a: primary, b: roPrimary }).opts)).host.host).toBe("b");
    await expect(connectTarget(cfgFor(["a"], "read-write"), fakeTarget({ a: roPrimary }).opts)).rejects.toThrow(/read-only primary/);
  });

  it("none matches: a retryable error saying what each host was", async () => {
    const err = await connectTarget(cfgFor(["a", "b"]), fakeTarget({ a: "down", b: standby }).opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransientError);
    expect((err as Error).message).toMatch(
      /no PostgreSQL host in PGHOST matches PGTARGETSESSIONATTRS=read-write: a:5432 unreachable \(.*ECONNREFUSED.*\); b:5432 is a standby \(in recovery\)/,
    );
  });

  it("an error an operator must fix stops the search", async () => {
    await expect(connectTarget(cfgFor(["a", "b"]), fakeTarget({ a: "refuses-role", b: primary }).opts)).rejects.toBeInstanceOf(
      PrivilegeError,
    );
  });
});

describe("failover slot flag", () => {
  const pg16 = { versionNum: 160010, inRecovery: false };
  const pg17 = { versionNum: 170006, inRecovery: false };
  const standby17 = { versionNum: 170006, inRecovery: true };
  const cfg = (failoverSlot: "auto" | "true" | "false") => ({ failoverSlot, slot: "s" });

  it("auto: on for a 17+ primary only", () => {
    expect(wantFailover(cfg("auto"), pg17)).toBe(true);
    expect(wantFailover(cfg("auto"), pg16)).toBe(false);
    expect(wantFailover(cfg("auto"), standby17)).toBe(false);
    expect(wantFailover(cfg("false"), pg17)).toBe(false);
  });

  it("true: required, a clear error before 17 or on a standby", () => {
    expect(wantFailover(cfg("true"), pg17)).toBe(true);
    expect(() => wantFailover(cfg("true"), pg16)).toThrow(SlotError);
    expect(() => wantFailover(cfg("true"), pg16)).toThrow(/needs PostgreSQL 17 or later \(this server is 16\.10\)/);
    expect(() => wantFailover(cfg("true"), standby17)).toThrow(/is a standby/);
  });

  it("creates with the failover argument from 17 on", () => {
    expect(createSlotSql("s", pg17, true)).toBe("SELECT pg_create_logical_replication_slot('s', 'pgoutput', false, false, true);");
    expect(createSlotSql("s", pg16, false)).toBe("SELECT pg_create_logical_replication_slot('s', 'pgoutput');");
  });
});
