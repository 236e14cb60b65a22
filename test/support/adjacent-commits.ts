import type pg from "pg";
import { decodePgoutput } from "../../src/decode/pgoutput.js";
import { TransactionDecoder } from "../../src/decode/transactions.js";
import { createDatabase, pgClient, withPg } from "./harness.js";

/**
 * Adjacent commits: transaction B writes first, A commits, B commits right after, so B's commit
 * record starts exactly where A's ends. Acknowledging A must confirm A's end exactly: one byte
 * more, and PostgreSQL skips B on the next start. Used by test/integration/ack-position.test.ts
 * (the product) and docs/why-not-pg-logical-replication (the library the product does not use).
 */

export type Tx = { xid: number; commitLsn: bigint; endLsn: bigint };

/** B writes first, A writes and commits, B commits right after; tells whether the WAL has them back to back. */
export async function adjacentCommits(
  db: string,
  witnessSlot: string,
  publication: string,
  writeA: (c: pg.Client) => Promise<unknown>,
  writeB: (c: pg.Client) => Promise<unknown>,
): Promise<{ a: Tx; b: Tx; adjacent: boolean }> {
  const ca = pgClient(db);
  const cb = pgClient(db);
  await ca.connect();
  await cb.connect();
  try {
    await cb.query("BEGIN");
    await writeB(cb);
    await ca.query("BEGIN");
    await writeA(ca);
    // A's COMMIT, then B's at once: nothing else writes WAL between the two commit records (the
    // witness below tells), and A commits first. Sent together (Promise.all), the two backends
    // race, and B first (seen ~15% of runs on a busy 2-core machine) turns the daemon-level test
    // below into another case: nothing of A in Kafka, nothing acknowledged.
    await ca.query("COMMIT");
    await cb.query("COMMIT");
  } finally {
    await ca.end();
    await cb.end();
  }
  const txs = await witness(db, witnessSlot, publication);
  const [a, b] = txs.slice(-2);
  if (!a || !b) throw new Error(`the witness slot saw ${txs.length} transactions, expected 2`);
  return { a, b, adjacent: a.endLsn === b.commitLsn };
}

export async function adjacentCommitsRetrying(...args: Parameters<typeof adjacentCommits>): Promise<{ a: Tx; b: Tx }> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const r = await adjacentCommits(...args);
    if (r.adjacent) return r;
  }
  throw new Error("could not produce two adjacent commits in 10 attempts");
}

/** Transactions as a second pgoutput slot sees them; consumed, so each call returns the new ones. */
export async function witness(db: string, slot: string, publication: string): Promise<Tx[]> {
  return withPg(db, async (c) => {
    const { rows } = await c.query<{ data: Buffer }>(
      "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)",
      [slot, publication],
    );
    const dec = new TransactionDecoder();
    const txs: Tx[] = [];
    for (const r of rows) {
      const ev = dec.push(decodePgoutput(r.data));
      if (ev?.kind === "commit") txs.push({ xid: ev.xid, commitLsn: ev.commitLsn, endLsn: ev.endLsn });
    }
    return txs;
  });
}

/**
 * A database with tables a and b, a publication of both named after the database, and a witness
 * slot that sees every commit (the adjacent-commit tests' fixture). Returns the witness slot's name.
 */
export async function adjacentCommitsDatabase(db: string): Promise<string> {
  const witnessSlot = `${db}_witness`;
  await createDatabase(db, null);
  await withPg(db, async (c) => {
    await c.query("CREATE TABLE a (id int primary key, v text); CREATE TABLE b (id int primary key, v text)");
    await c.query(`CREATE PUBLICATION ${db} FOR TABLE a, b`);
    await c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [witnessSlot]);
  });
  return witnessSlot;
}
