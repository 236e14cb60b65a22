import { maxLsn, type Lsn } from "../lsn.js";

/**
 * Decides which WAL position may be acknowledged to PostgreSQL.
 *
 * Every event gets a sequence number when it enters the sink; the sink reports the highest sequence
 * Kafka has acknowledged (it sends in order, so that covers every event before it). A transaction's
 * commit becomes a marker (its last event's sequence, its end LSN); a marker is passed once Kafka
 * has acknowledged up to its sequence, and the safe position becomes its LSN. Markers are passed
 * strictly in order, so the safe position never gets ahead of an event Kafka does not have.
 *
 * A keepalive between transactions is a marker too: once every event received before it is
 * acknowledged, the slot may advance to the server's WAL end, which keeps WAL from piling up while
 * Airflow's tables are quiet and the rest of the database is busy. It is queued like a commit,
 * never applied at once, because data received before it may still be on its way to Kafka
 * (a keepalive reports the server's send position, which can be ahead of changes still being
 * decoded or published here).
 *
 * All O(1) per event; one array slot per transaction in flight.
 */
export class AckTracker {
  private assigned = 0;
  private acked = 0;
  private readonly markerSeq: number[] = [];
  private readonly markerLsn: Lsn[] = [];
  private head = 0;
  private safe: Lsn;

  constructor(start: Lsn) {
    this.safe = start;
  }

  /** Sequence number for the next event entering the sink (1, 2, ...). */
  next(): number {
    return ++this.assigned;
  }

  /** A transaction ended at `endLsn`: safe to acknowledge once all events so far are in Kafka. */
  commit(endLsn: Lsn): void {
    this.mark(endLsn);
  }

  /** A keepalive outside any transaction: the server has sent everything up to `walEnd`. */
  keepalive(walEnd: Lsn): void {
    const last = this.markerLsn.length > this.head ? this.markerLsn[this.markerLsn.length - 1]! : this.safe;
    if (walEnd > last) this.mark(walEnd);
  }

  /** Kafka has acknowledged every event up to and including `seq`. */
  ackedUpTo(seq: number): void {
    if (seq > this.acked) this.acked = seq;
    this.advance();
  }

  /** The position to report to PostgreSQL: no unacknowledged event lies before it. */
  get safeLsn(): Lsn {
    return this.safe;
  }

  /**
   * The safe position once Kafka has acknowledged every event up to `seq`, by the commits and
   * keepalives known now (null: as things stand). What an exactly-once transaction ending at `seq`
   * records as its checkpoint's acked_lsn: it commits together with those events. Walks only the
   * markers of events not yet acknowledged: those of the one batch in flight.
   */
  safeLsnAfter(seq: number | null): Lsn {
    if (seq === null) return this.safe;
    let lsn = this.safe;
    for (let i = this.head; i < this.markerSeq.length && this.markerSeq[i]! <= seq; i++) lsn = maxLsn(lsn, this.markerLsn[i]!);
    return lsn;
  }

  /** Events handed to the sink and not yet acknowledged by Kafka. */
  get inflight(): number {
    return this.assigned - this.acked;
  }

  /** Commits and keepalives waiting for Kafka. */
  get pendingMarkers(): number {
    return this.markerSeq.length - this.head;
  }

  private mark(lsn: Lsn): void {
    this.markerSeq.push(this.assigned);
    this.markerLsn.push(lsn);
    this.advance();
  }

  private advance(): void {
    const seqs = this.markerSeq;
    while (this.head < seqs.length && seqs[this.head]! <= this.acked) {
      this.safe = maxLsn(this.safe, this.markerLsn[this.head]!);
      this.head++;
    }
    // Compact now and then rather than shift() per marker.
    if (this.head > 1024 && this.head * 2 > seqs.length) {
      seqs.splice(0, this.head);
      this.markerLsn.splice(0, this.head);
      this.head = 0;
    }
  }
}
