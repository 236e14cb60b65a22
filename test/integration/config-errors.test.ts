import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { daemonEnv } from "../support/harness.js";

/**
 * Settings as an operator gets them wrong, through the real launcher: a misspelt name in the
 * environment, a bad value in .env. The database named does not exist, so a daemon that ignored the
 * mistake would still exit at once (saying something else) instead of streaming.
 */
const launcher = join(process.cwd(), "bin/airflow-eventstream");
const scratch = mkdtempSync(join(tmpdir(), "config-errors-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(env: Record<string, string>, cwd = process.cwd()): { status: number | null; output: string } {
  const r = spawnSync(launcher, ["run"], { cwd, env: { PATH: process.env.PATH ?? "", ...env }, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe("configuration mistakes stop the daemon with exit code 2", () => {
  it("a misspelt setting: named with its value and the setting meant", () => {
    const r = run(daemonEnv("no_such_database_cfg", { EVENTSTREAM_TOPIC_PARTITION: "3" }));
    expect(r.output).toContain(
      'EVENTSTREAM_TOPIC_PARTITION="3" (from the environment): not a setting of airflow-eventstream; did you mean EVENTSTREAM_TOPIC_PARTITIONS?',
    );
    expect(r.status).toBe(2);
  });

  it("a bad value from .env: said to come from .env, with the value", () => {
    const cwd = join(scratch, "with-dotenv");
    rmSync(cwd, { recursive: true, force: true });
    mkdirSync(cwd);
    writeFileSync(join(cwd, ".env"), "EVENTSTREAM_TOPIC_PARTITIONS=six\n");
    const r = run(daemonEnv("no_such_database_cfg"), cwd);
    // daemonEnv sets EVENTSTREAM_TOPIC_PARTITIONS itself, and the environment wins over .env.
    expect(r.output).not.toContain('"six"');
    const env = daemonEnv("no_such_database_cfg");
    delete env.EVENTSTREAM_TOPIC_PARTITIONS;
    const fromFile = run(env, cwd);
    expect(fromFile.output).toContain('EVENTSTREAM_TOPIC_PARTITIONS="six" (from .env): expected a whole number');
    expect(fromFile.status).toBe(2);
  });

  it("a development shell's tooling names (services.sh ports, test endpoints) do not stop it", () => {
    const r = run(
      daemonEnv("no_such_database_cfg", {
        EVENTSTREAM_PG_PORT: "25432",
        EVENTSTREAM_KAFKA_PORT: "29092",
        EVENTSTREAM_SERVICES_DIR: "/tmp/x",
        EVENTSTREAM_TEST_CA_FILE: "/tmp/ca.pem",
        EVENTSTREAM_SCRATCH_PG_PORTS: "26140-26159",
      }),
    );
    // It gets past configuration to the database, which does not exist.
    expect(r.output).not.toContain("invalid configuration");
    expect(r.output).toContain('database \\"no_such_database_cfg\\" does not exist');
    expect(r.status).toBe(2);
  });
});
