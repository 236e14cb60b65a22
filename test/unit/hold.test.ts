import { describe, expect, it } from "vitest";
import { MessageHold } from "../../src/hold.js";

/** The loop behind the hold, the stream's pause, and the status update, as fakes recording what reached them. */
function setup() {
  const seen: string[] = [];
  let pauses = 0;
  let reports = 0;
  const hold = new MessageHold(
    {
      onData: (payload) => void seen.push(`data ${payload.toString()}`),
      onKeepalive: (walEnd, replyRequested) => void seen.push(`keepalive ${walEnd} ${replyRequested}`),
    },
    { pause: () => void pauses++ },
    () => void reports++,
  );
  return { hold, seen, pauses: () => pauses, reports: () => reports };
}

describe("MessageHold: messages arriving while the checkpoint is read", () => {
  it("hands nothing on while holding, pausing the stream on data", () => {
    const h = setup();
    h.hold.onData(Buffer.from("begin"));
    h.hold.onKeepalive(100n, false);
    h.hold.onData(Buffer.from("change"));
    expect(h.seen).toEqual([]);
    expect(h.pauses()).toBe(2);
  });

  it("replays them in order once released, keepalives without a reply request, then passes everything straight on", () => {
    const h = setup();
    h.hold.onData(Buffer.from("begin"));
    h.hold.onKeepalive(100n, true);
    h.hold.onData(Buffer.from("change"));
    h.hold.onKeepalive(200n, false);
    h.hold.onData(Buffer.from("commit"));
    h.hold.release();
    expect(h.seen).toEqual(["data begin", "keepalive 100 false", "data change", "keepalive 200 false", "data commit"]);
    h.hold.onData(Buffer.from("next"));
    h.hold.onKeepalive(300n, true);
    expect(h.seen.slice(5)).toEqual(["data next", "keepalive 300 true"]);
    expect(h.pauses()).toBe(3);
  });

  it("answers a keepalive asking for a reply at once, with the position confirmed so far", () => {
    const h = setup();
    h.hold.onKeepalive(100n, true);
    h.hold.onKeepalive(200n, false);
    expect(h.reports()).toBe(1);
  });

  it("keeps a copy of each payload: the protocol parser may reuse its buffer", () => {
    const h = setup();
    const buf = Buffer.from("first");
    h.hold.onData(buf);
    buf.write("XXXXX");
    h.hold.release();
    expect(h.seen).toEqual(["data first"]);
  });

  it("a second release replays nothing again", () => {
    const h = setup();
    h.hold.onData(Buffer.from("once"));
    h.hold.release();
    h.hold.release();
    expect(h.seen).toEqual(["data once"]);
  });
});
