import { spawn } from "node:child_process";

/** What a command printed and how it exited. */
export interface CliRun {
  code: number | null;
  out: string;
  err: string;
}

/**
 * The launcher as operators run it (bin/airflow-eventstream, Node from the test's own process),
 * with only `env` and PATH in its environment; stdout and stderr whole (JSON lines span pipe
 * chunks). Killed after `timeoutMs`, which shows as code null.
 */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 45_000): Promise<CliRun> {
  return new Promise((resolve) => {
    const p = spawn("bin/airflow-eventstream", args, { env: { PATH: process.env.PATH ?? "", NODE: process.execPath, ...env } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on("data", (b: Buffer) => out.push(b));
    p.stderr.on("data", (b: Buffer) => err.push(b));
    const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code, out: Buffer.concat(out).toString("utf8"), err: Buffer.concat(err).toString("utf8") });
    });
  });
}
