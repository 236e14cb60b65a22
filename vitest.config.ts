import { configDefaults, defineConfig } from "vitest/config";
import { selectedAirflowMajors } from "./test/airflow/support/selection.js";

// Tiers: unit and integration (and the real-Airflow suite) run by `npm test`; fault injection by
// `npm run test:faults` (CI runs its short profile too):
// - unit: pure logic, fakes and captured bytes only;
// - integration: real PostgreSQL and real Kafka (see test/support/services.ts for how they are found).
// Not a tier: `evidence` (docs/why-not-pg-logical-replication) is about a library the product does not use.
//
// Every project that starts daemons, clusters or databases has test/support/cleanup-hooks.ts as a
// setup file: its afterEach/afterAll also run when a test hits its timeout, and clean up what the
// test registered (test/support/cleanup.ts) but could not clean itself.
const CLEANUP = ["test/support/cleanup-hooks.ts"];
// The test workers use kafkajs too, whose request queue sets a negative timeout while never
// throttled (see bin/airflow-eventstream): Node's warning about it is noise in the test output.
const EXEC_ARGV = ["--disable-warning=TimeoutNegativeWarning"];

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // Each file owns its database, slot, publication and topics, but the machine has two cores
          // shared with PostgreSQL and Kafka: run files one at a time so timings stay sane.
          fileParallelism: false,
          globalSetup: ["test/support/global-setup.ts"],
          setupFiles: CLEANUP,
          execArgv: EXEC_ARGV,
        },
      },
      {
        test: {
          // Real Airflow 2.x and 3.x (test/airflow, DAGs in test/dags), venvs cached outside the clone
          // (scripts/airflow-venv.sh): ~2 min with cached venvs. `npm run test:airflow` runs it alone;
          // a plain `vitest run` (npm test) includes it too.
          name: "airflow",
          include: ["test/airflow/**/*.test.ts"],
          // EVENTSTREAM_TEST_AIRFLOW selects majors (test/airflow/support/selection.ts); serve.test.ts and
          // asset-events.test.ts are Airflow 3 only.
          exclude: selectedAirflowMajors(process.env.EVENTSTREAM_TEST_AIRFLOW).includes("3")
            ? configDefaults.exclude
            : [...configDefaults.exclude, "test/airflow/serve.test.ts", "test/airflow/asset-events.test.ts"],
          // The first run on a machine installs a venv per version (~1 min each).
          testTimeout: 600_000,
          hookTimeout: 1_800_000,
          fileParallelism: false,
          globalSetup: ["test/support/global-setup.ts"],
          setupFiles: CLEANUP,
          execArgv: EXEC_ARGV,
        },
      },
      {
        test: {
          // Fault injection under load (test/faults): not in `npm test`; `npm run test:faults`,
          // FAULTS_PROFILE=short (CI, ~3 min) or soak (long).
          name: "faults",
          include: ["test/faults/**/*.test.ts"],
          testTimeout: 3_600_000,
          hookTimeout: 600_000,
          fileParallelism: false,
          globalSetup: ["test/support/global-setup.ts"],
          setupFiles: CLEANUP,
          execArgv: EXEC_ARGV,
        },
      },
      {
        test: {
          // The schema registry (EVENTSTREAM_SCHEMA_REGISTRY_URL) with a real registry beside PostgreSQL
          // and Kafka: `bash scripts/registry.sh up` (a first install plus start takes over 2 min),
          // then `npm run test:registry`; not in `npm test`; CI starts the registry and runs it.
          name: "registry",
          include: ["test/registry/**/*.test.ts"],
          testTimeout: 240_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          globalSetup: ["test/support/global-setup.ts"],
          setupFiles: CLEANUP,
          execArgv: EXEC_ARGV,
        },
      },
      {
        test: {
          // Evidence about pg-logical-replication, not a product test: `npm run why:pg-logical-replication`.
          name: "evidence",
          include: ["docs/why-not-pg-logical-replication/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          globalSetup: ["test/support/global-setup.ts"],
          setupFiles: CLEANUP,
          execArgv: EXEC_ARGV,
        },
      },
    ],
  },
});
