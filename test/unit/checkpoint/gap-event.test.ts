import { describe, expect, it } from "vitest";
import { StreamGapEvent } from "../../../src/airflow/events.js";
import { gapEvent } from "../../../src/checkpoint/gap-event.js";

const AT = { commitLsn: 0x16b3748n, index: 2, xid: 901 };
const TX = { xid: 901, commitTime: "2026-12-03T04:00:00.000000Z" };

describe("the stream_gap event read from a gap message", () => {
  it("carries the gap's LSNs and the message's place in the stream", () => {
    const content = Buffer.from(
      JSON.stringify({
        reason: "slot_missing",
        from_lsn: "0/1000",
        to_lsn: "0/2000",
        checkpoint_written_at: "2026-12-03T03:59:00.000Z",
        detected_at: "2026-12-03T04:00:00.000Z",
        snapshot: "s-1",
      }),
    );
    const ev = gapEvent(content, AT, TX);
    expect(ev).not.toBeNull();
    expect(StreamGapEvent.parse(ev)).toEqual(ev);
    expect(ev!.source.position).toBe("00000000016B3748-00000002");
    expect(ev!.from_lsn).toBe("0/1000");
    expect(ev!.snapshot).toBe("s-1");
  });

  it("is null for content that is not a gap message, rather than a made-up gap", () => {
    expect(gapEvent(Buffer.from("not json"), AT, TX)).toBeNull();
    expect(gapEvent(Buffer.from(JSON.stringify({ reason: "slot_gone" })), AT, TX)).toBeNull();
  });
});
