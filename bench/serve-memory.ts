/**
 * The serve view's memory: heap used after GC with RUNS active runs x TASKS task instances each, every
 * task instance having gone insert (None) -> scheduled -> queued -> running, as a busy Airflow holds
 * them (three history entries each). Run: `npm run build && node --expose-gc bench/serve-memory.ts`
 * (SERVE_MEM_RUNS, SERVE_MEM_TASKS to change the shape). docs/serve.md has the figure.
 *
 * Events are built in the loop and dropped after apply, as the Kafka reader does: what stays is
 * what the view keeps.
 */
import type * as StoreModule from "../src/serve/view/store.js";

// The built module (src's imports name .js files that only dist/ has); typed from the source, so
// `npm run typecheck` does not need a build first.
const storeModule = "../dist/serve/view/store.js";
const { RunStore } = (await import(storeModule)) as typeof StoreModule;

const RUNS = Number(process.env.SERVE_MEM_RUNS ?? 10_000);
const TASKS = Number(process.env.SERVE_MEM_TASKS ?? 50);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with node --expose-gc");

function heapMb(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed / 1024 / 1024;
}

let lsn = 0x100000;
const base = Date.parse("2026-12-01T00:00:00Z");
function next() {
  lsn++;
  const position = `${lsn.toString(16).toUpperCase().padStart(16, "0")}-00000000`;
  const commitTime = new Date(base + lsn).toISOString().replace("Z", "123Z");
  return {
    ctx: { position, commitTime, partition: 0, offset: String(lsn), bootstrap: false },
    source: { commit_lsn: `0/${lsn.toString(16)}`, xid: lsn, index: 0, position, commit_time: commitTime },
  };
}

const before = heapMb();
const store = new RunStore({ maxRuns: RUNS + 1, recentRuns: 2_000 });
const started = performance.now();
let events = 0;
for (let r = 0; r < RUNS; r++) {
  const dagId = `dag_${r % 200}`;
  const runId = `scheduled__2026-12-01T00:${String(r).padStart(6, "0")}+00:00`;
  const { ctx, source } = next();
  const runFields = {
    dag_id: dagId,
    run_id: runId,
    dag_run_id: r,
    run_type: "scheduled",
    logical_date: ctx.commitTime,
    data_interval_start: null,
    data_interval_end: null,
  };
  store.apply(
    {
      type: "dag_run",
      op: "insert",
      ...runFields,
      state: "running",
      previous_state: null,
      previous_state_known: true,
      start_date: ctx.commitTime,
      end_date: null,
      clear_number: 0,
      source,
    },
    ctx,
  );
  events++;
  for (let t = 0; t < TASKS; t++) {
    for (const [state, prev] of [
      [null, null],
      ["scheduled", null],
      ["queued", "scheduled"],
      ["running", "queued"],
    ] as const) {
      const e = next();
      store.apply(
        {
          type: "task_instance",
          op: state === null ? "insert" : "update",
          dag_id: JSON.parse(JSON.stringify(dagId)) as string,
          task_id: `task_${String(t).padStart(3, "0")}`,
          run_id: runId,
          map_index: -1,
          try_number: 1,
          max_tries: 2,
          state,
          previous_state: prev,
          previous_state_known: true,
          previous_try_number: 1,
          ti_id: "0193a5b2-7c1e-7d4f-9a4b-3c2d1e0f9a8b",
          start_date: state === "running" ? e.ctx.commitTime : null,
          end_date: null,
          duration: null,
          hostname: "worker-1",
          operator: "PythonOperator",
          queue: "default",
          pool: "default_pool",
          logical_date: ctx.commitTime,
          run_type: "scheduled",
          data_interval_start: null,
          data_interval_end: null,
          clear_number: 0,
          source: e.source,
        },
        e.ctx,
      );
      events++;
    }
  }
}
const ms = performance.now() - started;
const after = heapMb();
const held = store.size();
const used = after - before;
process.stdout.write(
  `${held.active} active runs x ${TASKS} task instances (${events} events applied in ${Math.round(ms)} ms, ${Math.round(events / (ms / 1000))} events/s): ` +
    `heap used after GC ${used.toFixed(0)} MB (${((used * 1024 * 1024) / (RUNS * TASKS)).toFixed(0)} bytes per task instance)\n`,
);

// What /stuck costs at this size: a walk of every task instance held (none past its threshold a
// minute in), the worst case (every one past it), and one DAG's question.
const time = (f: () => number): string => {
  const t0 = performance.now();
  const n = f();
  return `${Math.round(performance.now() - t0)} ms (${n} items)`;
};
const justAfter = base + lsn + 60_000;
process.stdout.write(
  `/stuck walk: none stuck ${time(() => store.stuck(justAfter).length)}; all stuck ${time(() => store.stuck(Date.now()).length)}; ` +
    `one DAG ${time(() => store.stuck(Date.now(), "dag_7").length)}\n`,
);
