/** Waits for Kafka's acknowledgement of a sequence number (src/checkpoint/tracker.ts's seqs): the sink reports each advance. */
export class AckWatch {
  private acked = 0;
  private readonly waiters: { seq: number; resolve: () => void }[] = [];

  ackedUpTo(seq: number): void {
    if (seq <= this.acked) return;
    this.acked = seq;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.seq <= seq) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  /** Resolves once every record up to `seq` is acknowledged. */
  until(seq: number): Promise<void> {
    if (seq <= this.acked) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }
}
