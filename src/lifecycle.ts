/**
 * A session's state shared by its parts: stopping (stop() was called), halted (it failed), and the
 * promise that rejects with the first failure, which every long wait of the session races.
 */
export class Lifecycle {
  /** stop() was called: nothing new is started, no checkpoint asked for, reading is not resumed. */
  stopping = false;
  /**
   * The session failed: nothing more is handed to the sink. Events of messages after the one that
   * failed would reach Kafka ahead of it, and after the restart a consumer skipping positions not
   * greater than the last it saw would skip the failed one when it comes.
   */
  halted = false;
  /** Rejects with the first failure reported by fail(). */
  readonly failed: Promise<never>;
  private readonly reject: (e: Error) => void;

  constructor() {
    let reject: (e: Error) => void = () => undefined;
    this.failed = new Promise<never>((_, r) => {
      reject = r;
    });
    this.failed.catch(() => undefined);
    this.reject = reject;
  }

  fail(e: Error): void {
    this.halted = true;
    this.reject(e);
  }
}
