/**
 * The daemon's Kafka producer written by hand, for the one request it sends: an idempotent
 * Produce (acks=all) of uncompressed record batches. The project adds a well-kept library before
 * writing its job by hand; here the library is wrong for the job. kafkajs (unmaintained) spent
 * ~2/3 of the daemon's CPU per row change on per-record work (bench/README.md, "The Kafka client"):
 * a zero-filled 512-byte Encoder per record grown by doubling and copied, CRC-32C byte by byte in
 * JS, per-message partition grouping copying arrays, long.js, and the garbage of it all (which also
 * held peak RSS above 150 MB); @platformatic/kafka 2.12.1 failed fencing and SASL_SSL produce here.
 * This module encodes each request into one reused buffer (writer.ts), CRC-32C natively
 * (@node-rs/crc32), with kafkajs's placement (partitioner.ts). Exactly-once stays on kafkajs's
 * transactional producer (EVENTSTREAM_KAFKA_PRODUCER, src/config/settings.ts).
 */
import type { Message, TopicMessages } from "kafkajs";
import type { Config } from "../../config.js";
import type { Logger } from "../../log.js";
import { createPlacement, type PartitionLeader } from "../partitioner.js";
import { API, BrokerConnection, beginFrame, endFrame, parseBroker } from "./connection.js";
import { KafkaConnectionError, KafkaProtocolError, isRetriable } from "./errors.js";
import { fetchMetadata } from "./metadata.js";
import { type Batch, encodeProduce, parseProduce } from "./produce.js";
import { Reader } from "./reader.js";
import { Writer } from "./writer.js";

const CONNECT_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** Retries of one sendBatch (or connect): ~1 min in all, backoff 300 ms doubling to 10 s, as client.ts's BOUNDED_RETRY. */
const RETRY_WINDOW_MS = 60_000;
const BACKOFF_FIRST_MS = 300;
const BACKOFF_MAX_MS = 10_000;

export interface WireProducerOptions {
  /** Tests: keep the last Produce request so resendLastRequest() can send the very same bytes again. */
  keepLastRequest?: boolean;
  /** Tests: a shorter retry window than ~1 min. */
  retryWindowMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class WireProducer {
  private readonly w = new Writer();
  private readonly place = createPlacement();
  private readonly topics = new Map<string, PartitionLeader[]>();
  private readonly brokers = new Map<number, { host: string; port: number }>();
  private readonly leaders = new Map<number, Promise<BrokerConnection>>();
  /** Next sequence number per topic, per partition. */
  private readonly sequences = new Map<string, number[]>();
  private bootstrap: BrokerConnection | null = null;
  private producerId = -1n;
  private producerEpoch = -1;
  private broken: Error | null = null;
  private lastRequest: { conn: BrokerConnection; frame: Buffer; batches: Batch[] } | null = null;

  constructor(
    private readonly kafka: Config["kafka"],
    private readonly log: Logger,
    private readonly options: WireProducerOptions = {},
  ) {}

  /** Connects to a bootstrap broker and gets a producer id and epoch (InitProducerId, no transactional id). */
  async connect(): Promise<void> {
    await this.retrying("connecting the producer", async () => {
      const conn = await this.anyConnection();
      const version = conn.versions.InitProducerId;
      const w = new Writer(128);
      const start = beginFrame(w, API.InitProducerId, version, this.kafka.clientId);
      w.string(null); // transactional_id: none, an idempotent producer
      w.int32(60_000); // transaction_timeout_ms (unused without a transactional id)
      endFrame(w, start);
      const r = new Reader(await conn.request(w.finish()));
      r.int32(); // throttle_time_ms
      const error = r.int16();
      if (error !== 0) throw new KafkaProtocolError(error, `InitProducerId from Kafka broker ${conn.name}`);
      this.producerId = r.int64();
      this.producerEpoch = r.int16();
    });
    this.sequences.clear();
    this.broken = null;
    this.log.info({ producerId: this.producerId.toString(), epoch: this.producerEpoch }, "Kafka producer: wire (idempotent)");
  }

  async disconnect(): Promise<void> {
    this.bootstrap?.close();
    this.bootstrap = null;
    for (const c of this.leaders.values()) void c.then((conn) => conn.close()).catch(() => undefined);
    this.leaders.clear();
    this.producerId = -1n;
  }

  /**
   * Writes the messages, each partition's in the order given in ONE record batch, partitions of
   * different leaders in parallel; resolves when Kafka acknowledged all of them (acks=all).
   * Retriable failures resend the same encoded batches (same producer id, epoch and sequence: the
   * broker drops a copy it already has) to the partition's current leader for ~1 min; anything
   * else, or running out of time, throws and leaves the producer broken (the session restarts).
   */
  async sendBatch({ topicMessages, acks }: { topicMessages: TopicMessages[]; acks?: number }): Promise<void> {
    if (acks !== undefined && acks !== -1) throw new Error(`the wire producer sends with acks=-1 (all) only, not ${acks}`);
    if (this.broken !== null) throw new Error(`the Kafka producer failed earlier (${this.broken.message})`, { cause: this.broken });
    if (this.producerId < 0n) throw new Error("the Kafka producer is not connected");
    let pending: Batch[] | null = null;
    await this.retrying("producing to Kafka", async (attempt) => {
      const names = [...new Set(topicMessages.map((t) => t.topic))];
      const missing = attempt > 0 ? names : names.filter((t) => !this.topics.has(t));
      if (missing.length > 0) await this.refreshMetadata(missing);
      if (pending === null) this.checkPlaceable(names);
      pending ??= this.batches(topicMessages);
      pending = await this.produceOnce(pending);
      if (pending.length > 0) throw pending[0]!.error;
    });
  }

  /** Tests: sends the last Produce request's bytes again over the same connection; resolves with each partition's error code. */
  async resendLastRequest(): Promise<number[]> {
    const last = this.lastRequest;
    if (last === null) throw new Error("no request kept (keepLastRequest)");
    const copy = Buffer.from(last.frame);
    return parseProduce(await last.conn.request(copy), last.conn.versions.Produce, last.batches).map((b) => b.code);
  }

  /** Runs `attempt` until it resolves; retriable errors again after a backoff, for the retry window. */
  private async retrying(what: string, attempt: (n: number) => Promise<void>): Promise<void> {
    const deadline = Date.now() + (this.options.retryWindowMs ?? RETRY_WINDOW_MS);
    for (let n = 0; ; n++) {
      try {
        await attempt(n);
        return;
      } catch (e: unknown) {
        const err = e instanceof Error ? e : new Error(String(e));
        if (!isRetriable(err) || Date.now() >= deadline) {
          this.broken = err;
          throw err;
        }
        const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** n, Math.max(0, deadline - Date.now()));
        this.log.debug({ err: err.message, attempt: n + 1, backoffMs: backoff }, `${what}: retrying`);
        await sleep(backoff);
      }
    }
  }

  /**
   * A topic just created can be listed with no partitions yet (or not all of them): placing by a
   * key needs the full count, so that is retried (with fresh metadata) like a missing leader.
   */
  private checkPlaceable(names: string[]): void {
    for (const name of names) {
      const partitions = this.topics.get(name)!;
      let complete = partitions.length > 0;
      for (let i = 0; complete && i < partitions.length; i++) complete = partitions[i] !== undefined;
      if (!complete) throw new KafkaProtocolError(5, `Metadata for topic ${name}`, "its partitions are not all listed yet");
    }
  }

  /** Places every message and cuts one batch per partition, with its base sequence number (taken now, once). */
  private batches(topicMessages: TopicMessages[]): Batch[] {
    const byPartition = new Map<string, Map<number, Message[]>>();
    for (const { topic, messages } of topicMessages) {
      const partitions = this.topics.get(topic)!;
      let mine = byPartition.get(topic);
      if (mine === undefined) byPartition.set(topic, (mine = new Map()));
      for (const m of messages) {
        const p = this.place(topic, partitions, m.key, m.partition);
        const list = mine.get(p);
        if (list === undefined) mine.set(p, [m]);
        else list.push(m);
      }
    }
    const out: Batch[] = [];
    for (const [topic, parts] of byPartition) {
      let seqs = this.sequences.get(topic);
      if (seqs === undefined) this.sequences.set(topic, (seqs = []));
      for (const [partition, messages] of parts) {
        const baseSequence = seqs[partition] ?? 0;
        // int32 sequence numbers wrap to 0 after 2^31-1, as the Java client's incrementSequence.
        seqs[partition] = (baseSequence + messages.length) % 0x8000_0000;
        out.push({ topic, partition, messages, baseSequence, bytes: null, code: 0, error: null });
      }
    }
    return out;
  }

  /** One round: each leader's partitions in one request, leaders in parallel; returns the batches to retry. */
  private async produceOnce(batches: Batch[]): Promise<Batch[]> {
    const byLeader = new Map<number, Batch[]>();
    const retry: Batch[] = [];
    for (const b of batches) {
      const leader = this.topics.get(b.topic)?.[b.partition]?.leader ?? -1;
      if (leader < 0 || !this.brokers.has(leader)) {
        b.error = new KafkaProtocolError(5, `producing to ${b.topic}[${b.partition}]`);
        retry.push(b);
        continue;
      }
      const list = byLeader.get(leader);
      if (list === undefined) byLeader.set(leader, [b]);
      else list.push(b);
    }
    const rounds = await Promise.all([...byLeader].map(([leader, list]) => this.produceTo(leader, list)));
    for (const done of rounds) {
      for (const b of done) {
        if (b.error === null) continue;
        if (!isRetriable(b.error)) throw b.error;
        retry.push(b);
      }
    }
    return retry;
  }

  /** One Produce request to one leader; every batch comes back with its error (null: written or already there). */
  private async produceTo(leader: number, batches: Batch[]): Promise<Batch[]> {
    try {
      const conn = await this.leaderConnection(leader);
      const producer = { producerId: this.producerId, producerEpoch: this.producerEpoch };
      const frame = encodeProduce(this.w, conn.versions.Produce, this.kafka.clientId, REQUEST_TIMEOUT_MS - 5_000, producer, batches);
      if (this.options.keepLastRequest === true) this.lastRequest = { conn, frame: Buffer.from(frame), batches };
      parseProduce(await conn.request(frame), conn.versions.Produce, batches);
    } catch (e: unknown) {
      const err = e instanceof Error ? e : new Error(String(e));
      for (const b of batches) b.error = err;
      if (err instanceof KafkaConnectionError) this.leaders.delete(leader);
    }
    return batches;
  }

  private async refreshMetadata(topics: string[]): Promise<void> {
    const conn = await this.anyConnection();
    let view;
    try {
      view = await fetchMetadata(conn, this.kafka.clientId, topics);
    } catch (e: unknown) {
      if (e instanceof KafkaConnectionError && conn === this.bootstrap) this.bootstrap = null;
      throw e;
    }
    for (const [id, addr] of view.brokers) {
      const known = this.brokers.get(id);
      // A broker now at another address: its connection is to the old one.
      if (known !== undefined && (known.host !== addr.host || known.port !== addr.port)) {
        void this.leaders
          .get(id)
          ?.then((c) => c.close())
          .catch(() => undefined);
        this.leaders.delete(id);
      }
      this.brokers.set(id, addr);
    }
    for (const [name, partitions] of view.topics) this.topics.set(name, partitions);
  }

  /** The connection for metadata and InitProducerId: the first bootstrap broker that answers. */
  private async anyConnection(): Promise<BrokerConnection> {
    if (this.bootstrap !== null && !this.bootstrap.closed) return this.bootstrap;
    this.bootstrap = null;
    let last: unknown = new KafkaConnectionError("no Kafka broker configured");
    for (const broker of this.kafka.brokers) {
      const conn = this.newConnection(parseBroker(broker));
      try {
        await conn.open();
        this.bootstrap = conn;
        return conn;
      } catch (e: unknown) {
        if (!isRetriable(e)) throw e;
        last = e;
      }
    }
    throw last;
  }

  /** One connection per leader, opened on first use and again after it closed. */
  private leaderConnection(nodeId: number): Promise<BrokerConnection> {
    const known = this.leaders.get(nodeId);
    if (known !== undefined) {
      return known.then((c) => {
        if (!c.closed) return c;
        if (this.leaders.get(nodeId) === known) this.leaders.delete(nodeId);
        return this.leaderConnection(nodeId);
      });
    }
    const conn = this.newConnection(this.brokers.get(nodeId)!);
    const opened = conn.open().then(() => conn);
    this.leaders.set(nodeId, opened);
    opened.catch(() => {
      if (this.leaders.get(nodeId) === opened) this.leaders.delete(nodeId);
    });
    return opened;
  }

  private newConnection(addr: { host: string; port: number }): BrokerConnection {
    const { clientId, ssl, sasl } = this.kafka;
    return new BrokerConnection({
      ...addr,
      clientId,
      ssl,
      sasl,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
    });
  }
}
