import { pathToFileURL } from "node:url";
import type { Admin } from "kafkajs";
import { loadConfig, type Config } from "../../config.js";
import { TopicError, UserActionError, coerceError } from "../../errors.js";
import { createLogger, type Logger } from "../../log.js";
import { createClients } from "../../sink/client.js";
import { parseStuckConfig } from "../thresholds.js";
import type { StuckConfig, WaitingState } from "../view/stuck.js";
import type { StuckThreshold } from "./derive.js";
import { InsightsWriter } from "./writer.js";

export interface InsightsHandle {
  /** The events partitions this replica writes the insights of now. */
  partitions(): number[];
  close(): Promise<void>;
}

/**
 * Starts the insights writer of `serve` (docs/insights.md): checks the layout, creates the insights
 * topic with the events topic's partition count when missing, and joins the writers' group.
 */
export async function startInsights(cfg: Config, log: Logger): Promise<InsightsHandle> {
  if (cfg.topicTemplate !== null)
    throw new UserActionError(
      `insights need the single-topic layout: EVENTSTREAM_TOPIC_TEMPLATE=${cfg.topicTemplate} spreads the events over one topic per DAG, whose partitions cannot be owned as one. Set EVENTSTREAM_SERVE_INSIGHTS=false, or use one topic (EVENTSTREAM_TOPIC)`,
    );
  if (cfg.stateTopic === null)
    throw new UserActionError(
      "insights rebuild their view from the current-state topic, which is off (EVENTSTREAM_STATE_TOPIC_ENABLED=false): turn it on for the daemon and serve, or set EVENTSTREAM_SERVE_INSIGHTS=false",
    );
  const { kafka, admin } = createClients(cfg, log);
  await admin.connect();
  try {
    await ensureInsightsTopic(cfg, admin);
  } catch (e: unknown) {
    await admin.disconnect().catch(() => undefined);
    throw e;
  }
  // The query service's thresholds (EVENTSTREAM_SERVE_STUCK_SECONDS, _DAGS): /stuck and task_stuck agree.
  const stuck = parseStuckConfig(cfg.serve.stuckSeconds, cfg.serve.stuckDags);
  const writer = new InsightsWriter(
    kafka,
    admin,
    {
      eventsTopic: cfg.topic,
      stateTopic: cfg.stateTopic,
      insightsTopic: cfg.insights.topic,
      groupId: cfg.insights.groupId,
      threshold: stuckThreshold(stuck),
      tickMs: tickMs(stuck),
      sessionTimeoutMs: cfg.insights.sessionTimeoutMs,
    },
    log.child({ component: "insights" }),
  );
  await writer.start();
  return {
    partitions: () => writer.partitions(),
    close: async () => {
      await writer.close();
      await admin.disconnect().catch(() => undefined);
    },
  };
}

export function stuckThreshold(s: StuckConfig): StuckThreshold {
  return (dagId, state) => s.perDag[dagId]?.[state as WaitingState] ?? s.defaults[state as WaitingState] ?? null;
}

/** A fifth of the shortest threshold, between 0.5 s and 10 s: a stuck task is reported within 20% of its threshold. */
function tickMs(s: StuckConfig): number {
  const all = [...Object.values(s.defaults), ...Object.values(s.perDag).flatMap((d) => Object.values(d))];
  return Math.min(10_000, Math.max(500, (Math.min(...all) * 1000) / 5));
}

async function ensureInsightsTopic(cfg: Config, admin: Admin): Promise<void> {
  const meta = async (topic: string) =>
    (await admin.fetchTopicMetadata({ topics: [topic] }).catch(() => ({ topics: [] }))).topics.find((t) => t.name === topic);
  const events = await meta(cfg.topic);
  if (events === undefined)
    throw new TopicError(
      `the events topic ${cfg.topic} does not exist: start the daemon (airflow-eventstream run) first, or set EVENTSTREAM_TOPIC to its topic`,
    );
  const count = events.partitions.length;
  const insights = await meta(cfg.insights.topic);
  if (insights !== undefined) {
    if (insights.partitions.length !== count)
      throw new TopicError(
        `the insights topic ${cfg.insights.topic} has ${insights.partitions.length} partitions and the events topic ${cfg.topic} ${count}: an insight goes to its event's partition number, so they must match. Add partitions to the insights topic (kafka-topics --alter --partitions ${count}) or name a new one in EVENTSTREAM_SERVE_INSIGHTS_TOPIC`,
      );
    return;
  }
  if (!cfg.createTopics)
    throw new TopicError(
      `the insights topic ${cfg.insights.topic} does not exist and EVENTSTREAM_CREATE_TOPICS=false: create it with ${count} partitions (the events topic's count)`,
    );
  await admin
    .createTopics({
      waitForLeaders: true,
      topics: [{ topic: cfg.insights.topic, numPartitions: count, replicationFactor: cfg.topicReplicationFactor }],
    })
    .catch((e: unknown) => {
      // Another replica created it first: fine when the count matches, checked on its next start.
      if (!/already exists/i.test(coerceError(e).message)) throw e;
    });
}

/** The insights writer alone, until SIGTERM or SIGINT: for the serve command, or run as `node dist/serve/insights/start.js`. */
export async function runInsights(cfg: Config, log: Logger): Promise<void> {
  const handle = await startInsights(cfg, log);
  log.info({ topic: cfg.insights.topic, group: cfg.insights.groupId }, "insights writer started");
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  await handle.close();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const cfg = loadConfig();
  const log = createLogger(cfg.logLevel);
  runInsights(cfg, log).then(
    () => process.exit(0),
    (e: unknown) => {
      log.error({ err: coerceError(e).message }, "insights writer stopped");
      process.exit(e instanceof UserActionError ? 2 : 1);
    },
  );
}
