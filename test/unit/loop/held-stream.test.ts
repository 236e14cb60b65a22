import { describe, expect, it } from "vitest";
import { HeldStream } from "../../../src/loop/thread.js";

/** A stream that records whether its socket reads. */
function fakeStream() {
  const s = {
    paused: false,
    start: async () => undefined,
    done: new Promise<void>(() => undefined),
    isOpen: true,
    stop: async () => undefined,
    sendStatus: () => undefined,
    pause: () => void (s.paused = true),
    resume: () => void (s.paused = false),
    get isPaused() {
      return s.paused;
    },
  };
  return s;
}

describe("HeldStream: the model thread's full queue as a second reason to pause", () => {
  it("reads only when neither the ack rule nor the model thread wants it paused", () => {
    const raw = fakeStream();
    const held = new HeldStream(raw);
    held.hold(true);
    expect(raw.paused).toBe(true);
    // The ack rule resumes (Kafka caught up): the queue is still full, so the socket stays paused.
    held.resume();
    expect(raw.paused).toBe(true);
    expect(held.isPaused).toBe(true);
    held.hold(false);
    expect(raw.paused).toBe(false);
    // Kafka is full, then the queue fills and drains: still paused for Kafka.
    held.pause();
    held.hold(true);
    held.hold(false);
    expect(raw.paused).toBe(true);
    held.resume();
    expect(raw.paused).toBe(false);
    expect(held.isPaused).toBe(false);
  });

  it("says it is paused while only the queue holds it, so the ack rule's resume is not skipped", () => {
    const raw = fakeStream();
    const held = new HeldStream(raw);
    held.pause();
    held.hold(true);
    // What AckRule.maybeResume checks first: a stream that claimed not to be paused would never be resumed.
    expect(held.isPaused).toBe(true);
    held.resume();
    held.hold(false);
    expect(raw.paused).toBe(false);
  });

  it("reports what a hold changes, so pauses for the queue count as paused time", () => {
    const raw = fakeStream();
    const reports: boolean[] = [];
    const held = new HeldStream(raw, (paused) => reports.push(paused));
    held.hold(true);
    held.hold(true);
    held.pause();
    // The queue drains while Kafka still holds the stream: still paused, and said so.
    held.hold(false);
    held.resume();
    held.hold(true);
    held.hold(false);
    expect(reports).toEqual([true, true, true, false]);
  });
});
