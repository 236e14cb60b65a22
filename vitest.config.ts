import { defineConfig } from "vitest/config";

// Two tiers, both run by `npm test` (and so by CI):
// - unit: pure logic, fakes and captured bytes only;
// - integration: real PostgreSQL and real Kafka (see test/support/services.ts for how they are found).
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
        },
      },
    ],
  },
});
