import { describe, expect, it } from "vitest";
import { DecodeError } from "../../../src/decode/errors.js";
import { decodePgoutput, pgTimestampToIso, pgTimestampToMs, rawColumn, rawColumns } from "../../../src/decode/pgoutput.js";
import type { PgoutputMessage, RawTuple } from "../../../src/decode/types.js";
import { UNCHANGED } from "../../../src/decode/types.js";
import { fixture } from "./fixture.js";

/** Microseconds since 2000-01-01 for a UTC wall-clock time, computed independently of the decoder. */
function pgMicros(isoSeconds: string, micros: number): bigint {
  return BigInt(Date.parse(isoSeconds) / 1000 - 946_684_800) * 1_000_000n + BigInt(micros);
}

function decodeAll(name: string): PgoutputMessage[] {
  return fixture(name).map((b) => decodePgoutput(b));
}

function of<T extends PgoutputMessage["tag"]>(msgs: PgoutputMessage[], tag: T): Extract<PgoutputMessage, { tag: T }>[] {
  return msgs.filter((m): m is Extract<PgoutputMessage, { tag: T }> => m.tag === tag);
}

/** A raw tuple as strings for comparison: text columns as UTF-8, null and UNCHANGED as is. */
function texts(tuple: RawTuple): (string | null | typeof UNCHANGED)[] {
  return rawColumns(tuple).map((c) => (c === null || c === UNCHANGED ? c : c.toString("utf8")));
}

const TOAST_10K = "0123456789".repeat(1000);

describe("pgTimestampToIso", () => {
  it.each<[string, bigint, string]>([
    ["PostgreSQL epoch", 0n, "2000-01-01T00:00:00.000000Z"],
    ["one microsecond", 1n, "2000-01-01T00:00:00.000001Z"],
    ["one microsecond before the epoch", -1n, "1999-12-31T23:59:59.999999Z"],
    ["Unix epoch", -946_684_800_000_000n, "1970-01-01T00:00:00.000000Z"],
    ["before the Unix epoch, with fraction", -946_684_800_000_001n, "1969-12-31T23:59:59.999999Z"],
    ["2024 with microseconds", pgMicros("2024-05-01T12:00:00Z", 123456), "2024-05-01T12:00:00.123456Z"],
    ["whole second", pgMicros("2024-05-01T12:00:00Z", 0), "2024-05-01T12:00:00.000000Z"],
    ["leap day", pgMicros("2024-02-29T23:59:59Z", 999999), "2024-02-29T23:59:59.999999Z"],
    ["beyond 2^53 microseconds", pgMicros("2300-01-01T00:00:00Z", 7), "2300-01-01T00:00:00.000007Z"],
    ["infinity", 0x7fffffffffffffffn, "infinity"],
    ["-infinity", -0x8000000000000000n, "-infinity"],
  ])("%s", (_name, micros, iso) => {
    expect(pgTimestampToIso(micros)).toBe(iso);
  });

  it("answers the same for any order of calls (it remembers the last value and second)", () => {
    const base = pgMicros("2024-05-01T12:00:00Z", 0);
    const cases: bigint[] = [
      base,
      base + 1n,
      base + 999_999n,
      base + 1_000_000n,
      base - 1n,
      base,
      -1n,
      0n,
      pgMicros("2300-01-01T00:00:00Z", 7),
    ];
    cases.push(pgMicros("9999-12-31T23:59:59Z", 999_999), -211_813_488_000_000_000n, base + 1n);
    for (const micros of cases) {
      const unix = micros + 946_684_800_000_000n;
      const secs = unix / 1_000_000n - (unix % 1_000_000n < 0n ? 1n : 0n);
      const frac = unix - secs * 1_000_000n;
      const expected = `${new Date(Number(secs) * 1000).toISOString().slice(0, -4)}${frac.toString().padStart(6, "0")}Z`;
      expect(pgTimestampToIso(micros)).toBe(expected);
      expect(pgTimestampToMs(micros)).toBe(Math.floor(Number(unix) / 1000));
    }
  });
});

describe("decodePgoutput on captured bytes", () => {
  it("insert: Begin, Relation, two Inserts, Commit", () => {
    const msgs = decodeAll("insert");
    expect(msgs.map((m) => m.tag)).toStrictEqual(["begin", "relation", "insert", "insert", "commit"]);

    const [begin] = of(msgs, "begin");
    const [commit] = of(msgs, "commit");
    expect(commit?.commitLsn).toBe(begin?.finalLsn);
    expect(commit!.endLsn > commit!.commitLsn).toBe(true);
    expect(commit?.commitTime).toBe(begin?.commitTime);
    expect(commit?.flags).toBe(0);

    const [rel] = of(msgs, "relation");
    expect(rel?.relation).toMatchObject({ schema: "public", name: "fx_task", replicaIdentity: "d" });
    expect(rel?.relation.columns).toStrictEqual([
      { name: "id", typeOid: 25, typeMod: -1, isKey: true },
      { name: "try_number", typeOid: 23, typeMod: -1, isKey: false },
      { name: "big_count", typeOid: 20, typeMod: -1, isKey: false },
      { name: "start_date", typeOid: 1184, typeMod: -1, isKey: false },
      { name: "conf", typeOid: 3802, typeMod: -1, isKey: false },
      { name: "blob", typeOid: 17, typeMod: -1, isKey: false },
      { name: "log", typeOid: 25, typeMod: -1, isKey: false },
    ]);

    const [a, b] = of(msgs, "insert");
    expect(a?.relationId).toBe(rel?.relation.id);
    expect(texts(a!.row)).toStrictEqual([
      "a",
      "1",
      "9007199254740993",
      "2024-05-01 12:00:00.123456+00",
      '{"k": [1, 2.5, "x"], "nested": {"ok": true, "none": null}}',
      "\\xdeadbeef00",
      TOAST_10K,
    ]);
    expect(texts(b!.row)).toStrictEqual(["b", "2", null, null, null, null, "short"]);
  });

  it("returns tuple values as offsets into the input, not copies", () => {
    const input = fixture("insert")[2]!;
    const msg = decodePgoutput(input);
    if (msg.tag !== "insert") throw new Error(`expected insert, got ${msg.tag}`);
    expect(msg.row.data).toBe(input);
    const col = rawColumn(msg.row, 0);
    expect(Buffer.isBuffer(col)).toBe(true);
    expect((col as Buffer).buffer).toBe(input.buffer);
  });

  it("update: no old tuple, key change with 'K', TOASTed column unchanged ('u')", () => {
    const msgs = decodeAll("update");
    expect(msgs.map((m) => m.tag)).toStrictEqual([
      "begin",
      "relation",
      "update",
      "commit",
      "begin",
      "update",
      "commit",
      "begin",
      "update",
      "commit",
    ]);
    const [nonKey, keyChange, toastChange] = of(msgs, "update");

    expect(nonKey?.old).toBeNull();
    expect(nonKey?.oldKind).toBeNull();
    expect(texts(nonKey!.row)).toStrictEqual([
      "a",
      "1",
      "-9007199254740991",
      "2024-05-01 12:00:01.000001+00",
      '{"k": [1, 2.5, "x"], "nested": {"ok": true, "none": null}}',
      "\\xdeadbeef00",
      UNCHANGED,
    ]);

    expect(keyChange?.oldKind).toBe("key");
    // The old key tuple has every column; the ones outside the key are sent as nulls.
    expect(texts(keyChange!.old!)).toStrictEqual(["a", null, null, null, null, null, null]);
    expect(texts(keyChange!.row)[0]).toBe("a2");
    expect(rawColumn(keyChange!.row, 6)).toBe(UNCHANGED);

    expect(toastChange?.oldKind).toBeNull();
    expect(texts(toastChange!.row)[6]).toBe("abcdefghij".repeat(1000));
  });

  it("delete: old key only ('K')", () => {
    const dels = of(decodeAll("delete"), "delete");
    expect(dels.map((d) => d.oldKind)).toStrictEqual(["key", "key"]);
    expect(dels.map((d) => texts(d.old))).toStrictEqual([
      ["b", null, null, null, null, null, null],
      ["a2", null, null, null, null, null, null],
    ]);
  });

  it("replica identity full: old rows ('O') on update and delete", () => {
    const msgs = decodeAll("replica-full");
    const [rel] = of(msgs, "relation");
    expect(rel?.relation.replicaIdentity).toBe("f");
    // With REPLICA IDENTITY FULL every column is flagged as part of the key.
    expect(rel?.relation.columns.map((c) => c.isKey)).toStrictEqual([true, true]);
    const [upd] = of(msgs, "update");
    expect(upd?.oldKind).toBe("full");
    expect(texts(upd!.old!)).toStrictEqual(["1", "first"]);
    expect(texts(upd!.row)).toStrictEqual(["1", "second"]);
    const [del] = of(msgs, "delete");
    expect(del?.oldKind).toBe("full");
    expect(texts(del!.old)).toStrictEqual(["1", "second"]);
  });

  it("truncate: both relations in one message, CASCADE and RESTART IDENTITY", () => {
    const msgs = decodeAll("truncate");
    // TRUNCATE invalidates pgoutput's schema cache: fx_task's Relation is sent again before it.
    expect(msgs.map((m) => (m.tag === "relation" ? m.relation.name : m.tag))).toStrictEqual([
      "begin",
      "fx_task",
      "insert",
      "commit",
      "begin",
      "fx_task",
      "fx_full",
      "truncate",
      "commit",
    ]);
    const rels = of(msgs, "relation").map((r) => r.relation);
    const [tr] = of(msgs, "truncate");
    expect(tr?.cascade).toBe(true);
    expect(tr?.restartIdentity).toBe(true);
    expect(tr?.relationIds).toStrictEqual([rels[1]?.id, rels[2]?.id]);
  });

  it("schema change: a second Relation message for the same id, with the new column", () => {
    const msgs = decodeAll("schema-change");
    const rels = of(msgs, "relation").map((r) => r.relation);
    expect(rels).toHaveLength(2);
    expect(rels[0]?.id).toBe(rels[1]?.id);
    expect(rels[0]?.columns).toHaveLength(7);
    expect(rels[1]?.columns.at(-1)).toStrictEqual({ name: "extra", typeOid: 23, typeMod: -1, isKey: false });
    const [, second] = of(msgs, "insert");
    expect(texts(second!.row)).toStrictEqual(["s2", "2", null, null, null, null, null, "42"]);
  });

  it("misc: Origin, Type, logical Messages (transactional and not)", () => {
    const msgs = decodeAll("misc");
    expect(msgs.map((m) => m.tag)).toStrictEqual([
      "begin",
      "origin",
      "type",
      "relation",
      "insert",
      "insert",
      "insert",
      "message",
      "commit",
      "message",
    ]);
    const [begin] = of(msgs, "begin");
    // pg_replication_origin_xact_setup('0/ABCDEF', '2024-05-01 12:00:00+00') set both.
    expect(begin?.commitTime).toBe(pgMicros("2024-05-01T12:00:00Z", 0));
    expect(of(msgs, "origin")).toStrictEqual([{ tag: "origin", originLsn: 0xabcdefn, name: "eventstream_fixture_origin" }]);

    const [type] = of(msgs, "type");
    const [rel] = of(msgs, "relation");
    expect(type).toMatchObject({ schema: "public", name: "fx_state" });
    expect(rel?.relation.columns.find((c) => c.name === "state")?.typeOid).toBe(type?.typeOid);
    expect(rel?.relation.columns.find((c) => c.name === "vc")?.typeMod).toBe(24); // varchar(20): 20 + 4

    const [inTx, outside] = of(msgs, "message");
    expect(inTx).toMatchObject({ transactional: true, prefix: "airflow-eventstream" });
    expect(inTx?.content.toString()).toBe("in-tx");
    expect(outside).toMatchObject({ transactional: false, prefix: "airflow-eventstream" });
    expect(outside?.content.toString()).toBe("not-in-tx");
    expect(inTx!.lsn > 0n).toBe(true);
  });

  it("binary mode: columns of kind 'b' come through as their bytes", () => {
    const [ins] = of(decodeAll("binary"), "insert");
    expect(rawColumn(ins!.row, 0)).toStrictEqual(Buffer.from([0, 0, 0, 7]));
    const ts = rawColumn(ins!.row, 1);
    expect(Buffer.isBuffer(ts)).toBe(true);
    expect(pgTimestampToIso((ts as Buffer).readBigInt64BE(0))).toBe("2024-05-01T12:00:00.123456Z");
  });

  it.each(["tz-kolkata", "tz-sao-paulo", "tz-amsterdam"])("%s: the offset is in the text", (name) => {
    const rows = of(decodeAll(name), "insert").map((m) => texts(m.row));
    expect(rows).toHaveLength(10);
    const offsets = rows.map((r) => /([+-][\d:]+)$/.exec(String(r[1]))?.[1]);
    expect(offsets.some((o) => o !== undefined && o !== "+00")).toBe(true);
  });
});

describe("decodePgoutput on bad bytes", () => {
  const hex = (s: string): Buffer => Buffer.from(s.replace(/\s/g, ""), "hex");
  const BEGIN = "42 0000000001567e00 000304145962a817 000002df";

  it("decodes a hand-made Begin", () => {
    expect(decodePgoutput(hex(BEGIN))).toStrictEqual({
      tag: "begin",
      finalLsn: 0x1567e00n,
      commitTime: 0x304145962a817n,
      xid: 0x2df,
    });
  });

  it.each<[string, string, RegExp]>([
    ["unknown tag (Stream Start, protocol v2)", "53 00000001 01", /tag 0x53 \(S\).*protocol version 1/],
    ["unknown non-printable tag", "ff", /tag 0xff \(0xff\)/],
    ["empty message", "", /truncated/],
    ["truncated Begin", BEGIN.slice(0, 20), /'B' is truncated/],
    ["trailing bytes after Begin", `${BEGIN} 00`, /1 unexpected trailing bytes/],
    ["unterminated string in Origin", "4f 0000000000000001 6162", /'O' is truncated/],
    ["Insert without 'N'", "49 00004013 4b 0000", /expected new-tuple marker 'N'/],
    ["Delete without 'K'/'O'", "44 00004013 4e 0000", /expected 'K' or 'O'/],
    ["unknown tuple column kind", "49 00004013 4e 0001 78", /unknown kind byte 0x78/],
    ["text column longer than the message", "49 00004013 4e 0001 74 00000010 6162", /'I' is truncated/],
    ["unknown replica identity", "52 00004013 7000 7400 7a 0000", /unknown replica identity 0x7a/],
  ])("%s -> DecodeError", (_name, bytes, message) => {
    expect(() => decodePgoutput(hex(bytes))).toThrow(DecodeError);
    expect(() => decodePgoutput(hex(bytes))).toThrow(message);
  });
});
