import { randomBytes } from "node:crypto";
import type { Config } from "../config.js";
import { UserActionError, coerceError, sqlState } from "../errors.js";
import type { Logger } from "../log.js";
import { connectSource } from "../source/connection.js";
import type { AckWatch } from "./ack-watch.js";
import { ChunkReader } from "./chunk-reader.js";
import { DONE_KEPT, DONE_KEPT_MS, EMPTY_PROGRESS, SnapshotProgress, parseJson, type JobProgress, type SnapshotSpec } from "./spec.js";
import { SnapshotTap, type ChunkOutcome, type OpenChunk } from "./tap.js";

/** What the coordinator needs of the session. */
export interface CoordinatorParts {
  /** Persists progress with the next checkpoint record; false when no checkpoint topic keeps it. */
  saveProgress(p: SnapshotProgress | null): boolean;
  acks: AckWatch;
}

/** A chunk read again this many times in a row (always spoiled) fails the job's attempt: something is wrong, not unlucky. */
const MAX_RETRIES = 20;
/** Wait before a job interrupted by a failure (the connection) is taken up again. */
const RETRY_MS = 5_000;

/**
 * Runs snapshot jobs, one chunk at a time: register the chunk with the loop (the tap), write the
 * low watermark, read the chunk, write the high watermark, wait for the loop to publish the chunk
 * at the high watermark and for Kafka to acknowledge it, then record the progress (carried by the
 * next checkpoint record). A crash between Kafka's acknowledgement and that checkpoint costs the
 * chunk read again: its rows published twice (at a later position, so still in order), never lost.
 *
 * One per session: a new session (restart, takeover) starts from the progress read with the
 * checkpoint; watermarks carry this coordinator's random `run` id, so a re-delivered watermark of an
 * earlier session matches nothing.
 */
export class SnapshotCoordinator {
  readonly tap: SnapshotTap;
  private readonly run = randomBytes(6).toString("hex");
  private progress: SnapshotProgress = EMPTY_PROGRESS;
  /** Requests seen before start(): the progress they join is not read yet. */
  private early: SnapshotSpec[] = [];
  private started = false;
  private working: Promise<void> | null = null;
  private stopped = false;
  private chunkNo = 0;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly parts: CoordinatorParts,
  ) {
    this.tap = new SnapshotTap(cfg.airflowSchema, (spec) => this.requested(spec));
  }

  /** Once streaming, with the progress read with the checkpoint (null: none): resumes a job under way. */
  start(progressAtStart: unknown): void {
    const read = progressAtStart === null ? null : parseJson(SnapshotProgress, JSON.stringify(progressAtStart));
    if (progressAtStart !== null && read === null) this.log.warn("snapshot progress in the checkpoint is not of this version; ignoring it");
    this.started = true;
    if (read !== null) this.save(read);
    const a = this.progress.active;
    if (a !== null) this.log.info({ job: a.spec.id, table: a.spec.tables[a.table], rows: a.rows }, "snapshot: resuming the job");
    for (const spec of this.early.splice(0)) this.requested(spec);
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.tap.abandon("the session is ending");
    // Bounded: a chunk may be waiting for Kafka, which a stopping session no longer waits for.
    if (this.working !== null) await Promise.race([this.working, sleep(2_000)]);
  }

  /** Progress as it stands (tests, --wait). */
  get state(): SnapshotProgress {
    return this.progress;
  }

  private requested(spec: SnapshotSpec): void {
    if (!this.started) {
      this.early.push(spec);
      return;
    }
    const p = this.progress;
    if (p.active?.spec.id === spec.id || p.queued.some((q) => q.id === spec.id) || p.done.some((d) => d.id === spec.id)) return;
    this.log.info(
      { job: spec.id, tables: spec.tables, dags: spec.dags, runsSince: spec.runs_since, activeOnly: spec.active_only },
      "snapshot requested",
    );
    this.save({ ...p, queued: [...p.queued, spec] });
    this.kick();
  }

  private save(next: SnapshotProgress): void {
    // Every checkpoint record carries the progress: finished jobs are kept only as long as their
    // request can still be re-read from the WAL after a restart (the slot confirms past it within
    // seconds), and none at all once nothing is under way, queued or recent (the field then goes).
    const cutoff = Date.now() - DONE_KEPT_MS;
    const p = { ...next, done: next.done.filter((d) => Date.parse(d.finished_at) >= cutoff).slice(-DONE_KEPT) };
    this.progress = p;
    const empty = p.active === null && p.queued.length === 0 && p.done.length === 0;
    if (!this.parts.saveProgress(empty ? null : p) && p.active !== null && p.active.chunks === 0)
      this.log.warn(
        { job: p.active.spec.id },
        "snapshot progress is not kept without a checkpoint topic (EVENTSTREAM_GAP_DETECTION=false, at-least-once): a restart loses the job",
      );
  }

  /**
   * A snapshot never stops the stream. A job whose query PostgreSQL refuses (SQLSTATE classes 22,
   * 42: a schema the filters do not fit) is ended as failed; any other failure (the connection) is
   * retried after RETRY_MS, from the progress as it stands (the open chunk is read again).
   */
  private kick(delayMs = 0): void {
    if (this.working !== null || this.stopped || !this.started) return;
    if (this.progress.active === null && this.progress.queued.length === 0) return;
    this.working = sleep(delayMs)
      .then(() => (this.stopped ? undefined : this.work()))
      .then(
        () => 0,
        (e: unknown) => {
          if (this.stopped) return 0;
          const err = coerceError(e);
          const job = this.progress.active;
          // A UserActionError (a standby refusing the watermarks) cannot get better by retrying either.
          if (job !== null && (/^(22|42)/.test(sqlState(e) ?? "") || e instanceof UserActionError)) {
            this.log.error({ job: job.spec.id, err: err.message }, "snapshot failed: PostgreSQL refused its query; the job is dropped");
            this.finish(job, err.message);
            return 0;
          }
          this.log.warn({ job: job?.spec.id, err: err.message, retryInMs: RETRY_MS }, "snapshot interrupted; retrying");
          return RETRY_MS;
        },
      )
      .then((next) => {
        this.working = null;
        this.kick(next);
      });
  }

  private async work(): Promise<void> {
    // Its only commits flush the WAL to the walsender (ChunkReader.emit): a synchronous standby has
    // nothing to wait for there, and waiting would stall the snapshot on every chunk.
    const { client } = await connectSource(this.cfg, {
      replication: false,
      applicationName: "airflow-eventstream-snapshot",
      extra: (base) => ({ options: `${base.options ?? ""} -c synchronous_commit=local` }),
    });
    try {
      const version = await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
      const reader = new ChunkReader(client, this.cfg.airflowSchema, Number(version.rows[0]!.v));
      while (!this.stopped) {
        const p = this.progress;
        let job = p.active;
        if (job === null) {
          const [next, ...rest] = p.queued;
          if (next === undefined) return;
          job = { spec: next, table: 0, last_key: null, rows: 0, chunks: 0, started_at: new Date().toISOString() };
          this.save({ ...p, active: job, queued: rest });
          this.log.info({ job: next.id, tables: next.tables }, "snapshot started");
        }
        await this.runJob(reader, job);
      }
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * Chunk after chunk. Kafka's acknowledgement of a chunk is not waited for before the next is
   * read (measured: a quarter of a chunk's round trip); the progress follows the acknowledgements,
   * in chunk order (`durable`), so it never covers a chunk Kafka does not hold. How far reading runs
   * ahead is bounded by the ack rule: the stream pauses while too much is in flight, and the next
   * chunk's high watermark waits with it.
   */
  private async runJob(reader: ChunkReader, start: JobProgress): Promise<void> {
    let job = start;
    let durable = Promise.resolve();
    const pkOf = new Map<string, string[]>();
    while (!this.stopped) {
      const table = job.spec.tables[job.table];
      if (table === undefined) {
        await durable;
        return this.stopped ? undefined : this.finish(job);
      }
      let pk = pkOf.get(table);
      if (pk === undefined) pkOf.set(table, (pk = await reader.primaryKey(table)));
      const began = Date.now();
      const read = await this.chunk(reader, job, table, pk).catch(async (e: unknown) => {
        // The progress of the chunks already published lands first: a retry starts after them.
        await durable;
        throw e;
      });
      const { outcome, scanned, lastKey } = read;
      if (this.stopped) return;
      const tableDone = scanned < this.cfg.snapshotChunkRows;
      const next = {
        ...job,
        table: tableDone ? job.table + 1 : job.table,
        last_key: tableDone ? null : lastKey,
        rows: job.rows + outcome.events,
        chunks: job.chunks + 1,
      };
      job = next;
      const published = Date.now();
      durable = durable.then(async () => {
        if (outcome.lastSeq !== null) await this.parts.acks.until(outcome.lastSeq);
        if (this.stopped) return;
        this.save({ ...this.progress, active: next });
        this.log.debug({ job: next.spec.id, table, scanned, rows: next.rows, ackMs: Date.now() - published }, "snapshot chunk in Kafka");
      });
      // Rate limit: the next chunk waits until the rows read so far fit the budget.
      const wait = (scanned * 1000) / this.cfg.snapshotRowsPerSecond - (Date.now() - began);
      if (wait > 0) await sleep(wait);
    }
  }

  /** One chunk, read again until its window is clean; resolves once the loop handed its events to the sink. */
  private async chunk(
    reader: ChunkReader,
    job: JobProgress,
    table: JobProgress["spec"]["tables"][number],
    pk: string[],
  ): Promise<{ outcome: Extract<ChunkOutcome, { kind: "published" }>; scanned: number; lastKey: string[] | null }> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopped) throw new Error("stopping");
      let settle!: (o: ChunkOutcome) => void;
      const done = new Promise<ChunkOutcome>((resolve) => (settle = resolve));
      const open: OpenChunk = {
        run: this.run,
        job: job.spec.id,
        chunk: ++this.chunkNo,
        table,
        low: null,
        touched: new Set(),
        spoiled: false,
        read: null,
        settle,
      };
      this.tap.register(open);
      const w = { run: this.run, job: job.spec.id, chunk: open.chunk };
      const t0 = Date.now();
      await reader.emit({ ...w, kind: "low" });
      open.read = await reader.read(table, pk, job.spec, job.last_key, this.cfg.snapshotChunkRows);
      const t1 = Date.now();
      await reader.emit({ ...w, kind: "high" });
      const outcome = await done;
      if (outcome.kind === "published") {
        // Measured (bench:snapshot, 2 shared cores): ~100 ms reading, ~80 ms until the loop published it, ~50 ms for Kafka.
        this.log.debug({ job: job.spec.id, chunk: open.chunk, readMs: t1 - t0, publishMs: Date.now() - t1 }, "snapshot chunk published");
        return { outcome, scanned: open.read.scanned, lastKey: open.read.lastKey };
      }
      if (this.stopped) throw new Error("stopping");
      if (attempt >= MAX_RETRIES)
        throw new Error(`chunk ${open.chunk} of job ${job.spec.id} could not be read cleanly ${attempt + 1} times: ${outcome.reason}`);
      this.log.info({ job: job.spec.id, chunk: open.chunk, reason: outcome.reason }, "snapshot chunk read again");
    }
  }

  private finish(job: JobProgress, error?: string): void {
    const entry = { id: job.spec.id, rows: job.rows, finished_at: new Date().toISOString(), ...(error === undefined ? {} : { error }) };
    this.save({ ...this.progress, active: null, done: [...this.progress.done, entry] });
    if (error !== undefined) return;
    this.log.info(
      { job: job.spec.id, rows: job.rows, chunks: job.chunks, ms: Date.now() - Date.parse(job.started_at) },
      "snapshot finished",
    );
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
