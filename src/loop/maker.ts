import type { Config } from "../config.js";
import { decodePgoutput } from "../decode/pgoutput.js";
import type { Relation, Row, TxEvent } from "../decode/types.js";
import { formatLsn, type Lsn } from "../lsn.js";
import { AirflowMapper, type TxContext } from "../airflow/mapper.js";
import { TransactionDecoder } from "../decode/transactions.js";
import type { StreamEvent } from "../airflow/events.js";
import { EventFilter } from "../airflow/filter.js";
import { headersBytesBound, RECORD_OVERHEAD_BYTES, recordBytes } from "../sink/batch.js";
import type { CloudEventHeaders, CloudEvents } from "../sink/cloudevents.js";
import type { SinkRecord } from "../sink/kafka.js";
import { WIRE_HEADER_BYTES } from "../sink/wire-format.js";
import { StateRecords, type StateRecord } from "../sink/state-topic.js";
import { TopicRouter } from "../sink/routing.js";
import { GAP_MESSAGE_PREFIX, gapEvent } from "../checkpoint/gap-event.js";
import type { Logger } from "../log.js";

type ChangeEvent = Extract<TxEvent, { kind: "change" }>;
export type MessageEvent = Extract<TxEvent, { kind: "message" }>;

/** An event over EVENTSTREAM_MAX_MESSAGE_BYTES: where it is, and the dead-letter summary when there is a dead-letter topic. */
export interface Oversize {
  where: { type: string; dag_id: unknown; task_id: unknown; run_id: unknown; position: string };
  bytes: number;
  /** The dead-letter record's value; null without a dead-letter topic (the session stops). */
  summary: string | null;
}

/**
 * What the maker hands on, in WAL order: the publishing half of the loop (handoff.ts) on the same
 * thread, or the model thread's outbox (thread.ts).
 */
export interface Made {
  /** A transaction began; `commitMs`: its commit time in ms since the Unix epoch. */
  begin(commitMs: number): void;
  /**
   * One event's record, `seq` 0 until the handoff numbers it. Its `topic` is where a replay looks
   * for it (the dead-letter topic for an oversized event when there is one). `type` and
   * `stateName` are the event's, for the metrics; `oversize` non-null: over the size limit;
   * `gapNote` non-null: a stream_gap event, logged when published.
   */
  record(rec: SinkRecord, type: string, stateName: string | null, oversize: Oversize | null, gapNote: object | null): void;
  commit(endLsn: Lsn): void;
  /** A logical decoding message of ours other than a gap: the snapshot tap's (a request or a watermark). */
  message(ev: MessageEvent): void;
}

/** The settings the maker reads: all it needs, and plain data (the model thread gets a copy). */
export type ModelConfig = Pick<
  Config,
  | "airflowSchema"
  | "stateCacheSize"
  | "xcomKey"
  | "notificationRawMaxBytes"
  | "replicaIdentity"
  | "assetTopic"
  | "topic"
  | "topicTemplate"
  | "stateTopic"
  | "filters"
  | "deadLetterTopic"
  | "maxMessageBytes"
  | "schemaRegistryUrl"
>;

/**
 * The maker's settings out of the session's. A copy of the whole Config cannot cross to a worker
 * thread: the Kafka client adds functions to it (its SASL mechanism), and it holds secrets the
 * model has no use for.
 */
export function modelConfig(cfg: ModelConfig): ModelConfig {
  return {
    airflowSchema: cfg.airflowSchema,
    stateCacheSize: cfg.stateCacheSize,
    xcomKey: cfg.xcomKey,
    notificationRawMaxBytes: cfg.notificationRawMaxBytes,
    replicaIdentity: cfg.replicaIdentity,
    assetTopic: cfg.assetTopic,
    topic: cfg.topic,
    topicTemplate: cfg.topicTemplate,
    stateTopic: cfg.stateTopic,
    filters: cfg.filters,
    deadLetterTopic: cfg.deadLetterTopic,
    maxMessageBytes: cfg.maxMessageBytes,
    schemaRegistryUrl: cfg.schemaRegistryUrl,
  };
}

/** The decoder, the mapper and the router of a session, as its settings make them. */
export interface MakerModel {
  decoder: TransactionDecoder;
  mapper: AirflowMapper;
  router: TopicRouter;
}

/** A session's model, on whichever thread the maker runs. */
export function makerModel(cfg: ModelConfig, log: Logger): MakerModel {
  const mapper = new AirflowMapper(
    {
      schema: cfg.airflowSchema,
      cacheSize: cfg.stateCacheSize,
      xcomKey: cfg.xcomKey,
      notificationRawMaxBytes: cfg.notificationRawMaxBytes,
      replicaIdentity: cfg.replicaIdentity,
      assetEvents: cfg.assetTopic !== null,
    },
    log.child({ module: "airflow" }),
  );
  return { decoder: new TransactionDecoder(), mapper, router: new TopicRouter(cfg.topic, cfg.topicTemplate, cfg.assetTopic) };
}

/** The parts the maker works with; all of them live on the maker's thread. */
export interface MakerParts {
  decoder: TransactionDecoder;
  mapper: AirflowMapper;
  router: TopicRouter;
  /** EVENTSTREAM_CLOUDEVENTS=binary: each event record's CloudEvents headers; absent: none. */
  cloudEvents?: CloudEvents;
  /** The snapshot tap's view of the changes (src/snapshot/tap.ts); absent: none. */
  tap?: { changed(ev: ChangeEvent, published: boolean): void };
  /** Counters: changes decoded, events filtered out. */
  counts: { decoded(): void; filtered(type: string): void };
}

/**
 * The model half of the per-message loop: a pgoutput message in, records out, in WAL order:
 * decode, map to an event, filter, serialise, route, CloudEvents headers, state records, the
 * size check. Everything it needs is its own (the decoder's relations, the mapper's state), so it
 * can run on a thread of its own (EVENTSTREAM_MODEL_THREAD, thread.ts); what is Kafka's, the
 * acknowledgement's and the replay's is the other half's (handoff.ts).
 */
export class RecordMaker {
  /** The transaction being read; null between transactions. */
  private tx: TxContext | null = null;
  /** The current-state topic's records of each event (null: no state topic). */
  private readonly states: StateRecords | null;
  /** EVENTSTREAM_INCLUDE_DAGS and the like; null: every event is published. */
  private readonly filter: EventFilter | null;

  constructor(
    private readonly cfg: ModelConfig,
    private readonly log: Logger,
    private readonly parts: MakerParts,
    private readonly out: Made,
  ) {
    this.states = cfg.stateTopic === null ? null : new StateRecords(log);
    const filter = new EventFilter(cfg.filters);
    this.filter = filter.active ? filter : null;
  }

  /** Inside a transaction (a keepalive there must not move the acknowledged position). */
  get inTx(): boolean {
    return this.tx !== null;
  }

  push(payload: Buffer): void {
    const ev = this.parts.decoder.push(decodePgoutput(payload));
    if (ev === null) return;
    switch (ev.kind) {
      case "begin":
        this.tx = { xid: ev.xid, commitTime: ev.commitTime };
        this.out.begin(ev.commitMs);
        return;
      case "change":
        return this.change(ev);
      case "commit":
        this.tx = null;
        this.out.commit(ev.endLsn);
        return;
      case "message":
        if (ev.prefix === GAP_MESSAGE_PREFIX) return this.gap(ev);
        this.out.message(ev);
        return;
    }
  }

  private change(ev: ChangeEvent): void {
    const { parts } = this;
    parts.counts.decoded();
    // Mapped even when filtered out: filtering decides publication only, and the mapper's memory
    // (last states, run contexts, try numbers) must follow every change to judge the next one.
    const event = parts.mapper.map(ev, this.tx!);
    const admitted = event !== null && this.admitted(event);
    parts.tap?.changed(ev, admitted);
    // Not published: nothing in the transaction asks the ack rule to wait for Kafka, so a
    // transaction of filtered changes only is acknowledged like one of churn.
    if (!admitted) return;
    this.emit(event, ev.commitLsn, ev.index, true, null);
  }

  /**
   * A snapshot chunk's rows at its high watermark (the tap chose them), mapped at (commitLsn,
   * 0..n-1) in the transaction context `tx`; each admitted event handed on.
   */
  snapshotRows(relation: Relation, readAt: string, rows: readonly { row: Row }[], commitLsn: Lsn): void {
    const tx = { xid: 0, commitTime: readAt };
    let index = 0;
    for (const r of rows) {
      const change = { kind: "insert" as const, relation, row: r.row };
      // As for a change: the mapper remembers the row even when the filters leave it out.
      const event = this.parts.mapper.snapshot(change, { kind: "change", xid: 0, commitLsn, index, change }, tx);
      if (this.admitted(event)) this.emit(event, commitLsn, index, false, null);
      index++;
    }
  }

  /**
   * A gap recorded by EVENTSTREAM_ON_GAP=snapshot (src/recover-gap.ts): published as `stream_gap`
   * at the message's place in its transaction, in order with everything else.
   */
  private gap(ev: MessageEvent): void {
    if (ev.at === undefined || this.tx === null) return;
    const event = gapEvent(ev.content, ev.at, this.tx);
    if (event === null) {
      this.log.warn({ lsn: formatLsn(ev.lsn) }, "a gap message of another version or format was ignored");
      return;
    }
    this.parts.mapper.forgetStates();
    const note = {
      reason: event.reason,
      gapFrom: event.from_lsn,
      gapTo: event.to_lsn,
      snapshot: event.snapshot,
      position: event.source.position,
    };
    this.emit(event, ev.at.commitLsn, ev.at.index, false, note);
  }

  /** Whether the filters let the event through; one filtered out is counted. */
  private admitted(event: StreamEvent): boolean {
    if (this.filter === null || this.filter.admits(event)) return true;
    this.parts.counts.filtered(event.type);
    return false;
  }

  /** The event's record handed on; `deadLetterTopic`: a replay looks for an oversized one on the dead-letter topic. */
  private emit(event: StreamEvent, commitLsn: Lsn, index: number, deadLetterTopic: boolean, gapNote: object | null): void {
    const { cfg, parts } = this;
    const value = JSON.stringify(event);
    const route = parts.router.route(event);
    const key = route.key;
    const headers = parts.cloudEvents?.headersFor(event);
    const oversized = this.isOversized(value, key, headers);
    const oversize = oversized ? this.oversize(event, value, key, headers) : null;
    const topic = oversized && deadLetterTopic && cfg.deadLetterTopic !== null ? cfg.deadLetterTopic : route.topic;
    // An oversized event without a dead-letter topic stops the session: its state records are never counted.
    const state = oversize !== null && oversize.summary === null ? undefined : this.stateOf(event, value, oversized);
    // One object shape for every record (no spreads): this runs once per event.
    const rec: SinkRecord = { topic, key, allPartitions: route.allPartitions, value, seq: 0, commitLsn, index };
    if (state !== undefined) rec.state = state;
    if (headers !== undefined) rec.headers = headers;
    this.out.record(rec, event.type, "state" in event ? event.state : null, oversize, gapNote);
  }

  /** Over EVENTSTREAM_MAX_MESSAGE_BYTES as sent: value, key, the headers (CloudEvents) and a registry's 5-byte value header count. */
  private isOversized(value: string, key: string | null, headers?: CloudEventHeaders): boolean {
    const max = this.cfg.maxMessageBytes - (this.cfg.schemaRegistryUrl === null ? 0 : WIRE_HEADER_BYTES);
    // Kafka's limit is on the record's bytes. A UTF-16 unit is at most 3 bytes of UTF-8, so
    // most events (and their headers) skip the exact count.
    return (
      (value.length + (key?.length ?? 0)) * 3 + RECORD_OVERHEAD_BYTES + headersBytesBound(headers) > max &&
      recordBytes(value, key, headers) > max
    );
  }

  /**
   * The event's records on the current-state topic; undefined when none. Left out (counted, with
   * a warning) when over the size limit: the state topic takes no larger records than the event
   * topic, and a stand-in value (a summary, a tombstone) would claim a state the row is not in.
   */
  private stateOf(event: StreamEvent, value: string, eventOversized: boolean): StateRecord[] | undefined {
    const records = this.states?.of(event, value);
    if (records === undefined) return undefined;
    // The same bound as the event's own (isOversized): most records skip the exact byte count.
    let allFit = !eventOversized;
    for (let i = 0; allFit && i < records.length; i++) allFit = !this.isOversized(records[i]!.value ?? "", records[i]!.key);
    if (allFit) return records;
    const fit = eventOversized ? [] : records.filter((r) => !this.isOversized(r.value ?? "", r.key));
    if (fit.length < records.length) this.states!.leftOut(event, Math.max(...records.map((r) => recordBytes(r.value, r.key))));
    return fit.length > 0 ? fit : undefined;
  }

  /**
   * An event larger than Kafka will take is never dropped silently: where it is, for the error
   * that stops the session, or with a dead-letter topic the summary that goes there in its place.
   * The summary goes without CloudEvents headers: its value is not the event they describe.
   */
  private oversize(event: StreamEvent, value: string, key: string | null, headers: CloudEventHeaders | undefined): Oversize {
    const bytes = recordBytes(value, key, headers) + (this.cfg.schemaRegistryUrl === null ? 0 : WIRE_HEADER_BYTES);
    const where = {
      type: event.type,
      dag_id: "dag_id" in event ? event.dag_id : null,
      task_id: "task_id" in event ? event.task_id : null,
      run_id: "run_id" in event ? event.run_id : null,
      position: event.source.position,
    };
    if (this.cfg.deadLetterTopic === null) return { where, bytes, summary: null };
    const summary = JSON.stringify({
      reason: "message_too_large",
      bytes,
      limit: this.cfg.maxMessageBytes,
      ...where,
      source: event.source,
      head: value.slice(0, 1024),
    });
    return { where, bytes, summary };
  }
}
