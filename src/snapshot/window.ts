import type { Lsn } from "../lsn.js";

/**
 * The watermark window rule of a snapshot chunk (DBLog; Debezium's incremental snapshot), pure.
 *
 * A chunk is read in a REPEATABLE READ transaction between a low watermark L and a high watermark
 * H (logical decoding messages). Its rows are published at H; a consumer applying by position then
 * sees a row's snapshot value after every streamed event before H and before every one after H. A
 * row is dropped from the chunk (its value comes from the stream instead) when a streamed event of
 * it could be newer than the chunk's value and lie before H:
 *
 * 1. a transaction whose commit record lies between L and H changed it: the chunk may hold the
 *    value before or after that change, and the stream's event (before H) would be overwritten by
 *    an older value;
 * 2. a transaction whose commit record lies before L, but which the chunk's snapshot does not see,
 *    changed it. PostgreSQL writes (and, with synchronous replication, waits on) the commit record
 *    before the backend leaves the proc array, so the chunk's snapshot, taken after L, can still
 *    miss it: the chunk holds the row before the change, while the change's event precedes L. The
 *    chunk's pg_current_snapshot() says which transactions it missed: xid >= xmax or xid in xip.
 *    (test/integration/snapshot.test.ts makes it happen: a synchronous standby that never answers
 *    holds a commit, decoded and published, invisible for as long as the test likes.)
 *
 * Only changes that published an event count: a heartbeat (churn) leaves the state the chunk read,
 * and dropping its row would leave the row out of the snapshot altogether.
 *
 * Case 2 needs the keys of transactions decoded before L, for as far back as a snapshot can miss
 * one: RecentChanges keeps them, bounded; when a transaction the snapshot missed may have been
 * forgotten, the chunk is read again (`unsafe`), never guessed at.
 */

/** A snapshot as pg_current_snapshot() gives it, reduced to 32-bit xids (what pgoutput's BEGIN carries). */
export interface PgSnapshot {
  xmin: number;
  xmax: number;
  xip: ReadonlySet<number>;
}

/** "xmin:xmax:xip,..." with 64-bit xids -> 32-bit ones. */
export function parseSnapshot(text: string): PgSnapshot {
  const m = /^(\d+):(\d+):([\d,]*)$/.exec(text.trim());
  if (m === null) throw new Error(`not a pg_snapshot: ${JSON.stringify(text)}`);
  const xid32 = (s: string) => Number(BigInt(s) & 0xffffffffn);
  const xip = m[3] === "" ? [] : m[3]!.split(",").map(xid32);
  return { xmin: xid32(m[1]!), xmax: xid32(m[2]!), xip: new Set(xip) };
}

/** a precedes b in PostgreSQL's circular xid order (TransactionIdPrecedes). */
export function xidBefore(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

/** The snapshot sees transaction `xid` (committed: the stream carries committed transactions only). */
export function sees(s: PgSnapshot, xid: number): boolean {
  if (xidBefore(xid, s.xmin)) return true;
  if (!xidBefore(xid, s.xmax)) return false;
  return !s.xip.has(xid);
}

interface RecentTx {
  xid: number;
  commitLsn: Lsn;
  keys: string[];
}

/** How many forgotten transactions are remembered (12 B each) before only their highest xid is. */
const FORGOTTEN_XIDS = 200_000;

/**
 * Evicted transactions' xids and commit LSNs, oldest first: a ring over two typed arrays, grown
 * by doubling up to FORGOTTEN_XIDS. Not arrays of numbers and bigints: every LSN there was a
 * BigInt object of its own (~24 B, plus its 8 B slot), one per transaction of a drain, ~6 MB of
 * the live heap by the end of a 130,000-transaction backlog; here each costs 12 B off the heap.
 */
class ForgottenTxs {
  private xids = new Uint32Array(1024);
  private lsns = new BigUint64Array(1024);
  /** Index of the oldest. */
  private head = 0;
  private size = 0;

  /** Remembers one; returns the xid it had to drop to make room (the oldest), or null. */
  push(xid: number, lsn: Lsn): number | null {
    let dropped: number | null = null;
    if (this.size === this.xids.length) {
      if (this.size < FORGOTTEN_XIDS) this.grow();
      else {
        dropped = this.xids[this.head]!;
        this.head = (this.head + 1) % this.xids.length;
        this.size--;
      }
    }
    const at = (this.head + this.size) % this.xids.length;
    this.xids[at] = xid;
    this.lsns[at] = lsn;
    this.size++;
    return dropped;
  }

  /** Whether one of them committed before `low` and is not visible to `s`. */
  anyUnseenBefore(low: Lsn, s: PgSnapshot): boolean {
    const cap = this.xids.length;
    for (let i = 0; i < this.size; i++) {
      const at = (this.head + i) % cap;
      if (this.lsns[at]! < low && !sees(s, this.xids[at]!)) return true;
    }
    return false;
  }

  private grow(): void {
    const cap = Math.min(this.xids.length * 2, FORGOTTEN_XIDS);
    const xids = new Uint32Array(cap);
    const lsns = new BigUint64Array(cap);
    for (let i = 0; i < this.size; i++) {
      const at = (this.head + i) % this.xids.length;
      xids[i] = this.xids[at]!;
      lsns[i] = this.lsns[at]!;
    }
    this.xids = xids;
    this.lsns = lsns;
    this.head = 0;
  }
}

/**
 * The row keys of recently decoded transactions that published events, bounded by `maxKeys`.
 * Transactions evicted leave their xid behind (bounded too), so a chunk can tell whether its
 * snapshot missed one whose keys are gone.
 */
export class RecentChanges {
  private readonly txs: RecentTx[] = [];
  private head = 0;
  private keyCount = 0;
  /** Evicted transactions: the rule only ever walks them all (unseenBefore) or drops the oldest. */
  private readonly forgotten = new ForgottenTxs();
  /** The highest xid dropped from the forgotten ones themselves; null: none. */
  private forgottenBeyond: number | null = null;

  constructor(private readonly maxKeys: number) {}

  /** A row key touched by a published event of transaction `xid` (commit record at `commitLsn`). */
  touch(xid: number, commitLsn: Lsn, key: string): void {
    let last = this.txs.length > this.head ? this.txs[this.txs.length - 1]! : null;
    if (last === null || last.xid !== xid || last.commitLsn !== commitLsn) {
      last = { xid, commitLsn, keys: [] };
      this.txs.push(last);
    }
    last.keys.push(key);
    this.keyCount++;
    while (this.keyCount > this.maxKeys && this.head < this.txs.length - 1) this.evict();
  }

  /** Keys of transactions before `low` that `s` does not see; null when such a transaction may have been forgotten. */
  unseenBefore(low: Lsn, s: PgSnapshot): Set<string> | null {
    if (this.forgottenBeyond !== null && !xidBefore(this.forgottenBeyond, s.xmin)) return null;
    // Forgotten transactions after L are in the chunk's own window set already.
    if (this.forgotten.anyUnseenBefore(low, s)) return null;
    const out = new Set<string>();
    for (let i = this.head; i < this.txs.length; i++) {
      const tx = this.txs[i]!;
      if (tx.commitLsn < low && !sees(s, tx.xid)) for (const k of tx.keys) out.add(k);
    }
    return out;
  }

  private evict(): void {
    const tx = this.txs[this.head]!;
    this.head++;
    this.keyCount -= tx.keys.length;
    const dropped = this.forgotten.push(tx.xid, tx.commitLsn);
    if (dropped !== null && (this.forgottenBeyond === null || xidBefore(this.forgottenBeyond, dropped))) this.forgottenBeyond = dropped;
    if (this.head > 1024 && this.head * 2 > this.txs.length) {
      this.txs.splice(0, this.head);
      this.head = 0;
    }
  }
}

/** What the rule needs of an open chunk at its high watermark. */
export interface ChunkAtHigh {
  low: Lsn;
  /** Keys touched by published events of transactions decoded after the low watermark. */
  touchedInWindow: ReadonlySet<string>;
  snapshot: PgSnapshot;
}

/** The keys to drop from the chunk (rules 1 and 2 above); null: the chunk must be read again. */
export function keysToDrop(chunk: ChunkAtHigh, recent: RecentChanges): Set<string> | null {
  const before = recent.unseenBefore(chunk.low, chunk.snapshot);
  if (before === null) return null;
  for (const k of chunk.touchedInWindow) before.add(k);
  return before;
}
