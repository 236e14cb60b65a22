import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { services } from "../support/harness.js";

/**
 * `npm run demo` as a newcomer runs it: any number of times in a row on the same services, and a
 * failure anywhere is a non-zero exit (scripts/demo.ts; scripts/demo.sh only builds and execs it).
 */
function demo(extra: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const s = services();
  const env = {
    PATH: process.env.PATH ?? "",
    PGHOST: s.pg.host,
    PGPORT: String(s.pg.port),
    PGUSER: s.pg.user,
    PGPASSWORD: s.pg.password,
    KAFKA_BROKERS: s.kafkaBrokers.join(","),
    ...extra,
  };
  const proc = spawn(process.execPath, ["scripts/demo.ts"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  proc.stdout.on("data", (c: Buffer) => (output += c.toString()));
  proc.stderr.on("data", (c: Buffer) => (output += c.toString()));
  return new Promise((resolve) => proc.on("exit", (code) => resolve({ code, output })));
}

/**
 * README's Quick start block that runs the daemon on the demo's database, run by bash as written (with
 * the services `services.sh env` describes from this environment), stopped with SIGINT (Ctrl-C) once
 * it streams.
 */
async function readmeDaemonOnDemo(): Promise<{ code: number | null; output: string }> {
  const readme = readFileSync("README.md", "utf8");
  const block = /The daemon on the demo's database[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1];
  if (!block) throw new Error("README.md has no block running the daemon on the demo's database");
  const proc = spawn("bash", ["-c", block], { env: process.env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  let signalled = false;
  const onData = (c: Buffer) => {
    output += c.toString();
    if (!signalled && output.includes('"msg":"streaming"')) {
      signalled = true;
      // The whole group, as a terminal's Ctrl-C: bash, npm, the launcher's Node.
      process.kill(-proc.pid!, "SIGINT");
    }
  };
  proc.stdout.on("data", onData);
  proc.stderr.on("data", onData);
  const deadline = setTimeout(() => process.kill(-proc.pid!, "SIGKILL"), 120_000);
  const code = await new Promise<number | null>((resolve) => proc.on("exit", (c) => resolve(c)));
  clearTimeout(deadline);
  return { code, output };
}

const SUMMARY =
  /== (\d+) events read from Kafka topic "airflow\.demo\.events" for (\d+) transitions written; (\d+) heartbeat updates written produced (\d+) events/;

describe("npm run demo", () => {
  it("runs twice in a row, each time every transition one event and no heartbeat an event", { timeout: 600_000 }, async () => {
    for (const run of [1, 2]) {
      const r = await demo();
      expect({ run, gap: r.output.includes("GAP IN THE EVENT STREAM"), code: r.code }, r.output).toEqual({ run, gap: false, code: 0 });
      const m = SUMMARY.exec(r.output);
      expect(m, r.output).not.toBeNull();
      const [events, transitions, heartbeats, fromHeartbeats] = m!.slice(1).map(Number);
      expect(events).toBe(transitions);
      expect(transitions).toBeGreaterThan(0);
      expect(heartbeats).toBeGreaterThan(0);
      expect(fromHeartbeats).toBe(0);
      // A healthy run prints no Node warning and no daemon warning (the daemon's lines are "daemon | <msg>").
      expect(r.output).not.toMatch(/TimeoutNegativeWarning|\(node:\d+\)/);
      expect(r.output).not.toContain("session ended");
    }
    // Then README's command for the daemon on the demo's database, as written, resumes its slot.
    const r = await readmeDaemonOnDemo();
    expect(r.output).toContain('"msg":"no gap between the checkpoint and the slot"');
    expect(r.output).not.toContain("SchemaError");
    expect(r.output).toContain('"msg":"stopped"');
  });

  it("exits non-zero when the daemon stops by itself", { timeout: 300_000 }, async () => {
    // The demo deletes its topic before each run; a daemon not allowed to create it stops at start.
    const r = await demo({ EVENTSTREAM_CREATE_TOPICS: "false" });
    expect(r.output).toMatch(/the daemon exited with code 2 before the demo was over/);
    expect(r.code).toBe(1);
  });
});
