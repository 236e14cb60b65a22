import { describe, expect, it } from "vitest";
import { DecodeError, FramingError } from "../../../src/decode/errors.js";
import { decodePgoutput, rawTuple } from "../../../src/decode/pgoutput.js";
import { TransactionDecoder } from "../../../src/decode/transactions.js";
import type { PgoutputMessage, Relation, Row, RowChange, TxEvent } from "../../../src/decode/types.js";
import { UNCHANGED } from "../../../src/decode/types.js";
import { fixture } from "./fixture.js";

const ISO_MICROS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
const TOAST_10K = "0123456789".repeat(1000);
const CONF = { k: [1, 2.5, "x"], nested: { ok: true, none: null } };
const BLOB = Buffer.from("deadbeef00", "hex");

/** Every message of a fixture through one decoder; null results (relation, type, ...) dropped. */
function run(name: string, decoder = new TransactionDecoder()): TxEvent[] {
  const out: TxEvent[] = [];
  for (const buf of fixture(name)) {
    const ev = decoder.push(decodePgoutput(buf));
    if (ev !== null) out.push(ev);
  }
  return out;
}

function changes(events: TxEvent[]): RowChange[] {
  return events.flatMap((e) => (e.kind === "change" ? [e.change] : []));
}

/**
 * The framing every fixture must satisfy: begin, changes numbered from 0, commit; the same xid and
 * commit LSN on every event of a transaction; end LSN after the commit LSN; commit times with six
 * fractional digits. LSNs, xids and times differ between captures, so they are checked relative to
 * each other only.
 */
function expectFraming(events: TxEvent[]): void {
  let open: Extract<TxEvent, { kind: "begin" }> | null = null;
  let next = 0;
  let lastEnd = 0n;
  for (const e of events) {
    // Fixtures are captured without `messages`: none of ours in them.
    if (e.kind === "message") throw new Error("unexpected logical decoding message in a fixture");
    if (e.kind === "begin") {
      expect(open).toBeNull();
      expect(e.commitTime).toMatch(ISO_MICROS);
      expect(e.commitLsn > lastEnd).toBe(true);
      open = e;
      next = 0;
      continue;
    }
    expect(open).not.toBeNull();
    expect(e.xid).toBe(open!.xid);
    expect(e.commitLsn).toBe(open!.commitLsn);
    if (e.kind === "change") {
      expect(e.index).toBe(next++);
    } else {
      expect(e.endLsn > e.commitLsn).toBe(true);
      expect(e.commitTime).toBe(open!.commitTime);
      lastEnd = e.endLsn;
      open = null;
    }
  }
  expect(open).toBeNull();
}

describe("TransactionDecoder on captured bytes", () => {
  it.each([
    "insert",
    "update",
    "delete",
    "replica-full",
    "truncate",
    "schema-change",
    "misc",
    "tz-kolkata",
    "tz-sao-paulo",
    "tz-amsterdam",
  ])("%s: framing", (name) => {
    const events = run(name);
    expect(events.length).toBeGreaterThanOrEqual(3);
    expectFraming(events);
  });

  it("insert: rows fully decoded, microseconds and the TOASTed value kept", () => {
    const events = run("insert");
    expect(events.map((e) => e.kind)).toStrictEqual(["begin", "change", "change", "commit"]);
    const [a, b] = changes(events);
    expect(a).toMatchObject({ kind: "insert", relation: { schema: "public", name: "fx_task" } });
    expect(a?.kind === "insert" && a.row).toStrictEqual({
      id: "a",
      try_number: 1,
      big_count: "9007199254740993",
      start_date: "2024-05-01T12:00:00.123456Z",
      conf: CONF,
      blob: BLOB,
      log: TOAST_10K,
    });
    expect(b?.kind === "insert" && b.row).toStrictEqual({
      id: "b",
      try_number: 2,
      big_count: null,
      start_date: null,
      conf: null,
      blob: null,
      log: "short",
    });
  });

  it("update: unchanged TOAST is UNCHANGED; a key change carries the old key", () => {
    const [nonKey, keyChange, toastChange] = changes(run("update"));
    expect(nonKey).toMatchObject({ kind: "update", old: null, oldKind: null });
    expect(nonKey?.kind === "update" && nonKey.row).toStrictEqual({
      id: "a",
      try_number: 1,
      big_count: -9007199254740991,
      start_date: "2024-05-01T12:00:01.000001Z",
      conf: CONF,
      blob: BLOB,
      log: UNCHANGED,
    });

    if (keyChange?.kind !== "update") throw new Error("expected an update");
    expect(keyChange.oldKind).toBe("key");
    // Only the replica-identity columns: the others are not sent, not NULL.
    expect(keyChange.old).toStrictEqual({ id: "a" });
    expect(keyChange.row.id).toBe("a2");
    expect(keyChange.row.log).toBe(UNCHANGED);

    expect(toastChange).toMatchObject({ kind: "update", old: null, oldKind: null });
    expect(toastChange?.kind === "update" && toastChange.row).toMatchObject({
      id: "a2",
      try_number: 3,
      log: "abcdefghij".repeat(1000),
    });
  });

  it("delete: old key only", () => {
    expect(changes(run("delete"))).toMatchObject([
      { kind: "delete", oldKind: "key", old: { id: "b" } },
      { kind: "delete", oldKind: "key", old: { id: "a2" } },
    ]);
    const [first] = changes(run("delete"));
    expect(first?.kind === "delete" && Object.keys(first.old)).toStrictEqual(["id"]);
  });

  it("replica identity full: whole old rows", () => {
    const [ins, upd, del] = changes(run("replica-full"));
    expect(ins).toMatchObject({ kind: "insert", row: { id: 1, note: "first" } });
    expect(upd).toStrictEqual({
      kind: "update",
      relation: expect.objectContaining({ name: "fx_full", replicaIdentity: "f" }) as Relation,
      row: { id: 1, note: "second" },
      old: { id: 1, note: "first" },
      oldKind: "full",
    });
    expect(del).toMatchObject({ kind: "delete", oldKind: "full", old: { id: 1, note: "second" } });
  });

  it("truncate: one change naming both relations", () => {
    const all = changes(run("truncate"));
    expect(all.map((c) => c.kind)).toStrictEqual(["insert", "truncate"]);
    const tr = all[1];
    if (tr?.kind !== "truncate") throw new Error("expected a truncate");
    expect(tr.relations.map((r) => r.name)).toStrictEqual(["fx_task", "fx_full"]);
    expect(tr.cascade).toBe(true);
    expect(tr.restartIdentity).toBe(true);
  });

  it("schema change mid-stream: the new Relation message replaces the cached one", () => {
    const decoder = new TransactionDecoder();
    const [first, second] = changes(run("schema-change", decoder));
    if (first?.kind !== "insert" || second?.kind !== "insert") throw new Error("expected inserts");
    expect(first.relation.columns).toHaveLength(7);
    expect(first.row).toStrictEqual({
      id: "s1",
      try_number: 1,
      big_count: null,
      start_date: null,
      conf: null,
      blob: null,
      log: null,
    });
    expect(second.relation.columns).toHaveLength(8);
    expect(second.row).toStrictEqual({
      id: "s2",
      try_number: 2,
      big_count: null,
      start_date: null,
      conf: null,
      blob: null,
      log: null,
      extra: 42,
    });
    expect(decoder.relation(second.relation.id)?.columns.at(-1)?.name).toBe("extra");
  });

  it("misc: other types, origin commit time; origin, type and messages yield no event", () => {
    const decoder = new TransactionDecoder();
    const events = run("misc", decoder);
    expect(events.map((e) => e.kind)).toStrictEqual(["begin", "change", "change", "change", "commit"]);
    // pg_replication_origin_xact_setup set the commit time.
    expect(events[0]).toMatchObject({ kind: "begin", commitTime: "2024-05-01T12:00:00.000000Z" });
    expect(decoder.inTransaction).toBe(false);
    const rows = changes(events).map((c) => (c.kind === "insert" ? c.row : null));
    expect(rows).toStrictEqual([
      {
        id: 1,
        state: "running",
        naive: "2024-05-01T12:00:00.500000Z",
        f8: 1.5,
        f4: 0.1,
        num: "12345678901234567890.123456789",
        flag: true,
        uid: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        vc: "héllo",
        bp: "ab  ",
        nm: "pg_name",
        o: 4294967295,
      },
      {
        id: 2,
        state: "queued",
        naive: "-000043-03-15T12:00:00.000000Z",
        f8: "NaN",
        f4: "-Infinity",
        num: "NaN",
        flag: false,
        uid: null,
        vc: "",
        bp: "abcd",
        nm: null,
        o: 0,
      },
      {
        id: 3,
        state: null,
        naive: "infinity",
        f8: "Infinity",
        f4: 0, // the SQL literal -0.0 is numeric 0 before the cast
        num: "-1.5",
        flag: null,
        uid: null,
        vc: null,
        bp: null,
        nm: null,
        o: null,
      },
    ]);
  });

  it.each(["tz-kolkata", "tz-sao-paulo", "tz-amsterdam"])("%s: normalised to the same UTC instants", (name) => {
    const rows = changes(run(name)).map((c) => (c.kind === "insert" ? c.row : null));
    expect(rows).toStrictEqual([
      { id: 0, at: "2024-05-01T12:00:00.000000Z" },
      { id: 1, at: "2024-05-01T12:00:00.100000Z" },
      { id: 2, at: "2024-05-01T12:00:00.120000Z" },
      { id: 3, at: "2024-05-01T12:00:00.123000Z" },
      { id: 4, at: "2024-05-01T12:00:00.123400Z" },
      { id: 5, at: "2024-05-01T12:00:00.123450Z" },
      { id: 6, at: "2024-05-01T23:59:59.999999Z" },
      { id: 10, at: "1900-01-01T00:00:00.000001Z" },
      { id: 11, at: "2024-12-31T22:30:00.500000Z" },
      { id: 12, at: "-infinity" },
    ]);
  });
});

describe("TransactionDecoder framing errors", () => {
  const rel = (columns: [string, number, boolean?][], id = 100): PgoutputMessage => ({
    tag: "relation",
    relation: {
      id,
      schema: "public",
      name: "t",
      replicaIdentity: "d",
      columns: columns.map(([name, typeOid, isKey]) => ({ name, typeOid, typeMod: -1, isKey: isKey ?? false })),
    },
  });
  const begin = (finalLsn = 1000n, xid = 7): PgoutputMessage => ({ tag: "begin", finalLsn, commitTime: 0n, xid });
  const commit = (commitLsn = 1000n): PgoutputMessage => ({
    tag: "commit",
    flags: 0,
    commitLsn,
    endLsn: commitLsn + 48n,
    commitTime: 0n,
  });
  const t = (s: string): Buffer => Buffer.from(s);
  const insert = (values: (string | null)[], relationId = 100): PgoutputMessage => ({
    tag: "insert",
    relationId,
    row: rawTuple(values.map((v) => (v === null ? null : t(v)))),
  });

  function decoderWith(...msgs: PgoutputMessage[]): TransactionDecoder {
    const d = new TransactionDecoder();
    for (const m of msgs) d.push(m);
    return d;
  }

  it.each<[string, PgoutputMessage[], PgoutputMessage, RegExp]>([
    ["insert outside a transaction", [rel([["a", 23]])], insert(["1"]), /INSERT outside a transaction/],
    [
      "delete after the commit",
      [rel([["a", 23, true]]), begin(), commit()],
      { tag: "delete", relationId: 100, old: rawTuple([t("1")]), oldKind: "key" },
      /DELETE outside a transaction/,
    ],
    ["commit without begin", [], commit(), /COMMIT outside a transaction/],
    ["change for an unknown relation", [rel([["a", 23]]), begin()], insert(["1"], 999), /relation id 999/],
    [
      "truncate naming an unknown relation",
      [rel([["a", 23]]), begin()],
      { tag: "truncate", relationIds: [100, 5], cascade: false, restartIdentity: false },
      /TRUNCATE for relation id 5/,
    ],
    [
      "tuple with fewer columns than the relation",
      [
        rel([
          ["a", 23],
          ["b", 25],
          ["c", 25],
        ]),
        begin(),
      ],
      insert(["1", "x"]),
      /public\.t \(relation id 100\) has 2 columns but its Relation message has 3/,
    ],
    [
      "old tuple with more columns than the relation",
      [rel([["a", 23, true]]), begin()],
      { tag: "update", relationId: 100, old: rawTuple([t("1"), null]), oldKind: "key", row: rawTuple([t("2")]) },
      /has 2 columns but its Relation message has 1/,
    ],
    [
      "commit LSN differing from begin's final LSN",
      [begin(1000n)],
      commit(2000n),
      /COMMIT at LSN 2000 does not match BEGIN's final LSN 1000/,
    ],
    ["begin while a transaction is open", [begin(1000n, 7)], begin(2000n, 8), /BEGIN of xid 8 while xid 7 is still open/],
  ])("%s", (_name, before, msg, message) => {
    const d = decoderWith(...before);
    let caught: unknown;
    try {
      d.push(msg);
    } catch (e: unknown) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(FramingError);
    expect(caught).toBeInstanceOf(DecodeError);
    expect((caught as Error).name).toBe("FramingError");
    expect((caught as Error).message).toMatch(message);
    expect((caught as Error).message).toMatch(/bug or protocol mismatch/);
  });

  it("numbers changes per transaction and types them by the current relation", () => {
    const d = decoderWith(rel([["a", 23, true]]));
    expect(d.push(begin(1000n, 7))).toStrictEqual({
      kind: "begin",
      xid: 7,
      commitLsn: 1000n,
      commitTime: "2000-01-01T00:00:00.000000Z",
      commitMs: 946_684_800_000,
    });
    expect(d.push(insert(["1"]))).toMatchObject({ kind: "change", xid: 7, commitLsn: 1000n, index: 0, change: { row: { a: 1 } } });
    // Same relation id, column retyped (ALTER COLUMN TYPE) and renamed: the new description wins.
    expect(d.push(rel([["b", 25, true]]))).toBeNull();
    expect(d.push(insert(["1"]))).toMatchObject({ index: 1, change: { row: { b: "1" } } });
    expect(d.push(commit(1000n))).toStrictEqual({
      kind: "commit",
      xid: 7,
      commitLsn: 1000n,
      endLsn: 1048n,
      commitTime: "2000-01-01T00:00:00.000000Z",
    });
    d.push(begin(2000n, 8));
    expect(d.push(insert(["2"]))).toMatchObject({ xid: 8, commitLsn: 2000n, index: 0 });
  });

  it("keeps only key columns of an old key tuple, all columns of a full one", () => {
    const d = decoderWith(
      rel([
        ["k1", 23, true],
        ["v", 25],
        ["k2", 25, true],
      ]),
      begin(),
    );
    const upd = (oldKind: "key" | "full"): PgoutputMessage => ({
      tag: "update",
      relationId: 100,
      old: rawTuple([t("1"), oldKind === "key" ? null : t("old"), t("x")]),
      oldKind,
      row: rawTuple([t("2"), UNCHANGED, t("y")]),
    });
    expect(d.push(upd("key"))).toMatchObject({
      change: { old: { k1: 1, k2: "x" }, oldKind: "key", row: { k1: 2, v: UNCHANGED, k2: "y" } },
    });
    const full = d.push(upd("full"));
    expect(full?.kind === "change" && full.change.kind === "update" && full.change.old).toStrictEqual({
      k1: 1,
      v: "old",
      k2: "x",
    });
  });

  it("a column named __proto__ is a plain own property", () => {
    const d = decoderWith(
      rel([
        ["__proto__", 25],
        ["a", 23],
      ]),
      begin(),
    );
    const ev = d.push(insert(["evil", "1"]));
    const row = (ev?.kind === "change" && ev.change.kind === "insert" ? ev.change.row : {}) as Row;
    expect(Object.getPrototypeOf(row)).toBe(Object.prototype);
    expect(Object.keys(row)).toStrictEqual(["__proto__", "a"]);
    expect(Object.getOwnPropertyDescriptor(row, "__proto__")?.value).toBe("evil");
  });

  it("origin, type and non-transactional messages are fine outside a transaction", () => {
    const d = new TransactionDecoder();
    expect(d.push({ tag: "origin", originLsn: 1n, name: "o" })).toBeNull();
    expect(d.push({ tag: "type", typeOid: 16397, schema: "public", name: "e" })).toBeNull();
    expect(d.push({ tag: "message", transactional: false, lsn: 1n, prefix: "p", content: t("c") })).toBeNull();
    expect(d.inTransaction).toBe(false);
  });

  it("reset() forgets the open transaction and the relations", () => {
    const d = decoderWith(rel([["a", 23]]), begin());
    expect(d.inTransaction).toBe(true);
    d.reset();
    expect(d.inTransaction).toBe(false);
    expect(d.relation(100)).toBeUndefined();
    d.push(begin());
    expect(() => d.push(insert(["1"]))).toThrow(/relation id 100/);
  });
});
