import type { Lsn } from "./lsn.js";
import type { StreamHandlers } from "./source/replication.js";

type Held = { payload: Buffer } | { walEnd: Lsn };

/**
 * The stream's messages while a start checks the slot against the checkpoint: until then nothing
 * is published, so the stream is paused and what had already arrived waits here, in order (copied:
 * the protocol parser may reuse its buffer). release() hands it on, in order, and everything after.
 */
export class MessageHold implements StreamHandlers {
  /** What arrived while holding; null once released. */
  private held: Held[] | null = [];

  constructor(
    private readonly next: StreamHandlers,
    private readonly stream: { pause(): void },
    /** A status update now, when the server asks for one while holding. */
    private readonly reportNow: () => void,
  ) {}

  onData(payload: Buffer): void {
    if (this.held === null) return this.next.onData(payload);
    this.held.push({ payload: Buffer.from(payload) });
    this.stream.pause();
  }

  onKeepalive(walEnd: Lsn, replyRequested: boolean): void {
    if (this.held === null) return this.next.onKeepalive(walEnd, replyRequested);
    this.held.push({ walEnd });
    // The reply carries the position confirmed so far, which nothing here changes.
    if (replyRequested) this.reportNow();
  }

  /** Replays what was held, in order; from now on every message goes straight on. */
  release(): void {
    const queued = this.held ?? [];
    this.held = null;
    for (const m of queued) {
      if ("payload" in m) this.next.onData(m.payload);
      else this.next.onKeepalive(m.walEnd, false);
    }
  }
}
