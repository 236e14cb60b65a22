import type { Admin, Consumer, Kafka } from "kafkajs";
import { StreamEvent } from "../airflow/events.js";
import { findOffsets, parseTarget } from "../backfill/offsets.js";
import { templatePattern } from "../backfill/window.js";
import type { Config } from "../config.js";
import { describeError } from "../errors.js";
import type { Logger } from "../log.js";
import { privateReader } from "../sink/reader.js";
import { readCurrentState } from "../sink/state-reader.js";
import { readToEnd } from "../sink/read-to-end.js";
import { parseJson } from "./insights/partition.js";
import { InsightEvent } from "./schemas.js";
import { lastClears, type TaskCleared } from "./view/rerun.js";
import type { ApplyContext, RunStore } from "./view/store.js";
import { eventJsonText } from "../sink/wire-format.js";

/** Every event applied, with its JSON as published (what SSE sends). */
export type EventListener = (event: StreamEvent, ctx: ApplyContext, json: string) => void;

export type FollowPhase = "starting" | "bootstrapping" | "catching_up" | "following" | "failed";

/** How often the per-DAG layout looks for topics of new DAGs. */
const TOPIC_RESCAN_MS = 30_000;

/**
 * Reads Kafka into the view. Every replica holds the whole view, so each reads every partition of
 * the event topics: kafkajs has no assign(), so the reader is a consumer in a group of its own
 * (privateReader: a unique group id per process, never committing) that subscribes to every topic
 * and seeks each partition to where the view needs it. The alternative, admin metadata plus raw
 * fetch requests, would re-implement what the consumer does (leader changes, read_committed
 * filtering of aborted transactions) for no gain.
 *
 * Start: the current-state topic read to its end (readCurrentState: the latest event of every task
 * instance and run, as of a position), then the event topics from the offsets of that position
 * (findOffsets) onward. Events at the position itself are read again; the view skips what it holds.
 *
 * Topic per DAG (EVENTSTREAM_TOPIC_TEMPLATE): the topics are listed with the admin and matched with
 * the template's pattern, at start and every 30 s (also with one topic, for a service started before
 * the daemon created it); kafkajs resolves a regex subscription only once (at subscribe), so a new
 * topic means a new consumer, started from the offsets the old one reached and from the beginning of
 * the new topics.
 */
export class Follower {
  phase: FollowPhase = "starting";
  failure: string | null = null;
  /** The position the event topics are read from (after the state's): "" when from their beginning; null before start. */
  from: string | null = null;
  /** Messages that were not events (not JSON, or not the events' schema): skipped. */
  invalid = 0;
  private readonly next = new Map<string, bigint>();
  private readonly listeners = new Set<EventListener>();
  private consumer: { consumer: Consumer; close: () => Promise<void> } | undefined;
  private topics: string[] = [];
  private rescan: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly cfg: Config,
    private readonly kafka: Kafka,
    private readonly admin: Admin,
    private readonly store: RunStore,
    private readonly log: Logger,
  ) {}

  onEvent(l: EventListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Bootstraps, then follows in the background; resolves once the reading consumer runs. */
  async start(): Promise<void> {
    this.phase = "bootstrapping";
    const position = await this.bootstrap();
    this.from = position ?? "";
    this.topics = await this.eventTopics();
    const found =
      position === null ? null : await findOffsets(this.kafka, this.admin, this.topics, parseTarget(position), this.cfg.kafka.clientId);
    for (const topic of this.topics) for (const s of found?.get(topic) ?? []) this.next.set(`${topic}\u0000${s.partition}`, s.offset);
    this.phase = "catching_up";
    await this.run();
    this.rescan = setInterval(() => void this.checkTopics(), TOPIC_RESCAN_MS);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.rescan);
    await this.consumer?.close();
  }

  private async bootstrap(): Promise<string | null> {
    const topic = this.cfg.stateTopic;
    if (topic === null || !(await this.admin.listTopics()).includes(topic)) {
      this.log.warn({ topic }, "no current-state topic: the view is built from the event topics' beginning");
      return null;
    }
    const started = Date.now();
    const state = await readCurrentState(this.kafka, topic, { clientId: this.cfg.kafka.clientId });
    // Position order, so a run's own record and its task instances' fold as they happened.
    const entries = [...state.entries.values()].sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
    for (const entry of entries) {
      const parsed = StreamEvent.safeParse(entry.event);
      if (!parsed.success) {
        this.invalid++;
        continue;
      }
      const e = parsed.data;
      this.store.apply(e, { position: e.source.position, commitTime: e.source.commit_time, partition: -1, offset: "-1", bootstrap: true });
    }
    const cleared = await this.restoreClears();
    const size = this.store.size();
    this.log.info(
      { topic, records: state.records, entries: entries.length, position: state.position, cleared, ...size, ms: Date.now() - started },
      "view bootstrapped from the current-state topic",
    );
    return state.position;
  }

  /**
   * The task_cleared on the insights topic, into the view (RunStore.restoreClear): the clears the
   * state topic no longer shows. Without insights (off, or the topic not there yet) there are none
   * to read, and a failed read only leaves runs' rerun_tasks shorter; neither stops the start.
   */
  private async restoreClears(): Promise<number> {
    const topic = this.cfg.insights.topic;
    if (!this.cfg.insights.enabled || !(await this.admin.listTopics()).includes(topic)) return 0;
    const clears: TaskCleared[] = [];
    try {
      const opts = { group: `${this.cfg.kafka.clientId}.serve-clears`, what: "the insights topic", admin: this.admin };
      await readToEnd(this.kafka, topic, opts, (_p, m) => {
        const r = InsightEvent.safeParse(parseJson(m.value));
        if (r.success && r.data.type === "task_cleared") clears.push(r.data);
      });
    } catch (e: unknown) {
      this.log.warn(
        { topic, err: describeError(e) },
        "reading the clears on the insights topic failed: runs cleared before the start may name fewer rerun tasks",
      );
    }
    for (const { clear: c, reranBefore } of lastClears(clears))
      this.store.restoreClear(c.dag_id, c.run_id, c.task_id, c.map_index, c.caused_by.position, reranBefore);
    return clears.length;
  }

  private async eventTopics(): Promise<string[]> {
    const existing = await this.admin.listTopics();
    const skip = new Set([this.cfg.checkpointTopic, this.cfg.stateTopic, this.cfg.deadLetterTopic]);
    const pattern = this.cfg.topicTemplate === null ? null : templatePattern(this.cfg.topicTemplate);
    return existing.filter((t) => !skip.has(t) && (t === this.cfg.topic || (pattern?.test(t) ?? false))).sort();
  }

  private async checkTopics(): Promise<void> {
    if (this.stopped) return;
    try {
      const now = await this.eventTopics();
      if (now.every((t) => this.topics.includes(t))) return;
      this.log.info({ added: now.filter((t) => !this.topics.includes(t)) }, "new event topics: following them from their beginning");
      this.topics = now;
      await this.consumer?.close();
      await this.run();
    } catch (e: unknown) {
      this.log.warn({ err: describeError(e) }, "listing the DAG topics failed; trying again later");
    }
  }

  private async run(): Promise<void> {
    if (this.topics.length === 0) {
      this.phase = "following";
      return;
    }
    const reader = privateReader(this.kafka, `${this.cfg.kafka.clientId}.serve`, () => undefined);
    this.consumer = reader;
    const { consumer } = reader;
    const ends = await this.endOffsets();
    const behind = new Set([...ends].filter(([id, end]) => (this.next.get(id) ?? 0n) < end).map(([id]) => id));
    const caughtUp = (id: string, next: bigint) => {
      if (behind.has(id) && next >= ends.get(id)!) behind.delete(id);
      if (behind.size === 0 && this.phase === "catching_up") {
        this.phase = "following";
        this.log.info(this.store.size(), "view caught up: following");
      }
    };
    caughtUp("", 0n);
    consumer.on(consumer.events.CRASH, (e) => {
      if (e.payload.restart || this.stopped) return;
      this.phase = "failed";
      this.failure = e.payload.error.message;
      this.log.error({ err: describeError(e.payload.error) }, "reading the event topics failed");
    });
    consumer.on(consumer.events.END_BATCH_PROCESS, (e) => {
      if (e.payload.lastOffset !== null) caughtUp(`${e.payload.topic}\u0000${e.payload.partition}`, BigInt(e.payload.lastOffset) + 1n);
    });
    await consumer.connect();
    await consumer.subscribe({ topics: this.topics, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic, partition, message }) => {
        const id = `${topic}\u0000${partition}`;
        this.next.set(id, BigInt(message.offset) + 1n);
        if (message.value !== null) this.handle(eventJsonText(message.value), partition, message.offset);
        caughtUp(id, BigInt(message.offset) + 1n);
      },
    });
    for (const id of ends.keys()) {
      const [topic, p] = id.split("\u0000") as [string, string];
      consumer.seek({ topic, partition: Number(p), offset: (this.next.get(id) ?? 0n).toString() });
    }
  }

  private handle(json: string, partition: number, offset: string): void {
    let parsed;
    try {
      parsed = StreamEvent.safeParse(JSON.parse(json));
    } catch {
      parsed = null;
    }
    if (parsed === null || !parsed.success) {
      this.invalid++;
      return;
    }
    const e = parsed.data;
    const ctx = { position: e.source.position, commitTime: e.source.commit_time, partition, offset, bootstrap: false };
    this.store.apply(e, ctx);
    for (const l of this.listeners) l(e, ctx, json);
  }

  private async endOffsets(): Promise<Map<string, bigint>> {
    const ends = new Map<string, bigint>();
    for (const topic of this.topics)
      for (const o of await this.admin.fetchTopicOffsets(topic)) ends.set(`${topic}\u0000${o.partition}`, BigInt(o.high));
    return ends;
  }
}
