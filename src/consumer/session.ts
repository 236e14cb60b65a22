import type { Admin, Consumer, EachMessagePayload } from "kafkajs";
import { StreamEvent } from "../airflow/events.js";
import { coerceError, describeError } from "../errors.js";
import type { Logger } from "../log.js";
import { readCurrentState, type CurrentState } from "../sink/state-reader.js";
import { bootstrapFromState } from "./bootstrap.js";
import type { EventConsumer } from "./consumer.js";
import { DagSequencer } from "./sequencer.js";
import { startOffset, type StartDeps } from "./start.js";
import type { BootstrapInfo, EventContext, RunOptions } from "./types.js";
import { parseEventValue } from "../sink/wire-format.js";

/** How often the group's offsets (a hint only) are committed at most. */
const COMMIT_EVERY_MS = 1_000;

/** The store key of events about no single DAG, per partition: they are in order with that partition only. */
export function partitionScope(topic: string, partition: number): string {
  // ":" is not legal in a topic name, nor "*" in a dag_id: no DAG ever has this key.
  return `*${topic}:${partition}`;
}

/** A partition's start given up because the group generation it began in is over. */
class Superseded extends Error {
  override name = "Superseded";
}

/** One run(): the per-partition starts of the current group generation, and the offsets to hint. */
/** Tries of a partition's start (its offsets, a bootstrap) on a retriable Kafka error, 0.5 s apart. */
const START_ATTEMPTS = 20;
const START_RETRY_MS = 500;

function isRetriable(e: unknown): boolean {
  return typeof e === "object" && e !== null && (e as { retriable?: unknown }).retriable === true;
}

export class Session {
  private readonly sequencer: DagSequencer;
  /** Per assigned partition of this generation, its start offset once decided (the partition is paused until then). */
  private readonly starts = new Map<string, Promise<bigint>>();
  private generation = 0;
  private readonly hint = new Map<string, { topic: string; partition: number; offset: string }>();
  private lastCommit = 0;
  private failure: Error | undefined;
  /** The state topic as read for this generation's bootstraps (read once, shared by its partitions). */
  private state: Promise<CurrentState> | undefined;

  constructor(
    private readonly c: EventConsumer,
    private readonly admin: Admin,
    private readonly consumer: Consumer,
    private readonly r: RunOptions,
    private readonly log: Logger,
  ) {
    this.sequencer = new DagSequencer(r.positions);
  }

  /** Runs the group member until stopped (`onStop` gets the way to stop it); `subscribed` false: nothing to read, only waits. */
  consume(subscribed: boolean, onStop: (stop: () => void) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const end = (e?: Error) => {
        if (!subscribed) return e ? reject(e) : resolve();
        void this.consumer.stop().then(() => (e ? reject(e) : resolve()), reject);
      };
      onStop(() => end());
      this.fail = (e) => {
        if (this.failure) return;
        this.failure = e;
        end(e);
      };
      if (!subscribed) return;
      // A new generation: partitions may have been elsewhere meanwhile, so their starts are
      // decided again and the DAGs' positions read again from the store.
      this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
        this.generation++;
        this.starts.clear();
        this.sequencer.forget();
        this.state = undefined;
        const assigned = Object.entries(e.payload.memberAssignment).map(([topic, partitions]) => ({ topic, partitions }));
        // Paused before the generation's first fetch (kafkajs emits this before it fetches), so no
        // record is handed over from the group's committed offset before the store's start is known.
        this.consumer.pause(assigned);
        for (const { topic, partitions } of assigned) for (const p of partitions) this.startPartition(topic, p);
      });
      this.consumer.on(this.consumer.events.CRASH, (e) => {
        if (!e.payload.restart) this.fail(coerceError(e.payload.error));
      });
      this.consumer
        .run({ autoCommit: false, partitionsConsumedConcurrently: this.c.concurrency, eachMessage: (p) => this.each(p) })
        .catch((e: unknown) => this.fail(coerceError(e)));
    });
  }

  private fail: (e: Error) => void = () => undefined;

  /** Decides where the partition starts (maybe bootstrapping its DAGs), seeks there and resumes it. */
  private startPartition(topic: string, partition: number, attempt = 1): void {
    const generation = this.generation;
    const start = startOffset(
      this.startDeps(topic, partition, () => generation === this.generation),
      topic,
      partition,
    );
    this.starts.set(`${topic}:${partition}`, start);
    start.then(
      (offset) => {
        if (generation !== this.generation || this.failure) return;
        try {
          this.consumer.seek({ topic, partition, offset: offset.toString() });
        } catch (e: unknown) {
          // kafkajs drops its group while it restarts after a crash (or stops): a seek then throws
          // "consumer#run must be called first". The partition stays paused; the rejoin that
          // follows assigns it again and decides its start anew. Thrown here it would be an
          // unhandled rejection, ending the process (seen with examples/consumer.ts).
          this.log.info(
            { topic, partition, error: coerceError(e).message },
            "partition start dropped: the consumer is rejoining its group",
          );
          return;
        }
        this.log.info({ topic, partition, offset: offset.toString() }, "partition assigned: reading from this offset");
        this.consumer.resume([{ topic, partitions: [partition] }]);
      },
      (e: unknown) => {
        if (e instanceof Superseded) return;
        // A topic created a moment ago (a DAG's first event, with topics per DAG) may have no leader
        // yet: "not the leader" is retriable, and failing the whole run over it would stop a
        // consumer that only started too early. Tried again for a while, as kafkajs does its own.
        if (isRetriable(e) && attempt < START_ATTEMPTS && generation === this.generation && !this.failure) {
          this.log.info({ topic, partition, attempt, error: coerceError(e).message }, "partition start failed; trying again");
          setTimeout(() => {
            if (generation === this.generation && !this.failure) this.startPartition(topic, partition, attempt + 1);
          }, START_RETRY_MS).unref();
          return;
        }
        this.fail(coerceError(e));
      },
    );
  }

  private async each({ topic, partition, message }: EachMessagePayload): Promise<void> {
    if (this.failure) return;
    try {
      const tp = `${topic}:${partition}`;
      const start = this.starts.get(tp);
      if (start === undefined) {
        // Not expected: a partition whose assignment was not seen. Decided now, like the others.
        this.consumer.pause([{ topic, partitions: [partition] }]);
        this.startPartition(topic, partition);
        return;
      }
      // The partition was paused until its seek, so only records at or after the start come; this
      // skips what a seek before them (a start past the committed offset) would have skipped.
      if (BigInt(message.offset) < (await start)) return;
      await this.handle(topic, partition, message.offset, message.value);
      this.hint.set(tp, { topic, partition, offset: (BigInt(message.offset) + 1n).toString() });
      if (Date.now() - this.lastCommit >= COMMIT_EVERY_MS) await this.flushHint();
    } catch (e: unknown) {
      this.fail(coerceError(e));
    }
  }

  private async handle(topic: string, partition: number, offset: string, value: Buffer | null): Promise<void> {
    if (value === null) return;
    const parsed = StreamEvent.safeParse(parseEventValue(value));
    if (!parsed.success)
      throw new Error(`${topic}[${partition}]@${offset} is not an airflow-eventstream event: ${parsed.error.message.slice(0, 500)}`);
    const event = parsed.data;
    const dagId = "dag_id" in event ? event.dag_id : null;
    if (!this.c.wants(dagId)) return;
    const position = event.source.position;
    const ctx: EventContext = { dagId, position, bootstrap: false, topic, partition, offset };
    const outcome = await this.sequencer.offer(dagId ?? partitionScope(topic, partition), position, () => this.r.handler(event, ctx));
    if (outcome === "delivered") this.c.stats.delivered++;
    else this.c.stats.duplicates++;
  }

  /** Commits the offsets after the handled events, as a hint for tools that watch the group's lag; failures are only logged. */
  async flushHint(): Promise<void> {
    if (this.hint.size === 0) return;
    const offsets = [...this.hint.values()];
    this.hint.clear();
    this.lastCommit = Date.now();
    await this.consumer
      .commitOffsets(offsets)
      .catch((e: unknown) => this.log.debug({ err: describeError(e) }, "group offsets not committed"));
  }

  private startDeps(topic: string, partition: number, current: () => boolean): StartDeps {
    return {
      kafka: this.c.kafkaClient,
      admin: this.admin,
      groupId: this.c.groupId,
      from: this.r.from,
      sequencer: this.sequencer,
      dagsIn: (topic, partition) => this.c.dagsIn(this.admin, topic, partition),
      bootstrap: (dags, reason, detail) => this.bootstrap(topic, partition, dags, reason, detail, current),
    };
  }

  /** The current rows of `dags` (null: of every wanted DAG of this partition), then their positions moved to the state's. */
  private async bootstrap(
    topic: string,
    partition: number,
    dags: string[] | null,
    reason: BootstrapInfo["reason"],
    detail: string | undefined,
    current: () => boolean,
  ): Promise<string | null> {
    const routes = await this.c.routing(this.admin, topic, partition);
    const set = dags === null ? null : new Set(dags);
    return bootstrapFromState({
      state: () => (this.state ??= readCurrentState(this.c.kafkaClient, this.c.stateTopic, { clientId: "airflow-eventstream-consumer" })),
      stateTopic: this.c.stateTopic,
      dags,
      which: (dag) => (set === null ? routes(dag) && this.c.wants(dag) : set.has(dag)),
      reason,
      detail,
      sequencer: this.sequencer,
      run: {
        ...this.r,
        handler: async (e, ctx) => {
          // The group moved on (a rebalance) while the rows were handed over: the partition may be
          // another member's now, which starts it afresh from the store; this member stops here.
          if (!current()) throw new Superseded();
          await this.r.handler(e, ctx);
          this.c.stats.bootstrapRows++;
        },
      },
      log: this.log,
    });
  }
}
