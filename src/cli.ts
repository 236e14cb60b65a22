#!/usr/bin/env node
import v8 from "node:v8";
import { Command, CommanderError, Option } from "commander";
import { checkHeapLimit, loadConfig, loadDotEnv, type Config } from "./config.js";
import { Daemon } from "./main.js";
import { createLogger, type Logger } from "./log.js";
import { UserActionError, describeError } from "./errors.js";
import { daemonMetrics, packageVersion, startOperate } from "./operate/serve.js";
// The other commands' code is imported by their actions, not here: `run` then never loads it (the
// serve command alone is ~1.5 MB of live heap), and the daemon's peak RSS is what issue 14 bounds.
import { SNAPSHOT_USAGE } from "./snapshot/usage.js";
import { REPLAY_USAGE } from "./backfill/usage.js";
import type { ReplayArgs } from "./backfill/replay.js";
import type { TailOptions } from "./operate/tail.js";

const FOOTER = `
Configuration comes from environment variables (and ./.env); see .env.example.
Exit codes: 0 done (or stopped cleanly), 1 something needs action (status, check) or failed,
2 configuration or server set-up needs changing (or a command line that cannot be parsed).`;

/** What an action is handed: the configuration and a logger at its level, set up as every command needs. */
interface Env {
  cfg: Config;
  log: Logger;
}

/**
 * Loads the configuration and runs `fn`; the one error path of every command: a UserActionError
 * exits 2 with its message, anything else 1. `fd`: where logs go (2 when stdout carries data).
 */
async function withEnv(fd: 1 | 2, fn: (env: Env) => Promise<number>, before?: () => Promise<void>): Promise<number> {
  let log = createLogger("info", fd);
  try {
    loadDotEnv();
    await before?.();
    const cfg = loadConfig();
    checkHeapLimit(cfg, v8.getHeapStatistics().heap_size_limit);
    log = createLogger(cfg.logLevel, fd);
    routeProcessWarnings(log);
    return await fn({ cfg, log });
  } catch (e: unknown) {
    if (e instanceof UserActionError) {
      log.fatal({ error: e.name }, e.message);
      process.stderr.write(`\nairflow-eventstream: ${e.message}\n`);
      return 2;
    }
    log.fatal({ err: describeError(e) }, "fatal error");
    return 1;
  }
}

function program(setExit: (code: number) => void): Command {
  const cli = new Command("airflow-eventstream")
    .description("Airflow task-state changes from PostgreSQL's WAL to Kafka.")
    .version(`${packageVersion()} (Node ${process.versions.node})`, "-V, --version", "print the version (and Node's)")
    .addHelpText("after", FOOTER)
    .showSuggestionAfterError()
    .exitOverride();
  const exit = (p: Promise<number>) => p.then(setExit);
  cli
    .command("run")
    .description("stream until SIGTERM/SIGINT (the default command)")
    .action(() => exit(withEnv(1, runDaemon)));
  cli
    .command("reset-checkpoint")
    .description(
      "after a reported gap (SlotGapError) and a re-snapshot of the consumers: delete this slot's checkpoint and drop the slot if PostgreSQL invalidated it, so the next run starts from the slot as it is (or a new one). Stop the daemon first.",
    )
    .action(() => exit(withEnv(1, runReset)));
  // replay and snapshot keep their own argument parsers (and their messages, exit code 2).
  cli
    .command("replay")
    .description("copy the events of a range of positions, per DAG in order, to a topic or stdout")
    .helpOption("-h, --help", "this text")
    .addHelpText("after", `\n  ${REPLAY_USAGE}`)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument("[args...]")
    .action((args: string[]) => {
      let parsed: ReplayArgs | undefined;
      // A replay's records may go to stdout: its logs go to stderr.
      return exit(
        withEnv(
          2,
          ({ cfg, log }) => runReplay(cfg, parsed!, log),
          async () => {
            parsed = (await import("./backfill/replay.js")).parseReplayArgs(args);
          },
        ),
      );
    });
  cli
    .command("snapshot")
    .description("ask the daemon streaming from this database to publish the current rows as snapshot events")
    .addHelpText("after", `\n${SNAPSHOT_USAGE}`)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument("[args...]")
    .action((args: string[]) =>
      exit(
        withEnv(1, async ({ cfg, log }) => {
          await (await import("./snapshot/command.js")).snapshotCommand(cfg, log, args);
          return 0;
        }),
      ),
    );
  cli
    .command("status")
    .description("the slot, the checkpoint, the topics and a running daemon's /status; exit 1 when something needs action (saying what)")
    .option("--json", "one JSON document instead of text")
    .action((o: { json?: boolean }) =>
      exit(withEnv(2, async ({ cfg, log }) => (await import("./operate/status.js")).statusCommand(cfg, log, { json: o.json === true }))),
    );
  cli
    .command("check")
    .description("every start-time check, without streaming or creating anything: ok / problem and the fix; exit 1 on any problem")
    .option("--json", "one JSON document instead of text")
    .action((o: { json?: boolean }) =>
      exit(withEnv(2, async ({ cfg, log }) => (await import("./operate/check.js")).checkCommand(cfg, log, { json: o.json === true }))),
    );
  cli
    .command("tail")
    .description("events from Kafka as readable lines (or JSON lines)")
    .option("--dag <id...>", "only these DAGs")
    .addOption(new Option("--from <where>", "beginning, end, an event's position, an LSN or an ISO time").default("end"))
    .option("--follow", "keep printing new events (until Ctrl-C)")
    .option("--json", "the events as JSON lines")
    .action((o: { dag?: string[]; from: string; follow?: boolean; json?: boolean }) => {
      const opts: TailOptions = { dags: o.dag ?? null, from: o.from, follow: o.follow === true, json: o.json === true };
      return exit(withEnv(2, async ({ cfg, log }) => (await import("./operate/tail.js")).tailCommand(cfg, log, opts)));
    });
  cli
    .command("serve")
    .description("the query service: runs, readiness, stuck tasks and history over REST and SSE, from the topics (docs/serve.md)")
    .action(() => exit(withEnv(1, async ({ cfg, log }) => (await import("./serve/command.js")).serveCommand(cfg, log))));
  return cli;
}

async function runDaemon({ cfg, log }: Env): Promise<number> {
  const metrics = daemonMetrics(cfg);
  const operate = await startOperate(cfg, log, metrics);
  const daemon = new Daemon(cfg, log, undefined, undefined, metrics);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, "second signal: exiting now; unacknowledged events are re-delivered on the next start");
      process.exit(1);
    }
    log.info({ signal, timeoutMs: cfg.shutdownTimeoutMs }, "stopping: flushing Kafka, then acknowledging");
    // A hard deadline: the process exits within the timeout even if a connection hangs.
    setTimeout(() => {
      log.error("shutdown timed out; exiting");
      process.exit(1);
    }, cfg.shutdownTimeoutMs + 5_000).unref();
    daemon.stop().catch((e: unknown) => log.error({ err: describeError(e) }, "error while stopping"));
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  log.info(
    {
      slot: cfg.slot,
      publication: cfg.publication,
      brokers: cfg.kafka.brokers,
      database: cfg.pg.database,
      hosts: cfg.pg.hosts.map((h) => `${h.host}:${h.port}`).join(","),
    },
    "starting",
  );
  try {
    await daemon.run();
  } finally {
    await operate.close();
  }
  log.info("stopped");
  return 0;
}

async function runReset({ cfg, log }: Env): Promise<number> {
  const out = await (await import("./reset.js")).resetCheckpoint(cfg, log);
  const done = [
    out.checkpoint === "deleted"
      ? `deleted the checkpoint of slot "${cfg.slot}" in ${cfg.checkpointTopic}`
      : out.checkpoint === "no checkpoint topic"
        ? `no checkpoint topic ${cfg.checkpointTopic}: nothing to delete`
        : "no checkpoint in use (EVENTSTREAM_GAP_DETECTION=false)",
    out.slot === "dropped"
      ? `dropped the invalidated slot "${cfg.slot}"`
      : out.slot === "missing"
        ? `slot "${cfg.slot}" does not exist`
        : `kept slot "${cfg.slot}"`,
  ];
  const next =
    out.slot === "kept"
      ? "streams from the slot's current position"
      : cfg.createSlot
        ? "creates a new slot and streams from there"
        : "streams once you have created the slot (EVENTSTREAM_CREATE_SLOT is false)";
  process.stdout.write(`airflow-eventstream: ${done.join("; ")}. The gap is accepted: the next \`airflow-eventstream run\` ${next}.\n`);
  return 0;
}

/** `airflow-eventstream replay`: records to stdout or a topic, what was done to stderr. */
async function runReplay(cfg: Config, args: ReplayArgs, log: Logger): Promise<number> {
  const { replay } = await import("./backfill/replay.js");
  const done = await replay(cfg, args, log, { out: process.stdout, err: process.stderr });
  const to = args.output.kind === "topic" ? args.output.topic : "stdout";
  process.stderr.write(
    `airflow-eventstream: replayed ${done.records} records from ${done.topics.join(", ")} to ${to} in ${done.ms} ms (replay ${done.replayId}).\n`,
  );
  return 0;
}

/**
 * Node's process warnings go through the logger as JSON like everything else. kafkajs 2.2.4 sets
 * timers from a stale clock reading on Node 24 ("TimeoutNegativeWarning"); Node clamps them to
 * 1 ms, which is what kafkajs meant, so that one is dropped rather than alarm operators.
 */
function routeProcessWarnings(log: ReturnType<typeof createLogger>): void {
  process.removeAllListeners("warning");
  process.on("warning", (w: Error) => {
    if (w.name === "TimeoutNegativeWarning") return;
    log.warn({ warning: w.name }, w.message);
  });
}

async function main(argv: string[]): Promise<number> {
  let code = 0;
  const cli = program((c) => (code = c));
  try {
    // No command: run, as before commands existed.
    await cli.parseAsync(argv.length === 0 ? ["run"] : argv, { from: "user" });
    return code;
  } catch (e: unknown) {
    // --help and --version end parsing with exit code 0; a command line commander refuses is a usage error (2).
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    throw e;
  }
}

main(process.argv.slice(2)).then(
  // Exit explicitly: client libraries may keep timers alive after everything is closed.
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`airflow-eventstream: ${describeError(e)}\n`);
    process.exit(1);
  },
);
