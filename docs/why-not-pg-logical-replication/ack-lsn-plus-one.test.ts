import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LogicalReplicationService, PgoutputPlugin } from "pg-logical-replication";
import { formatLsn } from "../../src/lsn.js";
import { confirmedFlush, dropDatabase, services, uniqueName, waitFor, withPg } from "../../test/support/harness.js";
import { adjacentCommitsDatabase, adjacentCommitsRetrying, witness } from "../../test/support/adjacent-commits.js";

/**
 * EVIDENCE ABOUT A THIRD-PARTY LIBRARY, not a test of the product (README.md in this folder).
 * `npm run why:pg-logical-replication`; not part of `npm test`.
 *
 * pg-logical-replication's acknowledge(lsn) confirms lsn + 1. Given a commit's end LSN, that is
 * one byte into the next transaction when its commit record starts exactly there, and PostgreSQL
 * then skips that transaction on the next start. If this ever fails, the library changed: the
 * reason the product streams by hand (src/source/replication.ts) needs checking again.
 */
describe("pg-logical-replication (evidence): acknowledging a commit's end LSN", () => {
  const db = uniqueName("why_pglr");
  const witnessSlot = `${db}_witness`;

  beforeAll(async () => {
    await adjacentCommitsDatabase(db);
  });

  afterAll(async () => {
    await dropDatabase(db);
  });

  it("acknowledge(A's end) confirms one byte past A, where B's commit begins, so B would be skipped", async () => {
    const slot = `${db}_lib`;
    await withPg(db, (c) => c.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]));
    await witness(db, witnessSlot, db);
    const { a, b } = await adjacentCommitsRetrying(
      db,
      witnessSlot,
      db,
      (c) => c.query("INSERT INTO a VALUES (100, 'A')"),
      (c) => c.query("INSERT INTO b VALUES (100, 'B')"),
    );
    const lib = new LogicalReplicationService({ ...services().pg, database: db }, { acknowledge: { auto: false, timeoutSeconds: 0 } });
    const started = new Promise<void>((r) => lib.once("start", () => r()));
    lib.on("error", () => undefined);
    void lib.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [db] }), slot).catch(() => undefined);
    try {
      await started;
      await lib.acknowledge(formatLsn(a.endLsn));
      const flushed = await waitFor("the library's acknowledgement", async () => {
        const f = await confirmedFlush(db, slot);
        return f !== null && f >= a.endLsn ? f : null;
      });
      expect(flushed).toBe(a.endLsn + 1n);
      // Past the start of B's commit record: PostgreSQL treats B as already received.
      expect(flushed > b.commitLsn).toBe(true);
    } finally {
      await lib.destroy();
    }
  });
});
