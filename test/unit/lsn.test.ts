import { describe, expect, it } from "vitest";
import { formatLsn, lsnHex16, parseLsn } from "../../src/lsn.js";

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
