import v8 from "node:v8";
import type { AddressInfo } from "node:net";
import type { Config } from "../config.js";
import { describeError } from "../errors.js";
import type { Logger } from "../log.js";
import { withKafka } from "../operate/kafka-facts.js";
import { buildApi } from "./api.js";
import { Follower } from "./follow.js";
import { listen } from "./listen.js";
import { RecentEvents } from "./recent.js";
import { startInsights } from "./insights/start.js";
import { parseStuckConfig } from "./thresholds.js";
import { RunStore } from "./view/store.js";

/** Measured by bench/serve-memory.ts: heap per task instance held (three history entries each). */
const BYTES_PER_TASK = 370;
const TASKS_PER_RUN = 50;

/**
 * `airflow-eventstream serve`: builds the view from Kafka (Follower) and answers over HTTP until
 * SIGTERM/SIGINT. Listens before the view is built, so /healthz answers at once and /readyz says
 * when the view is ready (503 until then).
 */
export async function serveCommand(cfg: Config, log: Logger): Promise<number> {
  const stuck = parseStuckConfig(cfg.serve.stuckSeconds, cfg.serve.stuckDags);
  warnHeap(cfg, log);
  return withKafka(cfg, log, async (kafka, admin) => {
    const store = new RunStore({
      maxRuns: cfg.serve.maxRuns,
      recentRuns: cfg.serve.recentRuns,
      historyPerRun: cfg.serve.historyPerRun,
      stuck,
    });
    const recent = new RecentEvents(cfg.serve.eventBuffer);
    const follower = new Follower(cfg, kafka, admin, store, log.child({ module: "follow" }));
    follower.onEvent((e, _ctx, json) => recent.push(e, json));
    const api = buildApi({
      store,
      follower,
      recent,
      log,
      maxWaiters: cfg.serve.maxWaiters,
      sse: { maxClients: cfg.serve.maxStreams, maxQueued: 10_000, keepAliveMs: 15_000 },
    });
    // Its own group, clients and view (docs/insights.md): the replicas share the insights, while each serves every read.
    const insights = cfg.insights.enabled ? await startInsights(cfg, log) : null;
    const server = await listen(api.app.fetch, cfg.serve.host, cfg.serve.port).catch(async (e: unknown) => {
      await insights?.close();
      throw e;
    });
    log.info({ host: cfg.serve.host, port: (server.address() as AddressInfo).port }, "serving the query API (docs/serve.md)");
    const stopped = new Promise<void>((resolve) => {
      process.once("SIGTERM", () => resolve());
      process.once("SIGINT", () => resolve());
    });
    try {
      await Promise.race([follower.start().then(() => (recent.since = follower.from)), stopped]);
      await stopped;
      log.info("stopping");
    } finally {
      api.close();
      await insights?.close().catch((e: unknown) => log.warn({ err: describeError(e) }, "closing the insights writer failed"));
      await follower.stop().catch((e: unknown) => log.warn({ err: describeError(e) }, "closing the Kafka reader failed"));
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    return 0;
  });
}

/** The view's bounds against the heap Node was given: bin/airflow-eventstream's 60 MB is the daemon's, far too small for a full view. */
function warnHeap(cfg: Config, log: Logger): void {
  const needMb = Math.ceil(((cfg.serve.maxRuns + cfg.serve.recentRuns) * TASKS_PER_RUN * BYTES_PER_TASK) / 2 ** 20);
  const limitMb = Math.floor(v8.getHeapStatistics().heap_size_limit / 2 ** 20);
  if (needMb * 1.25 > limitMb)
    log.warn(
      { needMb, limitMb },
      `a full view (EVENTSTREAM_SERVE_MAX_RUNS + EVENTSTREAM_SERVE_RECENT_RUNS runs of ${TASKS_PER_RUN} tasks) needs ~${needMb} MB of heap, more than this Node allows (${limitMb} MB): start serve with NODE_OPTIONS=--max-old-space-size=${Math.ceil((needMb * 1.25) / 64) * 64}, or lower the caps`,
    );
}
