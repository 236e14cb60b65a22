import { requestSnapshot, type SnapshotRequest } from "./snapshot/request.js";
import type { Config } from "./config.js";
import type { AckSink, AckStream } from "./checkpoint/ack.js";
import type { Checkpoint, SourceIdentity } from "./checkpoint/position.js";
import type { Lsn } from "./lsn.js";
import type { AssetRow } from "./airflow/asset-event.js";
import type { DagRunRow } from "./airflow/run-context.js";
import { KafkaSink, type SinkCallbacks, type SinkRecord } from "./sink/kafka.js";
import type { ReadBackResult } from "./sink/read-back.js";
import { dagIdsWithRuns, readAssets, readRunsUnderWay } from "./source/airflow-rows.js";
import { withSourceClient } from "./source/connection.js";
import { detectAssetTables, explainPublicationDropped, prepareSource } from "./source/preflight.js";
import { ReplicationStream, type StreamHandlers } from "./source/replication.js";
import { createSlot, readSlotNow, readSourceIdentity, type SlotState, type SourceReady } from "./source/slot.js";
import type { Logger } from "./log.js";
import type { ValueFraming } from "./sink/schema-registry.js";

/** The replication stream, as a session starts, drives and ends it (src/source/replication.ts). */
export interface SourceStream extends AckStream {
  /** Resolves once the server streams; every message then goes to `handlers`, in WAL order. */
  start(handlers: StreamHandlers): Promise<void>;
  /** Settles when the stream ends: resolves on stop(), rejects on any error. */
  readonly done: Promise<void>;
  /** Still connected: a status update sent now reaches PostgreSQL. */
  readonly isOpen: boolean;
  stop(): Promise<void>;
}

/** The replication source: PostgreSQL as a session reads it (src/source/). */
export interface ReplicationSource {
  /** Preflight checks and the slot's state (preflight.ts); the slot is only inspected. */
  prepare(): Promise<SourceReady>;
  /** The cluster and database, for the gap check. */
  readIdentity(): Promise<SourceIdentity>;
  /** Creates the missing slot (slot.ts). */
  createSlot(): Promise<SlotState>;
  /** The slot and the server's WAL now, once the slot is this session's. */
  readSlotNow(): Promise<SourceReady>;
  /** dag_run rows of runs under way, at most `limit`. */
  runsUnderWay(limit: number): Promise<DagRunRow[]>;
  /** Every asset/dataset row, with EVENTSTREAM_ASSET_EVENTS ([] when off). */
  assets(): Promise<AssetRow[]>;
  /** Every dag_id with a run: with a topic template, the topics an event can have gone to. */
  dagIdsWithRuns(): Promise<string[]>;
  /** Writes a snapshot request into the WAL (src/snapshot/request.ts); resolves with its id. */
  requestSnapshot(req: SnapshotRequest): Promise<string>;
  /** A failure the source can say more about (a dropped publication), or null. */
  explainFailure(e: unknown): Promise<Error | null>;
  /** A replication stream, not connected yet. */
  openStream(): SourceStream;
}

/** The event publisher: the Kafka side that takes events, in order (src/sink/publisher.ts). */
export interface EventPublisher extends Pick<AckSink, "inflightBytes"> {
  /** Connects, and makes sure the single topic (when `fixedTopic`) and the checkpoint topic exist. */
  connect(fixedTopic: string | null): Promise<void>;
  /** The tails of the event topics, read back at start (src/sink/read-back.ts). */
  readBack(perPartition: number, dagIds: readonly string[], onEvent: (value: Record<string, unknown>) => void): Promise<ReadBackResult>;
  /** Queues a record; never blocks. */
  push(rec: SinkRecord): void;
  /** Resolves when every pushed record is acknowledged (or the publisher stopped). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/** The checkpoint store: this slot's checkpoint, read at start and written with the events (src/sink/checkpoint-store.ts). */
export interface CheckpointStore extends AckSink {
  /** The latest checkpoint of this slot (null: none); must precede every send. */
  readCheckpoint(source: SourceIdentity): Promise<Checkpoint | null>;
  /** A checkpoint after everything queued, resolving with its acked_lsn once durable (null: not written). */
  checkpointNow(): Promise<Lsn | null>;
  /** Snapshot jobs' progress, read with the checkpoint and written with every later one (src/snapshot/); absent: not kept. */
  snapshotProgress?: unknown;
}

/** The Kafka side of a session: one client serves both the events and the checkpoint. */
export type Sink = EventPublisher & CheckpointStore;

/**
 * What a session is built from. The one place the real stages are wired (realStages); a test
 * passes fakes. The sink is asked for only once the source is ready, and reports what Kafka
 * acknowledged, or its failure, through `callbacks`.
 */
export interface Stages {
  source: ReplicationSource;
  sink(callbacks: SinkCallbacks): Sink;
}

/** PostgreSQL through node-postgres, Kafka through kafkajs. */
/** `framing`: EVENTSTREAM_SCHEMA_REGISTRY_URL's, made once by the daemon (src/sink/schema-registry.ts); null: plain JSON. */
export function realStages(cfg: Config, log: Logger, framing: ValueFraming | null = null): Stages {
  const sourceLog = log.child({ module: "source" });
  return {
    source: {
      prepare: () => prepareSource(cfg, sourceLog),
      readIdentity: () => withSourceClient(cfg, readSourceIdentity),
      createSlot: () => createSlot(cfg, sourceLog),
      readSlotNow: () => withSourceClient(cfg, (c) => readSlotNow(c, cfg)),
      runsUnderWay: (limit) => withSourceClient(cfg, (c) => readRunsUnderWay(c, cfg.airflowSchema, limit)),
      assets: () => withSourceClient(cfg, async (c) => readAssets(c, cfg.airflowSchema, await detectAssetTables(c, cfg))),
      dagIdsWithRuns: () => withSourceClient(cfg, (c) => dagIdsWithRuns(c, cfg.airflowSchema)),
      requestSnapshot: (req) => withSourceClient(cfg, async (c) => (await requestSnapshot(c, req)).id),
      explainFailure: (e) => explainPublicationDropped(e, cfg),
      openStream: () => new ReplicationStream(cfg, log.child({ module: "replication" })),
    },
    sink: (callbacks) => new KafkaSink(cfg, log.child({ module: "sink" }), callbacks, framing),
  };
}
