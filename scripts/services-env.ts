import { execFileSync } from "node:child_process";
import path from "node:path";

/**
 * The variables `scripts/services.sh env` exports, as a shell that evals its output sees them. Bash
 * itself undoes the output's printf %q quoting, so no reader of it has to reimplement that, and a
 * value holding a space, a quote or a `;` comes back exactly.
 */
export function servicesEnv(root: string, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const script = [
    'out=$(bash "$1" env) || exit',
    'eval "$out"',
    // Only what the output exports, each NAME=value NUL-terminated (a value may hold a newline).
    `for n in $(sed -n 's/^export \\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p' <<<"$out"); do printf '%s=%s\\0' "$n" "\${!n}"; done`,
  ].join("\n");
  const out = execFileSync("bash", ["-c", script, "services-env", path.join(root, "scripts/services.sh")], {
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  const vars: Record<string, string> = {};
  for (const entry of out.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) vars[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return vars;
}
