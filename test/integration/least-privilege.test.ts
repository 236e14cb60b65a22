import { describe, expect, it } from "vitest";
import { consume, createDatabase, daemonConfig, dropDatabase, startDaemon, uniqueName, waitForStreaming, withPg } from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";

/**
 * README's production setup, run as written: a role with LOGIN REPLICATION and SELECT on the three
 * tables (not their owner), publication and slot created by the owner, EVENTSTREAM_CREATE_PUBLICATION=false.
 * Only names and the password are substituted.
 */

function readmeSql(role: string, password: string, publication: string, slot: string): { asOwner: string[] } {
  // Copied from README.md "Production" SQL (wal_level is already logical on the test server).
  return {
    asOwner: [
      `CREATE ROLE ${role} WITH LOGIN REPLICATION PASSWORD '${password}'`,
      `GRANT SELECT ON public.task_instance, public.dag_run, public.xcom TO ${role}`,
      `CREATE PUBLICATION ${publication} FOR TABLE public.task_instance, public.dag_run, public.xcom`,
      `SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`,
    ],
  };
}

describe("least privilege", () => {
  it("a LOGIN REPLICATION role with SELECT only streams from an owner-made publication", async () => {
    const db = uniqueName("lp");
    const role = uniqueName("es_role");
    const password = "pw_" + role;
    await createDatabase(db, "3");
    const logs: string[] = [];
    let stop: (() => Promise<void>) | null = null;
    try {
      const sql = readmeSql(role, password, db, db);
      await withPg(db, async (c) => {
        for (const s of sql.asOwner) await c.query(s);
      });
      const cfg = daemonConfig(db, { PGUSER: role, PGPASSWORD: password, EVENTSTREAM_CREATE_PUBLICATION: "false", EVENTSTREAM_CREATE_SLOT: "false" });
      const d = startDaemon(cfg, logs);
      stop = d.stop;
      await waitForStreaming(db).catch((e: unknown) => {
        throw new Error(`${(e as Error).message}\n${logs.slice(-20).join("")}`);
      });
      await withPg(db, async (c) => {
        await c.query("BEGIN");
        await insertDagRun(c, "3", "lp_dag", "r1", "running");
        await insertTi(c, "3", { dag_id: "lp_dag", task_id: "t1", run_id: "r1" });
        await c.query("COMMIT");
        await updateTi(c, { dag_id: "lp_dag", task_id: "t1", run_id: "r1" }, { state: "queued", try_number: 1 });
        await updateTi(c, { dag_id: "lp_dag", task_id: "t1", run_id: "r1" }, { state: "success" });
      });
      const got = await consume([`${db}.events`], (all) => all.some((m) => m.event.type === "task_instance" && m.event.state === "success"), 60_000);
      const tiStates = got.filter((m) => m.event.type === "task_instance").map((m) => m.event.state);
      expect(tiStates).toEqual([null, "queued", "success"]);
      // The role really is not the owner and not a superuser.
      const owner = await withPg(db, async (c) => (await c.query<{ o: string; su: boolean }>(`SELECT pg_get_userbyid(relowner) AS o, (SELECT rolsuper FROM pg_roles WHERE rolname = $1) AS su FROM pg_class WHERE relname = 'task_instance'`, [role])).rows[0]!);
      expect(owner.o).not.toBe(role);
      expect(owner.su).toBe(false);
    } finally {
      await stop?.().catch(() => undefined);
      await dropDatabase(db);
      await withPg("postgres", (c) => c.query(`DROP ROLE IF EXISTS ${role}`)).catch(() => undefined);
    }
  });
});
