import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

/**
 * bin/airflow-eventstream picks the Node that runs the daemon. `npm start` and `npx` export NODE as
 * the Node running npm (on this kind of machine the system's Node 20), and PATH may find that one
 * first too. Each case installs the real launcher and package.json in a scratch package whose
 * dist/cli.js only reports the Node running it, and an old Node that says what it would have run.
 */
const repo = process.cwd();
const scratch = mkdtempSync(join(tmpdir(), "launcher-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const oldNodeDir = join(scratch, "old-node-bin");
mkdirSync(oldNodeDir);
const oldNode = join(oldNodeDir, "node");
writeFileSync(oldNode, '#!/bin/sh\nif [ "$1" = -p ]; then echo 20.11.1; else echo "RAN ON THE OLD NODE: $*"; fi\n');
chmodSync(oldNode, 0o755);
/** Old Node first on PATH, then the system's directories (where /usr/bin/node is Node 20 here). */
const env = { PATH: `${oldNodeDir}:/usr/bin:/bin`, NODE: oldNode, HOME: scratch };

function makePackage(dir: string, shippedNode: boolean): string {
  mkdirSync(join(dir, "bin"), { recursive: true });
  mkdirSync(join(dir, "dist"), { recursive: true });
  copyFileSync(join(repo, "bin/airflow-eventstream"), join(dir, "bin/airflow-eventstream"));
  chmodSync(join(dir, "bin/airflow-eventstream"), 0o755);
  copyFileSync(join(repo, "package.json"), join(dir, "package.json"));
  writeFileSync(
    join(dir, "dist/cli.js"),
    "process.stdout.write(`node ${process.versions.node} args ${process.argv.slice(2).join(' ')}\\n`);\n",
  );
  if (shippedNode) {
    mkdirSync(join(dir, "node_modules/.bin"), { recursive: true });
    symlinkSync(process.execPath, join(dir, "node_modules/.bin/node"));
  }
  return join(dir, "bin/airflow-eventstream");
}

const ownMajor = process.versions.node.split(".")[0]!;

describe("bin/airflow-eventstream: which Node runs the daemon", () => {
  it("runs the package's own node_modules/.bin/node, not NODE or PATH's older one", () => {
    const launcher = makePackage(join(scratch, "own"), true);
    const r = spawnSync(launcher, ["run"], { env, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`node ${process.versions.node} args run\n`);
    expect(r.status).toBe(0);
  });

  it("installed as a dependency and started through npm's .bin symlink: the Node beside it in node_modules", () => {
    const nm = join(scratch, "consumer/node_modules");
    makePackage(join(nm, "airflow-eventstream"), false);
    mkdirSync(join(nm, ".bin"), { recursive: true });
    symlinkSync(process.execPath, join(nm, ".bin/node"));
    symlinkSync("../airflow-eventstream/bin/airflow-eventstream", join(nm, ".bin/airflow-eventstream"));
    const r = spawnSync(join(nm, ".bin/airflow-eventstream"), ["run"], { env, encoding: "utf8" });
    expect(r.stdout).toBe(`node ${process.versions.node} args run\n`);
    expect(r.status).toBe(0);
  });

  it("without a shipped Node, refuses one older than package.json's engines with exit code 2, saying what to do", () => {
    const launcher = makePackage(join(scratch, "none"), false);
    const r = spawnSync(launcher, ["run"], { env, encoding: "utf8" });
    expect(r.stdout).not.toContain("RAN ON THE OLD NODE");
    expect(r.stderr).toContain(`needs Node.js ${ownMajor} or later (package.json engines), but ${oldNode} is 20.11.1`);
    expect(r.stderr).toContain("npm ci");
    expect(r.status).toBe(2);
  });

  it("without a shipped Node, runs NODE when it is recent enough", () => {
    const launcher = makePackage(join(scratch, "recent"), false);
    const r = spawnSync(launcher, ["reset-checkpoint"], { env: { ...env, NODE: process.execPath }, encoding: "utf8" });
    expect(r.stdout).toBe(`node ${process.versions.node} args reset-checkpoint\n`);
    expect(r.status).toBe(0);
  });
});

describe("bin/airflow-eventstream: the heap it gives each command", () => {
  const dir = join(scratch, "heap");
  const launcher = makePackage(dir, true);
  // The old space Node was started with, as --max-old-space-size set it (the heap limit less the young generation).
  writeFileSync(
    join(dir, "dist/cli.js"),
    "import v8 from 'node:v8';\nprocess.stdout.write(String(v8.getHeapStatistics().heap_size_limit / 2 ** 20));\n",
  );
  const heapMb = (args: string[], extra: Record<string, string> = {}, cwd = dir) => {
    const r = spawnSync(launcher, args, { env: { ...env, ...extra }, encoding: "utf8", cwd });
    expect(r.stderr).toBe("");
    return Number(r.stdout);
  };
  // --max-semi-space-size: three semi-spaces on top of the old space, of 8 MB for serve, of 2 MB for the daemon.
  const YOUNG = 24;
  const DAEMON_YOUNG = 6;

  it("keeps the daemon's 60 MB, and sizes serve's for its caps (defaults: 22,000 runs -> 512 MB)", () => {
    expect(heapMb(["run"]) - DAEMON_YOUNG).toBe(60);
    expect(heapMb(["run"], { EVENTSTREAM_SERVE_MAX_RUNS: "100000" }) - DAEMON_YOUNG).toBe(60);
    expect(heapMb(["snapshot"]) - DAEMON_YOUNG).toBe(60);
    // The last word is the operator's: a young generation of their own.
    expect(heapMb(["run"], { NODE_OPTIONS: "--max-semi-space-size=8" }) - YOUNG).toBe(60);
    expect(heapMb(["serve"]) - YOUNG).toBe(512);
    expect(heapMb(["serve", "--help"]) - YOUNG).toBe(512);
    // 102,000 runs x 50 tasks x 370 B x 1.25 = 2,249 MB -> 2,304.
    expect(heapMb(["serve"], { EVENTSTREAM_SERVE_MAX_RUNS: "100000" }) - YOUNG).toBe(2304);
    expect(heapMb(["serve"], { EVENTSTREAM_SERVE_MAX_RUNS: "10", EVENTSTREAM_SERVE_RECENT_RUNS: "0" }) - YOUNG).toBe(256);
  });

  it("reads the caps from .env as the configuration does, and leaves the last word to NODE_OPTIONS", () => {
    const cwd = join(scratch, "heap-dotenv");
    mkdirSync(cwd);
    writeFileSync(join(cwd, ".env"), 'EVENTSTREAM_SERVE_RECENT_RUNS="78000"\n');
    // 98,000 runs -> 2,162 MB -> 2,176.
    expect(heapMb(["serve"], {}, cwd) - YOUNG).toBe(2176);
    expect(heapMb(["serve"], { EVENTSTREAM_SERVE_RECENT_RUNS: "2000" }, cwd) - YOUNG).toBe(512);
    expect(heapMb(["serve"], { NODE_OPTIONS: "--max-old-space-size=300" }) - YOUNG).toBe(300);
    // Not a number: the defaults (serve's configuration then refuses the value itself).
    expect(heapMb(["serve"], { EVENTSTREAM_SERVE_MAX_RUNS: "lots" }) - YOUNG).toBe(512);
  });
});

describe("what `run` loads", () => {
  it("not Node's bundled fetch client: the modules cli.ts imports for `run` leave undici unloaded", () => {
    // An ES import of node:http reads all of its exports, and three of them load undici (~2 MB of
    // live heap, ~12 MB of RSS in a bare process): src/operate/http.ts requires it instead.
    const modules = ["dist/main.js", "dist/operate/serve.js", "dist/config.js", "dist/log.js", "dist/errors.js"];
    const script = `for (const m of ${JSON.stringify(modules.map((m) => join(repo, m)))}) await import(m);
process.stdout.write(JSON.stringify(process.moduleLoadList.filter((m) => /undici|node:http$| http$/.test(m))));`;
    const r = spawnSync(join(repo, "node_modules/.bin/node"), ["--input-type=module", "-e", script], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    const loaded = JSON.parse(r.stdout) as string[];
    // The endpoint's module is there (the check would pass vacuously without it) ...
    expect(loaded.some((m) => m.endsWith(" http"))).toBe(true);
    // ... and the fetch client is not.
    expect(loaded.filter((m) => m.includes("undici"))).toEqual([]);
  });
});
