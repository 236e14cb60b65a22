// The live page of `airflow-eventstream serve` (docs/serve-page.md): a plain ES module, no framework
// and no build step. It reads the service's REST API once per DAG, then follows GET /events (SSE) and
// applies each event to its own view; all DOM writes of a batch happen in one animation frame.

import { applyEvent, applyRunView, cellKey, createDagModel, emptyChanges, finishedRuns, visibleRuns } from "./model.js";
import { buildGrid, renderDagList, renderLegend, renderStuck, renderSummaries, updateCell, updateHead } from "./render.js";

const params = new URLSearchParams(location.search);
// 50 runs as Airflow's grid shows by default; ?runs=N for more or fewer.
const MAX_RUNS = Math.min(1000, Math.max(1, Number(params.get("runs") ?? 50) || 50));
// Stuck depends on time passing, not only on events: asked again on this interval and after events.
const STUCK_POLL_MS = Number(params.get("stuck_poll_ms") ?? 5000);
const DAGS_POLL_MS = 10_000;
const MAX_SUMMARIES = 10;

const $ = (id) => document.getElementById(id);
const ui = {
  search: $("dag-search"),
  form: $("search-form"),
  dagList: $("dag-list"),
  dagListEmpty: $("dag-list-empty"),
  title: $("grid-title"),
  grid: $("grid"),
  stuck: $("stuck-list"),
  summaries: $("summaries"),
  connection: $("connection"),
};

const page = {
  dags: [],
  /** The first GET /dags has answered: until then an empty list means "not known yet", not "none". */
  dagsListed: false,
  /** Enter was pressed before the list came: open the first match once it does. */
  openWhenListed: false,
  shownDags: [],
  model: null,
  stream: null,
  pending: [],
  changes: emptyChanges(),
  frame: 0,
  index: { cells: new Map(), heads: new Map() },
  stuck: { tasks: new Map(), runs: new Map(), items: [] },
  selectedRun: null,
};

async function getJson(path, { missing } = {}) {
  const res = await fetch(path, { headers: { accept: "application/json" } });
  // A DAG the service has not seen a run of yet is a 404: for the page, no runs so far.
  if (res.status === 404 && missing !== undefined) return missing;
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// The list endpoints answer a JSON array; an object wrapping it under one key is read too.
function list(body, key) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body[key])) return body[key];
  return [];
}

function setConnection(state, text) {
  ui.connection.dataset.state = state;
  ui.connection.textContent = text;
}

async function refreshDags() {
  try {
    page.dags = list(await getJson("/dags"), "dags").sort((a, b) => a.dag_id.localeCompare(b.dag_id));
    page.dagsListed = true;
  } catch (e) {
    setConnection("error", `cannot list DAGs: ${e.message}`);
  }
  renderDags();
  if (page.dagsListed && page.openWhenListed) {
    page.openWhenListed = false;
    openFirstMatch();
  }
}

/** Enter in the search: the first DAG that matches; one typed before the list came opens when it does. */
function openFirstMatch() {
  if (!page.dagsListed) {
    page.openWhenListed = true;
    return;
  }
  const first = page.shownDags[0];
  if (first) selectDag(first.dag_id);
}

function renderDags() {
  page.shownDags = renderDagList(ui.dagList, page.dags, ui.search.value, page.model?.dagId ?? null, (d) => selectDag(d));
  ui.dagListEmpty.hidden = page.shownDags.length > 0;
}

function selectDag(dagId) {
  if (location.hash !== `#dag=${encodeURIComponent(dagId)}`) location.hash = `dag=${encodeURIComponent(dagId)}`;
  else void openDag(dagId);
}

async function openDag(dagId) {
  page.stream?.close();
  page.model = createDagModel(dagId);
  page.pending = [];
  page.changes = emptyChanges();
  page.selectedRun = null;
  page.stuck = { tasks: new Map(), runs: new Map(), items: [] };
  ui.title.textContent = `${dagId}: runs × tasks`;
  renderDags();
  // The stream first, the runs second: events that arrive meanwhile wait in `pending`, and those the
  // runs' answer already holds are skipped by position (model.js), so nothing falls between the two.
  openStream(dagId);
  const model = page.model;
  try {
    const runs = list(await getJson(`/dags/${encodeURIComponent(dagId)}/runs?limit=${MAX_RUNS}`, { missing: [] }), "runs");
    if (page.model !== model) return;
    for (const r of runs) applyRunView(model, r, page.changes);
  } catch (e) {
    setConnection("error", `cannot read runs of ${dagId}: ${e.message}`);
  }
  page.changes.structural = true;
  schedule();
  void refreshStuck();
}

function openStream(dagId) {
  const stream = new EventSource(`/events?dag=${encodeURIComponent(dagId)}`);
  page.stream = stream;
  setConnection("connecting", "connecting…");
  const onEvent = (msg) => {
    if (page.stream !== stream) return;
    try {
      page.pending.push(JSON.parse(msg.data));
    } catch {
      return;
    }
    schedule();
  };
  // The service names each SSE event by the event's type (src/serve/sse.ts).
  for (const name of ["task_instance", "dag_run", "table_truncated", "stream_gap"]) stream.addEventListener(name, onEvent);
  // Resumed from before what the service still holds: events were missed, so the runs are read again.
  stream.addEventListener("reset", () => {
    if (page.stream === stream) void openDag(dagId);
  });
  stream.onopen = () => setConnection("live", "live");
  // EventSource reconnects by itself and sends Last-Event-ID (the last position): the service resumes there.
  stream.onerror = () => setConnection("reconnecting", "reconnecting…");
}

function schedule() {
  if (page.frame === 0) page.frame = requestAnimationFrame(flush);
}

/** Applies everything that arrived since the last frame, then writes the DOM once. */
function flush() {
  page.frame = 0;
  const model = page.model;
  if (!model) return;
  const started = performance.now();
  const changes = page.changes;
  page.changes = emptyChanges();
  const events = page.pending.splice(0);
  for (const ev of events) applyEvent(model, ev, changes);
  if (changes.reload) {
    void openDag(model.dagId);
    return;
  }
  for (const runId of changes.finished) void fetchRun(model, runId, 0);
  render(changes);
  // A measure per frame, so a test (and anyone in the browser's performance panel) sees what a batch costs.
  performance.measure("eventstream:frame", { start: started, detail: { events: events.length, rebuilt: changes.structural } });
  if (changes.cells.size > 0 || changes.runs.size > 0) throttledRefresh();
}

function render(changes) {
  const model = page.model;
  const runs = visibleRuns(model, MAX_RUNS);
  if (changes.structural) {
    page.index = buildGrid(ui.grid, runs, page.stuck, page.selectedRun);
  } else {
    for (const key of changes.cells) {
      const td = page.index.cells.get(key);
      if (!td) continue;
      const run = model.runs.get(td.dataset.runId);
      if (run) updateCell(td, run, td.dataset.taskId, page.stuck);
    }
    for (const runId of changes.runs) {
      const head = page.index.heads.get(runId);
      const run = model.runs.get(runId);
      if (head && run) updateHead(head, run, page.stuck);
    }
  }
  renderSummaries(ui.summaries, finishedRuns(model, MAX_SUMMARIES));
}

/**
 * A run that just finished: its summary is the service's. The service may answer before it has
 * applied the event that finished the run, so an answer older than the run's position is asked again.
 */
async function fetchRun(model, runId, attempt) {
  const want = model.runs.get(runId)?.position ?? "";
  try {
    const view = await getJson(`/dags/${encodeURIComponent(model.dagId)}/runs/${encodeURIComponent(runId)}`);
    if (page.model !== model) return;
    if (view.position >= want || attempt >= 20) {
      applyRunView(model, view, page.changes);
      schedule();
      return;
    }
  } catch {
    if (attempt >= 20) return;
  }
  setTimeout(() => void fetchRun(model, runId, attempt + 1), 250);
}

async function refreshStuck() {
  const model = page.model;
  if (!model) return;
  let items;
  try {
    items = list(await getJson(`/stuck?dag=${encodeURIComponent(model.dagId)}`), "stuck").filter((i) => i.dag_id === model.dagId);
  } catch {
    return;
  }
  if (page.model !== model) return;
  const tasks = new Map();
  const runs = new Map();
  for (const i of items) {
    if (i.kind === "task") tasks.set(cellKey(i.run_id, i.task_id), i.reason);
    else runs.set(i.run_id, i.reason);
  }
  const before = page.stuck;
  page.stuck = { tasks, runs, items };
  for (const k of new Set([...before.tasks.keys(), ...tasks.keys()])) page.changes.cells.add(k);
  for (const r of new Set([...before.runs.keys(), ...runs.keys()])) page.changes.runs.add(r);
  renderStuck(ui.stuck, items);
  schedule();
}

let refreshTimer = 0;
/** After events: /stuck and the DAG list's counts again, at most once a second however many events come. */
function throttledRefresh() {
  if (refreshTimer !== 0) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = 0;
    void refreshStuck();
    void refreshDags();
  }, 1000);
}

function dagFromHash() {
  const m = /^#dag=(.*)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function start() {
  renderLegend($("legend"));
  renderSummaries(ui.summaries, []);
  renderStuck(ui.stuck, []);
  ui.search.addEventListener("input", renderDags);
  // Enter opens the first DAG that matches: search, Enter, and the grid is there without the mouse.
  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    openFirstMatch();
  });
  // "/" jumps to the search, as in Airflow and most web UIs.
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement !== ui.search) {
      e.preventDefault();
      ui.search.focus();
    }
  });
  ui.grid.addEventListener("click", (e) => {
    const b = e.target.closest("button.run");
    if (!b) return;
    page.selectedRun = page.selectedRun === b.dataset.runId ? null : b.dataset.runId;
    for (const h of page.index.heads.values()) h.setAttribute("aria-pressed", String(h.dataset.runId === page.selectedRun));
    document.querySelector(`.run-summary[data-run-id="${CSS.escape(b.dataset.runId)}"]`)?.scrollIntoView({ block: "nearest" });
  });
  window.addEventListener("hashchange", () => {
    const d = dagFromHash();
    if (d) void openDag(d);
  });
  void refreshDags();
  setInterval(() => void refreshDags(), DAGS_POLL_MS);
  setInterval(() => void refreshStuck(), STUCK_POLL_MS);
  const d = dagFromHash();
  if (d) void openDag(d);
}

start();
