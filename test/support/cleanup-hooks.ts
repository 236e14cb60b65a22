import { afterAll, afterEach, beforeEach } from "vitest";
import { runCleanups, setCurrentTest } from "./cleanup.js";

/**
 * Setup file of the projects that start daemons, clusters and databases (vitest.config.ts): vitest
 * runs afterEach and afterAll also when a test hits its timeout, while the test's own `finally`
 * may never run. Registered before any test file's hooks, so these run after them: a test file
 * that cleaned up after itself leaves nothing here.
 */
beforeEach((ctx) => {
  setCurrentTest(ctx.task.id);
});

afterEach(async (ctx) => {
  setCurrentTest(null);
  const cleaned = await runCleanups(ctx.task.id);
  if (cleaned.length > 0)
    console.warn(`test "${ctx.task.name}" (${ctx.task.result?.state ?? "unknown"}) left behind, now cleaned up: ${cleaned.join(", ")}`);
});

afterAll(async () => {
  const cleaned = await runCleanups(null);
  if (cleaned.length > 0) console.warn(`left behind after the file, now cleaned up: ${cleaned.join(", ")}`);
});
