import { join } from "node:path";
import { Kafka, logLevel } from "kafkajs";
import { services, waitFor, withPg } from "../../support/harness.js";
import { logTail, REPO, startComponents, type AirflowInstance, type Service } from "./airflow.js";

/**
 * Support of asset-events.test.ts: deployment B (Airflow 3.x with the Kafka provider) whose DAG is
 * scheduled on an asset watched by a KafkaMessageQueueTrigger reading the asset_event topic.
 */

export const DAGS_ASSETS_FOLDER = join(REPO, "test/dags-assets");
/** B's DAGs; A's (the producer) are in producer/, the watcher's filter in lib/. */
export const CONSUMER_FOLDER = join(DAGS_ASSETS_FOLDER, "consumer");
export const PRODUCER_FOLDER = join(DAGS_ASSETS_FOLDER, "producer");
export const CONSUMER_DAG = "es_asset_consumer";
export const KAFKA_CONN_ID = "eventstream_kafka";

/** The asset_event record of the shared contract (src/airflow, topic EVENTSTREAM_ASSET_TOPIC). */
export interface AssetEventRecord {
  type: "asset_event";
  asset: { uri: string; name: string | null; group: string | null };
  asset_id: number;
  extra: Record<string, unknown>;
  source_dag_id: string | null;
  source_task_id: string | null;
  source_run_id: string | null;
  source_map_index: number | null;
  timestamp: string;
  source: { commit_lsn: string; xid: number; index: number; position: string; commit_time: string };
}

/**
 * B's environment: its DAG folder, the asset and topic its DAG watches, and the Kafka connection
 * (a JSON connection in an environment variable; a fresh consumer group reading from the start of
 * the topic, so a record produced before the triggerer subscribed is still seen).
 */
export function configureB(af: AirflowInstance, topic: string, uri: string): void {
  Object.assign(af.env, {
    AIRFLOW__CORE__DAGS_FOLDER: CONSUMER_FOLDER,
    // The triggerer imports the watcher's apply_function by dotted path, and not from the DAGs folder.
    PYTHONPATH: join(DAGS_ASSETS_FOLDER, "lib"),
    AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION: "False",
    ES_ASSET_TOPIC: topic,
    ES_ASSET_URI: uri,
    ES_KAFKA_CONN_ID: KAFKA_CONN_ID,
    ES_POLL_INTERVAL: "1",
    [`AIRFLOW_CONN_${KAFKA_CONN_ID.toUpperCase()}`]: JSON.stringify({
      conn_type: "kafka",
      extra: { "bootstrap.servers": services().kafkaBrokers.join(","), "group.id": `${af.mark}-watcher`, "auto.offset.reset": "earliest" },
    }),
  });
}

/**
 * B's components. The minimal set for an asset watcher to start a run is the dag-processor (parses
 * the DAG and registers the asset's trigger), the triggerer (runs it; the trigger's event becomes an
 * asset event) and the scheduler (turns the queued asset event into a DAG run); without an
 * api-server the run stays queued, its task cannot execute (the 3.x execution API). The api-server
 * is started too, so that the test sees what B's task received.
 */
export function startB(af: AirflowInstance): Promise<{ list: Service[]; died: Promise<never> }> {
  return startComponents(af, [CONSUMER_DAG]);
}

/** Until B's triggerer has taken the asset's watcher trigger (it then consumes the topic). */
export async function waitForWatcherRunning(database: string, uri: string, timeoutMs = 180_000): Promise<void> {
  await waitFor(
    `the watcher trigger of ${uri} to be assigned to a triggerer in ${database}`,
    () =>
      withPg(database, async (c) => {
        const { rows } = await c.query<{ n: string }>(
          `SELECT count(*) AS n FROM trigger t JOIN asset_watcher w ON w.trigger_id = t.id JOIN asset a ON a.id = w.asset_id
           WHERE a.uri = $1 AND t.triggerer_id IS NOT NULL`,
          [uri],
        );
        return rows[0]!.n !== "0";
      }),
    timeoutMs,
    500,
  );
}

export interface BRun {
  run_id: string;
  run_type: string;
  state: string;
  asset_event_extra: { from_trigger?: boolean; payload?: Record<string, unknown> } | null;
}

/** B's runs of the consumer DAG with the asset events that triggered them (dagrun_asset_event). */
export async function consumerRuns(database: string): Promise<BRun[]> {
  return withPg(database, async (c) => {
    const { rows } = await c.query<BRun>(
      `SELECT r.run_id, r.run_type, r.state::text AS state, e.extra AS asset_event_extra
       FROM dag_run r LEFT JOIN dagrun_asset_event d ON d.dag_run_id = r.id LEFT JOIN asset_event e ON e.id = d.event_id
       WHERE r.dag_id = $1 ORDER BY r.id`,
      [CONSUMER_DAG],
    );
    return rows;
  });
}

/** The asset events B recorded for `uri` (each watcher firing is one). */
export async function assetEvents(database: string, uri: string): Promise<{ extra: Record<string, unknown> }[]> {
  return withPg(database, async (c) => {
    const { rows } = await c.query<{ extra: Record<string, unknown> }>(
      "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = $1 ORDER BY e.id",
      [uri],
    );
    return rows;
  });
}

export function kafkaClient(clientId: string): Kafka {
  return new Kafka({ brokers: services().kafkaBrokers, logLevel: logLevel.NOTHING, clientId });
}

/** Produces asset_event records as the daemon does: key = the asset URI, value = the JSON event. */
export async function produceAssetEvents(topic: string, events: AssetEventRecord[]): Promise<void> {
  const producer = kafkaClient("e2e-assets-producer").producer();
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages: events.map((e) => ({ key: e.asset.uri, value: JSON.stringify(e) })) });
  } finally {
    await producer.disconnect();
  }
}

export async function createTopic(topic: string): Promise<void> {
  const admin = kafkaClient("e2e-assets-admin").admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/**
 * Until B has more than `count` runs of the consumer DAG; on a timeout the error carries B's asset
 * events and the triggerer's last error lines (a filter the triggerer cannot import, for one, shows
 * only there: the trigger fails and restarts every second or so while the test waits).
 */
export async function waitForRuns(af: AirflowInstance, count: number, died: Promise<never>, timeoutMs = 180_000): Promise<BRun[]> {
  const wait = waitFor(
    `more than ${count} run(s) of ${CONSUMER_DAG} in ${af.database}`,
    async () => {
      const all = await consumerRuns(af.database);
      return all.length > count ? all : null;
    },
    timeoutMs,
    500,
  ).catch(async (e: Error) => {
    const events = await assetEvents(af.database, af.env.ES_ASSET_URI!).catch(() => []);
    const errors = logTail(join(af.home, "triggerer.log"), 400)
      .split("\n")
      .filter((l) => /\[error|Traceback|Error:/.test(l))
      .slice(-5)
      .map((l) => l.slice(0, 400));
    throw new Error(`${e.message}; B's asset events: ${JSON.stringify(events)}; triggerer errors:\n${errors.join("\n") || "(none)"}`);
  });
  return Promise.race([wait, died]);
}

/** Until B's run is finished; then what its task returned (the payloads it found in triggering_asset_events). */
export async function consumedPayloads(af: AirflowInstance, runId: string, died: Promise<never>, timeoutMs = 180_000): Promise<unknown> {
  const state = await Promise.race([
    waitFor(
      `run ${runId} of ${CONSUMER_DAG} to finish`,
      () =>
        withPg(af.database, async (c) => {
          const { rows } = await c.query<{ state: string }>("SELECT state::text AS state FROM dag_run WHERE dag_id = $1 AND run_id = $2", [
            CONSUMER_DAG,
            runId,
          ]);
          return ["success", "failed"].includes(rows[0]?.state ?? "") ? rows[0]!.state : null;
        }),
      timeoutMs,
      500,
    ),
    died,
  ]);
  if (state !== "success") throw new Error(`run ${runId} of ${CONSUMER_DAG} ended ${state}; task logs under ${af.home}/logs`);
  return withPg(af.database, async (c) => {
    const { rows } = await c.query<{ value: unknown }>(
      "SELECT value FROM xcom WHERE dag_id = $1 AND run_id = $2 AND task_id = 'consume' AND key = 'return_value'",
      [CONSUMER_DAG, runId],
    );
    return rows[0]?.value;
  });
}
