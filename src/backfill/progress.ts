import type { Logger } from "../log.js";

/** Plain log lines this often when stderr is no terminal. */
const LOG_EVERY_MS = 5_000;
/** A terminal's bar is redrawn at most this often. */
const DRAW_EVERY_MS = 200;
const BAR_WIDTH = 30;

/**
 * A replay's progress on stderr. The total is the windows' length in offsets, an estimate of the
 * records: transaction markers, and with --dag other DAGs' records, take offsets too; so the bar
 * moves by offsets read, and the count shown is of records copied.
 */
export class Progress {
  private offsets = 0;
  private records = 0;
  private lastDraw = 0;
  private readonly started = Date.now();

  constructor(
    private readonly total: number,
    private readonly err: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly log: Logger,
  ) {}

  add(offsets: number, records: number): void {
    this.offsets += offsets;
    this.records += records;
    const now = Date.now();
    if (now - this.lastDraw < (this.err.isTTY ? DRAW_EVERY_MS : LOG_EVERY_MS)) return;
    this.lastDraw = now;
    this.show(false);
  }

  /** The last state; on a terminal, ends the bar's line. */
  end(): { records: number; ms: number } {
    this.show(true);
    return { records: this.records, ms: Date.now() - this.started };
  }

  private show(final: boolean): void {
    const ms = Date.now() - this.started;
    const rate = ms > 0 ? Math.round((this.records * 1000) / ms) : 0;
    const frac = this.total > 0 ? Math.min(1, this.offsets / this.total) : 1;
    if (this.err.isTTY) {
      const filled = Math.round(frac * BAR_WIDTH);
      const bar = `${"#".repeat(filled)}${".".repeat(BAR_WIDTH - filled)}`;
      const line = `replay [${bar}] ${Math.round(frac * 100)}%  ${this.records.toLocaleString("en")} records (of ~${this.total.toLocaleString("en")} offsets)  ${rate.toLocaleString("en")}/s`;
      this.err.write(`\r${line}${final ? "\n" : ""}`);
    } else {
      this.log.info(
        { records: this.records, offsets: this.offsets, totalOffsets: this.total, perSecond: rate },
        final ? "replay done" : "replaying",
      );
    }
  }
}
