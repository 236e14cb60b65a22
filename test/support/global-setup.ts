import { execFileSync } from "node:child_process";
import type { TestProject } from "vitest/node";
import { resolveServices, checkServices, type Services } from "./services.js";

declare module "vitest" {
  export interface ProvidedContext {
    services: Services;
  }
}

/**
 * Finds the real PostgreSQL and Kafka the integration tests run against (see services.ts), checks
 * that they answer, and builds dist/ for the tests that run the daemon as a child process. Fails,
 * never skips, when a service is missing: the message says how to start them.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  quietNegativeTimeouts();
  const { services, stop } = await resolveServices();
  await checkServices(services);
  execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
  project.provide("services", services);
  return stop;
}

/**
 * The service check runs kafkajs in vitest's own process, where the workers' execArgv
 * (vitest.config.ts) does not apply: its never-throttled request queue sets a negative timeout
 * (see bin/airflow-eventstream), and Node's warning about it is noise. Every other warning is
 * printed as before, by Node's own listener.
 */
function quietNegativeTimeouts(): void {
  const printers = process.listeners("warning");
  if (printers.length === 0) return;
  process.removeAllListeners("warning");
  for (const print of printers) process.on("warning", (w) => w.name !== "TimeoutNegativeWarning" && print(w));
}
