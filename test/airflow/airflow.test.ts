import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DagRunEvent, NotificationEvent, TaskInstanceEvent } from "../../src/airflow/events.js";
import { dropDatabase, uniqueName, withPg } from "../support/harness.js";
import { abort, airflowInstance, airflowVersions, ensureVenv, killOnExit, migrate, type AirflowInstance } from "./support/airflow.js";
import { DAGS, deleteTopics, runPhase, type DagId, type Mode, type PhaseResult } from "./support/phases.js";
import {
  AUDIT_SCHEMA,
  auditChains,
  eventToken,
  installAudit,
  previousProblems,
  renderAudit,
  token,
  unattributable,
} from "./support/audit.js";
import { dropRestartRepeats, renderRun, renderTi, runProblems, tiChains, tiName, tiProblems } from "./support/sequences.js";
import { EXPECTED, type Observed } from "./expected.js";

/**
 * The product against real Airflow: for each supported version, the DAGs of test/dags run for real
 * (`airflow dags test`, and the scheduler with LocalExecutor), the daemon streams the metadata
 * database to Kafka, and an independent consumer reads the topic back.
 *
 * Two checks per DAG, kept apart so that a failure says whose it is:
 * - the stream: per task instance and per DAG run, the events are exactly the transitions Airflow
 *   committed, in order, with their transactions, as recorded by a test-only trigger
 *   (support/audit.ts). Whatever path Airflow took, loaded machine or not; no early return.
 * - Airflow's behaviour: what Airflow committed equals the sequences scripted in expected.ts
 *   (notation in support/sequences.ts, explained in docs/airflow-e2e.md). That needs a quiet
 *   machine: under load Airflow 3 can fail a task its worker never started; the failure message
 *   then names what Airflow did.
 *
 * Slow (real Airflow: ~2 min for both versions with cached venvs, ~3.5 min on a fresh machine):
 * `npm run test:airflow`. The venvs live in ~/.cache/airflow-eventstream (scripts/airflow-venv.sh).
 * NOTIFICATION marks the assertions on notification events (the XCom feature's contract).
 */

const MODES: Mode[] = ["dags-test", "scheduler"];
/** The scripted checks of Airflow's own behaviour (`npm run test:airflow:scripted`); off in `npm test`. */
const SCRIPTED = process.env.AIRFLOW_E2E_SCRIPTED === "1";

describe.each(airflowVersions())("Airflow $version: real DAGs through the daemon", ({ major, version }) => {
  const base = uniqueName(`e2e${major}`);
  const databases: string[] = [];
  const instances: AirflowInstance[] = [];
  const phases = {} as Record<Mode, PhaseResult>;
  let failed = false;

  beforeAll(async () => {
    const t0 = Date.now();
    const venv = await ensureVenv(version);
    const tVenv = Date.now() - t0;

    // One `airflow db migrate`, copied (CREATE DATABASE ... TEMPLATE) into one database per mode.
    const template = `${base}_tmpl`;
    await withPg("postgres", (c) => c.query(`CREATE DATABASE ${template}`));
    databases.push(template);
    const migrator = await airflowInstance(version, major, venv, template, "migrate");
    instances.push(migrator);
    killOnExit(migrator);
    const tMigrate = await migrate(migrator);
    // Before the copies: CREATE DATABASE … TEMPLATE takes the audit's table and triggers along.
    await installAudit(template);
    const byMode = {} as Record<Mode, AirflowInstance>;
    for (const mode of MODES) {
      const db = `${base}_${mode === "dags-test" ? "dt" : "sch"}`;
      await withPg("postgres", (c) => c.query(`CREATE DATABASE ${db} TEMPLATE ${template}`));
      databases.push(db);
      byMode[mode] = await airflowInstance(version, major, venv, db, mode);
      instances.push(byMode[mode]);
      killOnExit(byMode[mode]);
    }

    // Both modes at once (own databases, daemons and topics): the scheduler mostly waits.
    const results = await Promise.all(MODES.map((m) => runPhase(m, byMode[m])));
    for (const r of results) phases[r.mode] = r;

    const lines = [`Airflow ${version}: venv ${ms(tVenv)}, db migrate ${ms(tMigrate)}, total ${ms(Date.now() - t0)}`];
    for (const r of results) {
      lines.push(
        `  ${r.mode} (${r.af.database}, ${r.consumed.length} events): ${Object.entries(r.timings)
          .map(([k, v]) => `${k} ${ms(v)}`)
          .join(", ")}`,
      );
      if (r.unfinished !== null)
        lines.push(`    Airflow did not finish its runs, stopped it and checked the stream against what it committed: ${r.unfinished}`);
      if (r.sessions > 1) {
        const dropped = DAGS[r.mode].reduce(
          (n, d) => n + (r.runs.some((x) => x.dag_id === d) ? compareDag(r, d, r.runs.find((x) => x.dag_id === d)!.run_id).dropped : 0),
          0,
        );
        lines.push(
          `    the daemon restarted its session ${r.sessions - 1} time(s) (Kafka/PostgreSQL blip): ${r.redelivered} re-delivered events skipped by position, ${dropped} restart repeats (previous_state_known false) dropped`,
        );
      }
      writeFileSync(join(r.af.home, "observed.json"), JSON.stringify(observeAll(r), null, 2));
    }
    console.log(lines.join("\n"));
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failed = true;
  });

  afterAll(async () => {
    for (const af of instances) abort(af);
    for (const db of databases) await dropDatabase(db);
    if (failed || !phases["dags-test"] || !phases.scheduler) {
      const topics = instances.filter((a) => !a.database.endsWith("_tmpl")).map((a) => `${a.database}.events`);
      console.log(
        `Airflow ${version}: logs (+ observed.json) kept, and the topics ${topics.join(", ")}:\n${instances.map((a) => `  ${a.home}`).join("\n")}`,
      );
    } else {
      for (const af of instances) rmSync(af.home, { recursive: true, force: true });
      await deleteTopics(MODES.map((m) => phases[m].topic));
    }
  }, 120_000);

  for (const mode of MODES) {
    for (const dag of DAGS[mode]) {
      // The stream's contract, whatever path Airflow took: holds on a loaded machine too.
      it(`${mode}: ${dag}: each task instance's and the run's events are exactly the transitions Airflow committed (audit), in order, ending in the database's state`, () => {
        const r = phases[mode];
        const runs = r.runs.filter((x) => x.dag_id === dag);
        expect(runs, `dag_run rows of ${dag}`).toHaveLength(1);
        const c = compareDag(r, dag, runs[0]!.run_id);
        expect(c.auditProblems, "the audit's own consistency").toEqual([]);
        expect(c.events, "events (op state/try[map_index] or state#clear_number, x = source.xid) vs the audit's transitions").toEqual(
          c.transitions,
        );
        expect(c.problems).toEqual([]);
      });

      // Airflow's behaviour, scripted: depends on a quiet machine, so it is not part of `npm test`
      // (a CI machine's load decides Airflow's path, not the stream): `npm run test:airflow:scripted`
      // adds it to the same runs (see docs/airflow-e2e.md).
      if (SCRIPTED)
        it(`${mode}: ${dag}: [Airflow's behaviour, needs a quiet machine] Airflow committed the sequences scripted in expected.ts`, () => {
          const r = phases[mode];
          const run = r.runs.find((x) => x.dag_id === dag)!;
          const { committed } = compareDag(r, dag, run.run_id);
          const expected = EXPECTED[mode][major][dag]!;
          expect(
            r.unfinished,
            `Airflow ${version} did not finish its runs (Airflow's behaviour, not the stream's: the audit test judges the stream)`,
          ).toBeNull();
          expect(committed, deviation(`Airflow ${version} (${mode}) ${dag}`, committed, expected)).toEqual(expected);
          if (mode === "dags-test") {
            // `airflow dags test` exits 1 when the run failed.
            expect(r.commands[dag]?.code, `exit code of airflow dags test ${dag}`).toBe(run.state === "success" ? 0 : 1);
          }
        });
    }

    it(`${mode}: every task instance and DAG run of the audit has its events, every event its row, and the audit table is not published`, () => {
      const r = phases[mode];
      const { chains, problems } = auditChains(r.audit);
      expect(problems).toEqual([]);
      const fromAudit = chains.map((c) => `${c.dag_id} ${c.run_id} ${c.name}`).sort();
      const fromEvents = new Set<string>();
      for (const e of r.events) {
        if (e.type === "dag_run") fromEvents.add(`${e.dag_id} ${e.run_id} run`);
      }
      const tiEvents = r.events.filter((e): e is TaskInstanceEvent => e.type === "task_instance");
      const pairs = new Set(tiEvents.flatMap((e) => (e.dag_id !== null && e.run_id !== null ? [`${e.dag_id}\u0000${e.run_id}`] : [])));
      for (const pair of pairs) {
        const [dag, run] = pair.split("\u0000") as [string, string];
        for (const name of tiChains(tiEvents, dag, run).keys()) fromEvents.add(`${dag} ${run} ${name}`);
      }
      expect([...fromEvents].sort(), "task instances and runs with events vs those in the audit").toEqual(fromAudit);
      expect(unattributable(r.events), "events without a dag_id, task_id, run_id or map_index").toEqual([]);
      // Every DAG the mode ran has rows in the audit: the trigger was in place (CREATE DATABASE … TEMPLATE copied it).
      expect(new Set(chains.map((c) => c.dag_id)), "DAGs in the audit").toEqual(new Set(DAGS[mode]));
      expect(
        r.published.filter((t) => t.startsWith(`${AUDIT_SCHEMA}.`)),
        "audit tables in the daemon's publication",
      ).toEqual([]);
      expect(r.published.length, "tables in the daemon's publication").toBeGreaterThan(0);
    });

    it(`${mode}: every event is keyed by its dag_id, each DAG on one partition, positions increasing (re-deliveries only after a restart)`, () => {
      const r = phases[mode];
      const partitionsOfDag = new Map<string, Set<number>>();
      const lastOf = new Map<number, string>();
      let backwards = 0;
      r.consumed.forEach((m, i) => {
        const e = r.raw[i]!;
        // Nothing here truncates a table or loses a slot, and only those events lack a dag_id.
        if (e.type === "table_truncated" || e.type === "stream_gap" || e.type === "asset_event")
          throw new Error(`unexpected ${e.type} event at ${e.source.position}`);
        expect(m.key).toBe(e.dag_id);
        partitionsOfDag.set(e.dag_id!, (partitionsOfDag.get(e.dag_id!) ?? new Set()).add(m.partition));
        const last = lastOf.get(m.partition);
        if (last !== undefined && e.source.position <= last) backwards++;
        else lastOf.set(m.partition, e.source.position);
      });
      for (const [dag, parts] of partitionsOfDag) expect(parts.size, `partitions holding ${dag}`).toBe(1);
      // A position not greater than an earlier one is a re-delivery, which only a session restart causes.
      if (r.sessions === 1) expect(backwards, "re-delivered events without a daemon restart").toBe(0);
      expect(backwards).toBe(r.redelivered);
    });

    // ---- Notifications (XCom key `eventstream` → events of type "notification") -------------------
    // Written against the contract being built (src/airflow/events.ts NotificationEvent): adjust
    // field names here if the contract changes. Marked NOTIFICATION for the lead.
    it(`${mode}: es_notify: NOTIFICATION events for each XCom under the key eventstream, invalid ones with an error`, () => {
      const r = phases[mode];
      const run = r.runs.find((x) => x.dag_id === "es_notify")!;
      const runEvent = r.events.find((e): e is DagRunEvent => e.type === "dag_run" && e.dag_id === "es_notify")!;
      const tis = r.events.filter((e): e is TaskInstanceEvent => e.type === "task_instance" && e.dag_id === "es_notify");
      const notes = r.events.filter((e): e is NotificationEvent => e.type === "notification");
      // The stream: one notification per XCom Airflow holds under the key, whatever Airflow managed to run.
      const pushed = r.xcoms.filter((x) => x.dag_id === "es_notify").map((x) => tiName(x.task_id, x.map_index));
      expect(notes.map((n) => tiName(n.task_id, n.map_index)).sort(), "notifications vs the XCom rows under the key eventstream").toEqual(
        pushed.sort(),
      );
      // Airflow's behaviour: every notifying task ran and pushed (needs Airflow to finish, see the scripted check).
      expect(r.unfinished, `Airflow ${version} did not finish its runs (Airflow's behaviour, not the stream's)`).toBeNull();
      expect(pushed.sort(), "tasks of es_notify that pushed an XCom").toEqual([
        "notify",
        "notify_each[0]",
        "notify_each[1]",
        "notify_invalid",
        "notify_not_a_dict",
      ]);
      const md5 = { "a.csv": "e5ebd4c02cefbe7955977c67ada242b7", "b.csv": "14ce6257233db2c84e19d55bdd5b0a41" };
      for (const n of notes) {
        const name = tiName(n.task_id, n.map_index);
        const xcom = r.xcoms.find((x) => x.task_id === n.task_id && x.map_index === n.map_index)!;
        const ti = r.tis.find((x) => x.dag_id === "es_notify" && x.task_id === n.task_id && x.map_index === n.map_index)!;
        expect(n, name).toMatchObject({
          dag_id: "es_notify",
          run_id: run.run_id,
          try_number: ti.try_number,
          logical_date: runEvent.logical_date,
          time: xcom.timestamp,
          xcom_key: "eventstream",
        });
        // Pushed while the task ran: before the event that ends its try.
        const success = tis.find((e) => e.task_id === n.task_id && e.map_index === n.map_index && e.state === "success")!;
        expect(n.source.position < success.source.position, `${name} notification before its success event`).toBe(true);
        if (n.task_id === "notify" || n.task_id === "notify_each") {
          const id = n.task_id === "notify" ? "req-notify" : `req-each-${n.map_index}`;
          expect(n, name).toMatchObject({
            request_id: id,
            start: "2026-11-24T00:00:00+00:00",
            end: "2026-11-25T00:00:00+00:00",
            metadata: { source: "es_notify", run_id: run.run_id, rows: 3 },
            payload: { kind: "daily", ok: true, count: 3 },
            payload_uri: `s3://eventstream-e2e/es_notify/${id}/`,
            files: md5,
            error: null,
          });
        } else {
          expect(n.error, `${name} error`).not.toBeNull();
          expect(n, name).toMatchObject({
            request_id: null,
            start: null,
            end: null,
            metadata: null,
            payload: null,
            payload_uri: null,
            files: null,
          });
          // error.raw is "the value as pushed (JSON text ...)" per the contract.
          const raw = n.error!.raw;
          if (n.task_id === "notify_invalid") {
            expect(n.error!.message).toMatch(/files/);
            expect(JSON.parse(raw)).toEqual({ request_id: "req-invalid", files: { "a.csv": "not-an-md5" } });
          } else {
            expect(n.error!.message).toMatch(/object/);
            expect.soft(raw, `${name} error.raw must be JSON text`).toBe('"just a string"');
          }
        }
      }
    });
  }
});

interface DagComparison {
  /** Per task instance (`task`, `task[i]`) and `run`: the events, one token each (support/audit.ts `token`). */
  events: Record<string, string[]>;
  /** The same from the audit: the transitions Airflow committed. */
  transitions: Record<string, string[]>;
  /** What Airflow committed, in expected.ts's notation. */
  committed: Observed;
  /** What the events say, in that notation (observed.json). */
  observed: Observed;
  /** The events' invariants (support/sequences.ts) and previous_* against the audit. */
  problems: string[];
  auditProblems: string[];
  /** Events dropped as restart repeats (previous_state_known false, nothing changed). */
  dropped: number;
}

/**
 * One DAG run's events against the audit. Events are those a consumer keeps (re-deliveries skipped
 * by position); after a daemon session restart, an event with previous_state_known false that only
 * repeats its row's last state is dropped (docs/events.md: the daemon's memory starts empty, so the first
 * update of each row after a restart is published even when it was a heartbeat) and counted.
 */
function compareDag(r: PhaseResult, dag: string, runId: string): DagComparison {
  const restarted = r.sessions > 1;
  const { chains, problems: auditProblems } = auditChains(r.audit);
  const mine = chains.filter((c) => c.dag_id === dag && c.run_id === runId);
  const transitions: Record<string, string[]> = {};
  const committed: Observed = { run: "", tis: {} };
  for (const c of mine) {
    transitions[c.name] = c.transitions.map((t) => token(t, c.kind));
    if (c.kind === "dag_run") committed.run = renderAudit(c);
    else committed.tis[c.name] = renderAudit(c);
  }
  const problems: string[] = [];
  const events: Record<string, string[]> = {};
  const observed: Observed = { run: "", tis: {} };
  let dropped = 0;

  const runChain = dropRestartRepeats(
    r.events.filter((e): e is DagRunEvent => e.type === "dag_run" && e.dag_id === dag && e.run_id === runId),
    restarted,
  );
  dropped += runChain.dropped;
  if (runChain.chain.length > 0) {
    events.run = runChain.chain.map(eventToken);
    observed.run = renderRun(runChain.chain);
  }
  problems.push(
    ...runProblems(
      dag,
      runChain.chain,
      r.runs.find((x) => x.dag_id === dag && x.run_id === runId),
      restarted,
    ),
  );
  problems.push(...previousProblems(`${dag} run`, runChain.chain, mine.find((c) => c.kind === "dag_run")?.transitions ?? [], restarted));

  const tiEvents = r.events.filter((e): e is TaskInstanceEvent => e.type === "task_instance");
  for (const [name, raw] of tiChains(tiEvents, dag, runId)) {
    const { chain, dropped: d } = dropRestartRepeats(raw, restarted);
    dropped += d;
    events[name] = chain.map(eventToken);
    observed.tis[name] = renderTi(chain);
    const row = r.tis.find((x) => x.dag_id === dag && x.run_id === runId && tiName(x.task_id, x.map_index) === name);
    problems.push(...tiProblems(name, chain, row, restarted));
    problems.push(
      ...previousProblems(name, chain, mine.find((c) => c.kind === "task_instance" && c.name === name)?.transitions ?? [], restarted),
    );
  }
  // The audit's last version of each row is what the table holds: nothing it recorded is missing.
  for (const c of mine) {
    const last = c.versions[c.versions.length - 1]!;
    const img = last.op === "delete" ? null : last.new!;
    const inTable =
      c.kind === "dag_run"
        ? r.runs.find((x) => x.dag_id === dag && x.run_id === runId)
        : r.tis.find((x) => x.dag_id === dag && x.run_id === runId && tiName(x.task_id, x.map_index) === c.name);
    const held = inTable ? `${inTable.state}/${"try_number" in inTable ? inTable.try_number : inTable.clear_number}` : "no row";
    const audited = img ? `${img.state}/${c.kind === "dag_run" ? img.clear_number : img.try_number}` : "no row";
    if (held !== audited) auditProblems.push(`${dag} ${c.name}: the audit's last version is ${audited}, the table holds ${held}`);
  }
  return { events, transitions, committed, observed, problems, auditProblems, dropped };
}

/**
 * Why Airflow's committed sequences are not the script, in words that put the failure where it
 * belongs: Airflow's behaviour, not the stream's (the audit test of the same DAG judges the stream).
 */
function deviation(what: string, committed: Observed, expected: Observed): string {
  const lines: string[] = [];
  if (committed.run !== expected.run) lines.push(`run: committed \`${committed.run}\`, scripted \`${expected.run}\``);
  for (const name of new Set([...Object.keys(expected.tis), ...Object.keys(committed.tis)])) {
    const [got, want] = [committed.tis[name], expected.tis[name]];
    if (got === want) continue;
    lines.push(`${name}: committed \`${got ?? "(no such task instance)"}\`, scripted \`${want ?? "(none)"}\``);
    // Seen under load on 3.x: the scheduler gives up on a task its worker never started.
    const unstarted = [...(got ?? "").matchAll(/queued\/(\d+) (up_for_retry|failed)\/\1/g)];
    for (const m of unstarted)
      lines.push(
        `  ${name} went from queued/${m[1]} to ${m[2]}/${m[1]} without running: Airflow's worker did not start the task (on a loaded machine Airflow 3's task supervisor times out reaching the API server)`,
      );
  }
  return `${what}: Airflow took another path than the scripted one (Airflow's behaviour, not the stream's: the audit test judges the stream)\n${lines.join("\n")}`;
}

function observeAll(r: PhaseResult): Record<string, Observed & { committed: Observed; problems: string[]; dropped: number }> {
  const out: Record<string, Observed & { committed: Observed; problems: string[]; dropped: number }> = {};
  for (const dag of DAGS[r.mode] as readonly DagId[]) {
    const run = r.runs.find((x) => x.dag_id === dag);
    if (!run) continue;
    const c = compareDag(r, dag, run.run_id);
    out[dag] = { ...c.observed, committed: c.committed, problems: [...c.auditProblems, ...c.problems], dropped: c.dropped };
  }
  return out;
}

function ms(v: number): string {
  return `${(v / 1000).toFixed(1)} s`;
}
