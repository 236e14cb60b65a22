import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { servicesEnv } from "../../scripts/services-env.js";

/**
 * scripts/services.sh as its users run it: `env`'s output through bash's eval (.ci/run, the demo,
 * README) and through servicesEnv (tests, benchmarks); `tls_ensure` for the file modes of keys.
 */
const repo = process.cwd();
const script = join(repo, "scripts/services.sh");
const scratch = mkdtempSync(join(tmpdir(), "services-script-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("services.sh env", () => {
  it("a services directory with a space and a `;` in its path comes back as itself through eval, and nothing in it runs", () => {
    const cwd = join(scratch, "cwd");
    mkdirSync(cwd);
    // Unquoted, eval would split this at the space and run `touch pwned` in cwd.
    const dir = join(scratch, "a b;touch pwned;c");
    const env = { ...process.env, EVENTSTREAM_SERVICES_DIR: dir };
    const evald = execFileSync("bash", ["-c", 'eval "$(bash "$1" env)" && printf %s "$EVENTSTREAM_TEST_CA_FILE"', "eval-test", script], {
      cwd,
      env,
      encoding: "utf8",
    });
    expect(evald).toBe(join(dir, "tls/ca.pem"));
    expect(existsSync(join(cwd, "pwned"))).toBe(false);
    const vars = servicesEnv(repo, env);
    expect(vars.EVENTSTREAM_TEST_CA_FILE).toBe(join(dir, "tls/ca.pem"));
    expect(vars.KAFKA_BROKERS).toMatch(/^127\.0\.0\.1:\d+$/);
  });
});

describe("services.sh tls_ensure", () => {
  it("creates every file holding a private key readable by its owner only, from the start (never chmod-ed from a wider mode)", () => {
    const dir = join(scratch, "svc");
    const log = join(scratch, "chmod.log");
    // A chmod that records the mode a file had before it, then does the chmod: a key file seen
    // with group or other bits there was readable by others for a while.
    const body = [
      // A common umask: a file made without its own umask is readable by everyone.
      "umask 022",
      'chmod_log=$2; source "$1"',
      `chmod() { local f=\${*: -1}; [[ -f $f ]] && printf '%s %s\\n' "$(stat -c %a "$f")" "$f" >>"$chmod_log"; command chmod "$@"; }`,
      "tls_ensure",
    ].join("\n");
    execFileSync("bash", ["-c", body, "tls-test", script, log], {
      env: { ...process.env, EVENTSTREAM_SERVICES_DIR: dir },
      stdio: ["ignore", "ignore", "pipe"],
    });
    const tls = join(dir, "tls");
    for (const f of ["ca.key", "kafka.key", "pg.key", "kafka-keystore.pem"]) {
      expect(readFileSync(join(tls, f), "utf8")).toContain("PRIVATE KEY");
      expect({ f, mode: (statSync(join(tls, f)).mode & 0o777).toString(8) }).toEqual({ f, mode: "600" });
    }
    const widerBeforeChmod = (existsSync(log) ? readFileSync(log, "utf8") : "")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.split(" "))
      .filter(([mode, f]) => mode !== "600" && readFileSync(f!, "utf8").includes("PRIVATE KEY"));
    expect(widerBeforeChmod).toEqual([]);
  });
});
