import { execFileSync } from "node:child_process";
import { freePort } from "../../scripts/free-port.js";

export { freePort };
import { appendFileSync, chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { registerCleanup } from "./cleanup.js";

/**
 * A throwaway PostgreSQL cluster for tests that need server settings the shared one cannot have
 * (e.g. wal_level=replica). Listens on 127.0.0.1 only, trust authentication, socket in its own
 * temporary directory; `stop()` shuts it down and removes every file.
 *
 * PostgreSQL refuses to run as root: when the tests run as root, the server programs run as the
 * `postgres` OS user (runuser), which owns the temporary directory.
 */
export interface ScratchPostgres {
  host: string;
  port: number;
  user: string;
  dir: string;
  stop(): Promise<void>;
}

export interface ScratchOptions {
  /** Extra `-c name=value` server settings, e.g. { wal_level: "replica" }. */
  settings?: Record<string, string>;
  /** The server programs' directory (initdb, pg_ctl, postgres), e.g. `bash scripts/pg-binaries.sh 17`'s; default postgresBinDir(). */
  bin?: string;
}

const isRoot = process.getuid?.() === 0;

/**
 * The server programs of the services' version (EVENTSTREAM_TEST_PG_BIN, from `scripts/services.sh env`),
 * so a throwaway cluster behaves like the shared one; else the highest installed /usr/lib/postgresql/<major>/bin.
 */
export function postgresBinDir(): string {
  const configured = process.env.EVENTSTREAM_TEST_PG_BIN;
  if (configured) return configured;
  const root = "/usr/lib/postgresql";
  const majors = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, "bin", "initdb")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (majors.length === 0) {
    throw new Error(`no PostgreSQL server binaries under ${root}/*/bin (run \`bash scripts/services.sh up\`, which installs them)`);
  }
  return join(root, majors[0]!, "bin");
}

/** Runs a server program, as `postgres` when we are root; cwd / because ours may be unreadable to it. */
export function asPostgres(program: string, args: string[]): string {
  const [file, argv] = isRoot ? ["runuser", ["-u", "postgres", "--", program, ...args]] : [program, args];
  try {
    return execFileSync(file, argv, { cwd: "/", encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${program} ${args.join(" ")} failed: ${err.message}\n${err.stdout ?? ""}${err.stderr ?? ""}`, { cause: e });
  }
}

/**
 * The port for a scratch cluster: one the kernel picks, or, with EVENTSTREAM_SCRATCH_PG_PORTS=low-high
 * (when several sets of services share a machine and each keeps to its own ports), the first one
 * in that range nothing listens on.
 */
export async function scratchPort(): Promise<number> {
  const range = /^(\d+)-(\d+)$/.exec(process.env.EVENTSTREAM_SCRATCH_PG_PORTS ?? "");
  if (!range) return freePort();
  for (let port = Number(range[1]); port <= Number(range[2]); port++) {
    if (await portFree(port)) return port;
  }
  throw new Error(`no free port in EVENTSTREAM_SCRATCH_PG_PORTS=${process.env.EVENTSTREAM_SCRATCH_PG_PORTS}`);
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** Gives a fresh directory to the user the server programs run as (asPostgres), mode 0700. */
export function ownedByPostgres(dir: string): void {
  if (isRoot) {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
}

export async function startScratchPostgres(opts: ScratchOptions = {}): Promise<ScratchPostgres> {
  const bin = opts.bin ?? postgresBinDir();
  const dir = mkdtempSync("/tmp/eventstream-scratch-pg-");
  const data = join(dir, "data");
  const logFile = join(dir, "postgres.log");
  let started = false;
  const cleanup = () => {
    if (started) {
      try {
        asPostgres(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "-t", "30", "-s", "stop"]);
      } catch {
        /* already stopped */
      }
      started = false;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // If the test never calls stop() (a timeout), the cleanup hooks do; if the worker exits first, its exit hook.
  const unregister = registerCleanup("scratch-postgres", dir, cleanup, cleanup);
  try {
    ownedByPostgres(dir);
    asPostgres(join(bin, "initdb"), [
      "-D",
      data,
      "-U",
      "postgres",
      "--auth=trust",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
      "--no-instructions",
    ]);
    writeFileSync(
      join(data, "pg_hba.conf"),
      [
        "# scratch cluster for tests: trust, 127.0.0.1 and the socket only",
        "local   all          all                  trust",
        "local   replication  all                  trust",
        "host    all          all   127.0.0.1/32   trust",
        "host    replication  all   127.0.0.1/32   trust",
        "",
      ].join("\n"),
    );
    const settings: Record<string, string> = {
      listen_addresses: "'127.0.0.1'",
      unix_socket_directories: `'${dir}'`,
      max_connections: "20",
      shared_buffers: "16MB",
      fsync: "off",
      synchronous_commit: "off",
      full_page_writes: "off",
      ...opts.settings,
    };
    const conf = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
    // The port is picked, then bound by the server; another process may take it in between: retry.
    for (let attempt = 1; ; attempt++) {
      const port = await scratchPort();
      appendFileSync(join(data, "postgresql.conf"), `\n# scratch-postgres attempt ${attempt}\n${[...conf, `port = ${port}`].join("\n")}\n`);
      try {
        asPostgres(join(bin, "pg_ctl"), ["-D", data, "-l", logFile, "-w", "-t", "60", "-s", "start"]);
        started = true;
        return {
          host: "127.0.0.1",
          port,
          user: "postgres",
          dir,
          stop: async () => {
            cleanup();
            unregister();
          },
        };
      } catch (e) {
        if (attempt >= 3) {
          const log = existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").slice(-20).join("\n") : "(no server log)";
          throw new Error(`scratch PostgreSQL did not start: ${(e as Error).message}\n${log}`, { cause: e });
        }
      }
    }
  } catch (e) {
    cleanup();
    unregister();
    throw e;
  }
}
