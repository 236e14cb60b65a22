#!/usr/bin/env node
import v8 from "node:v8";
import { checkHeapLimit, loadConfig, loadDotEnv, type Config } from "./config.js";
import { Daemon } from "./main.js";
import { createLogger, type Logger } from "./log.js";
import { UserActionError, describeError } from "./errors.js";
import { resetCheckpoint } from "./reset.js";
import { SNAPSHOT_USAGE, snapshotCommand } from "./snapshot/command.js";
import { daemonMetrics, startOperate } from "./operate/serve.js";
import { REPLAY_USAGE, parseReplayArgs, replay, type ReplayArgs } from "./backfill/replay.js";

const USAGE = `airflow-eventstream: Airflow task-state changes from PostgreSQL's WAL to Kafka.

Usage:
  airflow-eventstream run               stream until SIGTERM/SIGINT (default)
  airflow-eventstream reset-checkpoint  after a reported gap (SlotGapError) and a re-snapshot of the
                                        consumers: delete this slot's checkpoint and drop the slot if
                                        PostgreSQL invalidated it, so the next run starts from the
                                        slot as it is (or a new one). Stop the daemon first.
  ${REPLAY_USAGE}
${SNAPSHOT_USAGE}
  airflow-eventstream help              this text

Configuration comes from environment variables (and ./.env); see .env.example.
Exit codes: 0 stopped cleanly, 2 configuration or server set-up needs changing, 1 anything else.`;

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0] ?? "run";
  if (cmd === "help" || cmd === "--help" || cmd === "-h") {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (cmd !== "run" && cmd !== "reset-checkpoint" && cmd !== "replay" && cmd !== "snapshot") {
    process.stderr.write(`unknown command "${cmd}"\n\n${USAGE}\n`);
    return 2;
  }
  // A replay's records may go to stdout: its logs go to stderr.
  const fd = cmd === "replay" ? 2 : 1;
  let log = createLogger("info", fd);
  try {
    loadDotEnv();
    const replayArgs = cmd === "replay" ? parseReplayArgs(argv.slice(1)) : null;
    const cfg = loadConfig();
    checkHeapLimit(cfg, v8.getHeapStatistics().heap_size_limit);
    log = createLogger(cfg.logLevel, fd);
    routeProcessWarnings(log);
    if (cmd === "snapshot") {
      await snapshotCommand(cfg, log, argv.slice(1));
      return 0;
    }
    if (replayArgs !== null) return await runReplay(cfg, replayArgs, log);
    if (cmd === "reset-checkpoint") {
      const out = await resetCheckpoint(cfg, log);
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
      { slot: cfg.slot, publication: cfg.publication, brokers: cfg.kafka.brokers, database: cfg.pg.database, host: cfg.pg.host },
      "starting",
    );
    try {
      await daemon.run();
    } finally {
      await operate.close();
    }
    log.info("stopped");
    return 0;
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

/** `airflow-eventstream replay`: records to stdout or a topic, what was done to stderr. */
async function runReplay(cfg: Config, args: ReplayArgs, log: Logger): Promise<number> {
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

main(process.argv.slice(2)).then(
  // Exit explicitly: client libraries may keep timers alive after everything is closed.
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`airflow-eventstream: ${describeError(e)}\n`);
    process.exit(1);
  },
);
