import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Progress } from "../../../src/backfill/progress.js";

function stream(isTTY: boolean): NodeJS.WritableStream & { isTTY: boolean; text: string } {
  const s = {
    isTTY,
    text: "",
    write(chunk: string) {
      s.text += chunk;
      return true;
    },
  };
  return s as unknown as NodeJS.WritableStream & { isTTY: boolean; text: string };
}

describe("replay progress", () => {
  it("draws a bar on a terminal, rewriting its line, and ends it", () => {
    const err = stream(true);
    const lines: string[] = [];
    const p = new Progress(1000, err, pino({ level: "info" }, { write: (l: string) => lines.push(l) }));
    p.add(500, 480);
    p.add(500, 490); // within the redraw interval: not drawn
    const { records } = p.end();
    expect(records).toBe(970);
    const draws = err.text.split("\r").filter((d) => d !== "");
    expect(draws).toHaveLength(2);
    expect(draws[0]).toMatch(/^replay \[#{15}\.{15}\] 50%\s+480 records \(of ~1,000 offsets\)/);
    expect(draws[1]).toMatch(/^replay \[#{30}\] 100%\s+970 records .*\n$/);
    expect(lines).toEqual([]);
  });

  it("logs plain lines when stderr is no terminal", () => {
    const err = stream(false);
    const lines: string[] = [];
    const p = new Progress(10, err, pino({ level: "info" }, { write: (l: string) => lines.push(l) }));
    p.add(10, 10);
    p.end();
    expect(err.text).toBe("");
    expect(lines.map((l) => (JSON.parse(l) as { msg: string; records: number }).msg)).toEqual(["replaying", "replay done"]);
  });
});
