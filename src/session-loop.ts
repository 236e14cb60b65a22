import type { Config } from "./config.js";
import type { AckRule } from "./checkpoint/ack.js";
import { comparePositions, formatLsn, formatPosition, type Position } from "./lsn.js";
import type { ReplayFilter } from "./checkpoint/replay.js";
import { decodePgoutput } from "./decode/pgoutput.js";
import type { TransactionDecoder } from "./decode/transactions.js";
import type { TxEvent } from "./decode/types.js";
import type { Lsn } from "./lsn.js";
import type { AirflowMapper, TxContext } from "./airflow/mapper.js";
import type { StreamEvent } from "./airflow/events.js";
import { EventFilter } from "./airflow/filter.js";
import { headersBytesBound, RECORD_OVERHEAD_BYTES, recordBytes } from "./sink/batch.js";
import type { CloudEventHeaders, CloudEvents } from "./sink/cloudevents.js";
import { WIRE_HEADER_BYTES } from "./sink/wire-format.js";
import type { SinkRecord } from "./sink/kafka.js";
import { StateRecords, type StateRecord } from "./sink/state-topic.js";
import type { Route, TopicRouter } from "./sink/routing.js";
import type { SnapshotTap } from "./snapshot/tap.js";
import type { StreamHandlers } from "./source/replication.js";
import { MessageTooLargeError } from "./errors.js";
import type { Lifecycle } from "./lifecycle.js";
import { GAP_MESSAGE_PREFIX, gapEvent } from "./checkpoint/gap-event.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./operate/metrics.js";

/** What the loop hands each message through. */
export interface LoopParts {
  decoder: TransactionDecoder;
  mapper: AirflowMapper;
  router: TopicRouter;
  sink: { push(rec: SinkRecord): void };
  ack: AckRule;
  life: Lifecycle;
  /** Snapshots (src/snapshot/): told of every change, handed our logical decoding messages; absent: none. */
  snapshots?: SnapshotTap;
  metrics: Metrics;
  /** EVENTSTREAM_CLOUDEVENTS=binary: each event record's CloudEvents headers; absent: none. */
  cloudEvents?: CloudEvents;
}

/**
 * The per-message loop: each pgoutput message is decoded, mapped to an event, routed and handed to
 * the sink, in WAL order; commits and keepalives go to the ack rule. Synchronous: the stream calls
 * it for each message in turn.
 */
export class MessageLoop implements StreamHandlers {
  /** The transaction being read; null between transactions. */
  private tx: TxContext | null = null;
  private txPublished = false;
  /** The commit time of the transaction being read, in ms, for the commit → ack histogram. */
  private commitMs = 0;
  /** Changes whose events are in Kafka already (see ReplayFilter): mapped (the mapper's state must stay exact) but not published. null: none. */
  private replay: ReplayFilter | null = null;
  private replayEnd: Position | null = null;
  private skipped = 0;
  private deadLettered = 0;
  /** The seq of the last record handed to the sink; 0: none yet. */
  private lastSeq = 0;
  /** The current-state topic's records of each event (null: no state topic). */
  private readonly states: StateRecords | null;
  /** EVENTSTREAM_INCLUDE_DAGS and the like; null: every event is published. */
  private readonly filter: EventFilter | null;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly parts: LoopParts,
  ) {
    this.states = cfg.stateTopic === null ? null : new StateRecords(log);
    const filter = new EventFilter(cfg.filters);
    this.filter = filter.active ? filter : null;
  }

  /** At start: skip the replayed changes `replay` covers (null: publish everything). */
  skipCovered(replay: ReplayFilter | null): void {
    this.replay = replay;
    this.replayEnd = replay?.last() ?? null;
  }

  onData(payload: Buffer): void {
    if (this.parts.life.halted) return;
    const ev = this.parts.decoder.push(decodePgoutput(payload));
    if (ev === null) return;
    switch (ev.kind) {
      case "begin":
        this.tx = { xid: ev.xid, commitTime: ev.commitTime };
        this.commitMs = this.parts.metrics.began(ev.commitMs);
        this.txPublished = false;
        return;
      case "change":
        return this.change(ev);
      case "commit":
        this.tx = null;
        this.parts.ack.commit(ev.endLsn, this.txPublished);
        return;
      case "message":
        return this.message(ev);
    }
  }

  onKeepalive(walEnd: Lsn, replyRequested: boolean): void {
    this.parts.ack.keepalive(walEnd, this.tx !== null, replyRequested);
  }

  private change(ev: Extract<TxEvent, { kind: "change" }>): void {
    const { cfg, parts } = this;
    parts.metrics.decoded();
    // Mapped even when filtered out: filtering decides publication only, and the mapper's memory
    // (last states, run contexts, try numbers) must follow every change to judge the next one.
    const event = parts.mapper.map(ev, this.tx!);
    const admitted = event !== null && this.admitted(event);
    parts.snapshots?.changed(ev, admitted);
    // Not published: nothing in the transaction asks the ack rule to wait for Kafka, so a
    // transaction of filtered changes only is acknowledged like one of churn.
    if (!admitted) return;
    const value = JSON.stringify(event);
    const route = parts.router.route(event);
    const key = route.key;
    const headers = parts.cloudEvents?.headersFor(event);
    const oversized = this.isOversized(value, key, headers);
    const topic = oversized && cfg.deadLetterTopic !== null ? cfg.deadLetterTopic : route.topic;
    if (this.covered(topic, key, { commitLsn: ev.commitLsn, index: ev.index }, event)) {
      if (cfg.delivery === "at-least-once") this.resendState(event, value, oversized, ev.commitLsn, ev.index);
      return;
    }
    this.txPublished = true;
    this.publish(event, value, route, oversized, ev.commitLsn, ev.index, headers);
  }

  /** Whether the filters let the event through; one filtered out is counted. */
  private admitted(event: StreamEvent): boolean {
    if (this.filter === null || this.filter.admits(event)) return true;
    this.parts.metrics.filtered(event.type);
    return false;
  }

  /** True when the replay finds the event at `pos` in Kafka already (see ReplayFilter): it is not published again. */
  private covered(topic: string, key: string | null, pos: Position, event: StreamEvent): boolean {
    if (this.replay === null) return false;
    if (this.replay.covers(topic, key, pos)) {
      this.skipped++;
      return true;
    }
    // Positions only grow along the stream: past the highest one Kafka holds, nothing is covered.
    if (this.replayEnd === null || comparePositions(pos, this.replayEnd) > 0) {
      this.log.info(
        { skipped: this.skipped, inKafkaUpTo: this.replayEnd && formatPosition(this.replayEnd), first: event.source.position },
        this.cfg.delivery === "exactly-once"
          ? "exactly-once: past the checkpoint; publishing"
          : "replay: past what Kafka holds; publishing everything from here",
      );
      this.replay = null;
    }
    return false;
  }

  /**
   * A gap recorded by EVENTSTREAM_ON_GAP=snapshot (src/recover-gap.ts): published as `stream_gap`
   * at the message's place in its transaction, in order with everything else.
   */
  private gap(ev: Extract<TxEvent, { kind: "message" }>): void {
    if (ev.at === undefined || this.tx === null) return;
    const event = gapEvent(ev.content, ev.at, this.tx);
    if (event === null) {
      this.log.warn({ lsn: formatLsn(ev.lsn) }, "a gap message of another version or format was ignored");
      return;
    }
    this.parts.mapper.forgetStates();
    const value = JSON.stringify(event);
    const route = this.parts.router.route(event);
    if (this.covered(route.topic, route.key, ev.at, event)) return;
    this.log.warn(
      { reason: event.reason, gapFrom: event.from_lsn, gapTo: event.to_lsn, snapshot: event.snapshot, position: event.source.position },
      "publishing stream_gap: events between these LSNs were lost; the snapshot requested with it follows",
    );
    this.txPublished = true;
    const headers = this.parts.cloudEvents?.headersFor(event);
    this.publish(event, value, route, this.isOversized(value, route.key, headers), ev.at.commitLsn, ev.at.index, headers);
  }

  private publish(
    event: StreamEvent,
    value: string,
    route: Route,
    oversized: boolean,
    commitLsn: Lsn,
    index: number,
    headers: CloudEventHeaders | undefined,
  ): void {
    if (oversized) {
      this.oversized(event, value, route.key, commitLsn, index, headers);
      this.stateOf(event, value, true);
    } else {
      const state = this.stateOf(event, value, false);
      this.lastSeq = this.parts.ack.next();
      // One object shape for every record (no spreads): this runs once per event.
      const rec: SinkRecord = {
        topic: route.topic,
        key: route.key,
        allPartitions: route.allPartitions,
        value,
        seq: this.lastSeq,
        commitLsn,
        index,
      };
      if (state !== undefined) rec.state = state;
      if (headers !== undefined) rec.headers = headers;
      this.parts.sink.push(rec);
      this.parts.metrics.pushed(event.type, "state" in event ? event.state : null, this.lastSeq, this.commitMs);
    }
    this.parts.ack.pauseIfFull();
  }

  /**
   * A logical decoding message of ours. At a snapshot chunk's high watermark its rows are published
   * in order at (watermark LSN - 1, 0..n-1), like a transaction's changes at their commit LSN, and the
   * watermark is a commit for the ack rule: PostgreSQL hears of nothing past it before Kafka has
   * every row (keepalives after it are queued behind these events).
   */
  private message(ev: Extract<TxEvent, { kind: "message" }>): void {
    if (ev.prefix === GAP_MESSAGE_PREFIX) return this.gap(ev);
    const at = this.parts.snapshots?.message(ev) ?? null;
    if (at === null) return;
    const { parts } = this;
    const before = this.lastSeq;
    const tx = { xid: 0, commitTime: at.read.readAt };
    this.commitMs = Date.parse(at.read.readAt);
    // The message's LSN is where its record ends, which is where the next record starts: maybe the
    // commit record of the next transaction, whose events would then share these positions. One
    // byte before lies inside the watermark's own record: after every commit before it, before
    // every commit after it, and no transaction's.
    const commitLsn = at.lsn - 1n;
    let index = 0;
    let published = 0;
    for (const r of at.rows) {
      const change = { kind: "insert" as const, relation: at.read.relation, row: r.row };
      // As for a change: the mapper remembers the row even when the filters leave it out.
      const event = parts.mapper.snapshot(change, { kind: "change", xid: 0, commitLsn, index, change }, tx);
      if (this.admitted(event)) {
        const value = JSON.stringify(event);
        const route = parts.router.route(event);
        const headers = parts.cloudEvents?.headersFor(event);
        this.publish(event, value, route, this.isOversized(value, route.key, headers), commitLsn, index, headers);
        published++;
      }
      index++;
    }
    parts.ack.commit(at.lsn, published > 0);
    at.chunk.settle({ kind: "published", events: published, lastSeq: this.lastSeq === before ? null : this.lastSeq });
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
   * At-least-once replay: the event of a covered change is in Kafka, but its state records may not
   * be. A produce request is not atomic across partitions, and the state records go to other
   * partitions than their event; the request lost with a crash may have written the event's
   * partition and not theirs. So they are sent again, alone on the state topic. Why the state
   * topic then ends right, for every key K:
   * - every change before the slot's confirmed position had its event and state records in
   *   requests Kafka acknowledged whole (PostgreSQL is told only then), and is not replayed;
   * - every change from that position on is replayed, and each one's state records pushed again:
   *   covered ones here, the others with their event. Pushes follow WAL order, K's records all go
   *   to one partition (the key is K), and the publisher sends one request at a time, idempotent,
   *   in push order. So, once the replay passes K's latest change, K's last record in the
   *   partition is that change's, whatever an earlier session had written: last-write-wins, as
   *   compaction and applyStateRecord fold it, gives K's latest state. A crash during the replay
   *   starts the same argument over from the (possibly further) confirmed position.
   * Until the replay passes it, K's last record may be an older one re-sent (the state goes back
   * by at most the unacknowledged tail, then forward). Exactly-once needs none of this: a covered
   * event's state records were committed in its transaction.
   */
  private resendState(event: StreamEvent, value: string, oversized: boolean, commitLsn: Lsn, index: number): void {
    const topic = this.cfg.stateTopic;
    const state = this.stateOf(event, value, oversized);
    if (topic === null || state === undefined) return;
    this.txPublished = true;
    for (const st of state) this.parts.sink.push({ topic, key: st.key, value: st.value, seq: this.parts.ack.next(), commitLsn, index });
    this.parts.ack.pauseIfFull();
  }

  /**
   * An event larger than Kafka will take is never dropped silently: without a dead-letter topic the
   * session stops (nothing after it is acknowledged) with an error naming the row; with one, a
   * summary goes there in the event's place, in order, and is counted.
   */
  private oversized(
    event: StreamEvent,
    value: string,
    key: string | null,
    commitLsn: Lsn,
    index: number,
    headers: CloudEventHeaders | undefined,
  ): void {
    // The summary goes without CloudEvents headers: its value is not the event they describe.
    const bytes = recordBytes(value, key, headers) + (this.cfg.schemaRegistryUrl === null ? 0 : WIRE_HEADER_BYTES);
    const where = {
      type: event.type,
      dag_id: "dag_id" in event ? event.dag_id : null,
      task_id: "task_id" in event ? event.task_id : null,
      run_id: "run_id" in event ? event.run_id : null,
      position: event.source.position,
    };
    const dlq = this.cfg.deadLetterTopic;
    this.parts.metrics.oversized.inc();
    if (dlq === null) {
      this.parts.life.halted = true;
      throw new MessageTooLargeError(
        `the ${where.type} event of dag_id=${where.dag_id} task_id=${where.task_id} run_id=${where.run_id} (position ${where.position}) is ${bytes} bytes, over EVENTSTREAM_MAX_MESSAGE_BYTES=${this.cfg.maxMessageBytes}. Raise max.message.bytes on the topic and EVENTSTREAM_MAX_MESSAGE_BYTES, or set EVENTSTREAM_DEAD_LETTER_TOPIC to divert such events; nothing after it has been acknowledged`,
      );
    }
    this.deadLettered++;
    this.log.warn(
      { ...where, bytes, topic: dlq, dead_lettered_total: this.deadLettered },
      "event over the size limit sent to the dead-letter topic",
    );
    const summary = JSON.stringify({
      reason: "message_too_large",
      bytes,
      limit: this.cfg.maxMessageBytes,
      ...where,
      source: event.source,
      head: value.slice(0, 1024),
    });
    this.lastSeq = this.parts.ack.next();
    this.parts.sink.push({ topic: dlq, key: where.dag_id, value: summary, seq: this.lastSeq, commitLsn, index });
  }
}
