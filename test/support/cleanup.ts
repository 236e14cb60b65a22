/**
 * What the tests leave running or existing, and how to get rid of it, for when a test's own
 * `finally` never runs: a test that hits its vitest timeout is abandoned mid-await, its `finally`
 * blocks wait for ever, and its daemons, scratch clusters and databases outlived the run.
 * test/support/cleanup-hooks.ts (a vitest setup file) runs what is left in afterEach and afterAll,
 * which vitest runs on a timeout too.
 *
 * Something registered while a test runs belongs to that test and is cleaned after it, except
 * databases: tests of a file share them (one test creates, the next reads), so they go after the
 * file. Something registered outside a test (beforeAll, describe) is cleaned after the file.
 * Whoever finishes with a resource normally calls the returned `done()`, and nothing more happens.
 */

export type ResourceKind = "process" | "daemon" | "scratch-postgres" | "database";

interface Entry {
  kind: ResourceKind;
  what: string;
  /** The test it belongs to; null: the file. */
  test: string | null;
  clean: () => Promise<void> | void;
  /** Last resort when the worker exits before the hooks ran; must be synchronous. */
  onExit?: () => void;
}

interface State {
  entries: Entry[];
  currentTest: string | null;
}

/**
 * On globalThis, not in the module: a worker may load this module afresh for each test file, and
 * one exit hook must see them all.
 */
const KEY = Symbol.for("airflow-eventstream.test-cleanup");
const holder = globalThis as { [KEY]?: State };
const state: State = holder[KEY] ?? newState();
holder[KEY] = state;

function newState(): State {
  const s: State = { entries: [], currentTest: null };
  // The worker exiting with entries left (killed, or an afterAll that itself timed out): at least no process survives it.
  process.once("exit", () => {
    for (const e of s.entries) e.onExit?.();
  });
  return s;
}

/** Called by the setup file around each test (its id; null between tests). */
export function setCurrentTest(id: string | null): void {
  state.currentTest = id;
}

/** Registers a resource; call the result once it is cleaned up normally. */
export function registerCleanup(kind: ResourceKind, what: string, clean: () => Promise<void> | void, onExit?: () => void): () => void {
  const entry: Entry = { kind, what, test: kind === "database" ? null : state.currentTest, clean, ...(onExit ? { onExit } : {}) };
  state.entries.push(entry);
  return () => {
    const i = state.entries.indexOf(entry);
    if (i >= 0) state.entries.splice(i, 1);
  };
}

/**
 * Cleans, newest first (a daemon before the database it reads), what belongs to the test with id
 * `test`, or everything left (`null`, after the file). Returns what was cleaned; every cleanup runs
 * even if one fails, and the failures are thrown together at the end.
 */
export async function runCleanups(test: string | null): Promise<string[]> {
  const mine = state.entries.filter((e) => test === null || e.test === test).reverse();
  const cleaned: string[] = [];
  const errors: Error[] = [];
  for (const e of mine) {
    const i = state.entries.indexOf(e);
    if (i < 0) continue; // already cleaned by another cleanup
    state.entries.splice(i, 1);
    try {
      await e.clean();
      cleaned.push(`${e.kind} ${e.what}`);
    } catch (err: unknown) {
      errors.push(new Error(`cleaning up ${e.kind} ${e.what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
    }
  }
  if (errors.length > 0)
    throw new AggregateError(
      errors,
      `${errors.length} test resource(s) could not be cleaned up: ${errors.map((e) => e.message).join("; ")}`,
    );
  return cleaned;
}
