import { describe, expect, it } from "vitest";
import { formatLsn, formatPosition, lsnHex16, lsnTexts, parseLsn, parsePosition, positionIndex } from "../../src/lsn.js";

describe("LSN", () => {
  it.each([
    ["0/0", 0n],
    ["0/16B3748", 0x16b3748n],
    ["16/B374D848", (0x16n << 32n) | 0xb374d848n],
    ["FFFFFFFF/FFFFFFFF", 0xffffffffffffffffn],
  ])("parses and formats %s", (text, value) => {
    expect(parseLsn(text)).toBe(value);
    expect(formatLsn(value)).toBe(text);
  });

  it("accepts the zero-padded form of message bodies", () => {
    expect(parseLsn("0000000A/0000ABCD")).toBe(parseLsn("A/ABCD"));
  });

  it("orders numerically where string order is wrong", () => {
    // As strings "9/0" > "10/0"; as positions it is the other way round.
    expect(parseLsn("9/0") < parseLsn("10/0")).toBe(true);
    expect(lsnHex16(parseLsn("9/0")) < lsnHex16(parseLsn("10/0"))).toBe(true);
  });

  it.each(["", "0", "0/", "/1", "G/1", "1/2/3", "123456789/0"])("rejects %j", (text) => {
    expect(() => parseLsn(text)).toThrow(/not an LSN/);
  });
});

describe("a position's index part", () => {
  it("is eight upper-case hex digits, from the table of small indices and past it alike", () => {
    for (const i of [0, 1, 9, 10, 15, 16, 255, 1023, 1024, 1025, 4096, 0xabcdef, 0xffffffff]) {
      expect(positionIndex(i)).toBe(i.toString(16).toUpperCase().padStart(8, "0"));
      expect(parsePosition(formatPosition({ commitLsn: 0x16b3748n, index: i }))).toEqual({ commitLsn: 0x16b3748n, index: i });
    }
  });
});

describe("an LSN's two texts at once", () => {
  it.each([0n, 1n, 0x16b3748n, (0x16n << 32n) | 0xb374d848n, 0xffffffffn, 1n << 32n, 0xffffffffffffffffn])("%s", (lsn) => {
    expect(lsnTexts(lsn)).toEqual({ text: formatLsn(lsn), positionPrefix: formatPosition({ commitLsn: lsn, index: 0 }).slice(0, 17) });
  });
});
