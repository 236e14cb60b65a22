import type pg from "pg";
import type { Config } from "../config.js";
import { PG_EPOCH_OFFSET_US } from "../decode/types.js";
import { formatLsn, type Lsn } from "../lsn.js";
import { SlotBusyError, TransientError, sqlState } from "../errors.js";
import type { Logger } from "../log.js";
import { connectSource } from "./connection.js";
import { ident, literal } from "./sql.js";

/**
 * The replication connection: START_REPLICATION on the slot, CopyData in, standby status out.
 *
 * Written on node-postgres directly rather than through pg-logical-replication, whose
 * acknowledgement path loses data (docs/why-not-pg-logical-replication shows the first on a real server): it reports lsn + 1, its keepalive timer
 * confirms the last *received* position, and with flow control it skips a message whose handler
 * failed. Here the only position ever sent is the one the caller passes to `sendStatus`, exactly.
 *
 * Protocol: https://www.postgresql.org/docs/current/protocol-replication.html
 */

export interface StreamHandlers {
  /** One pgoutput message (XLogData payload). Called synchronously, in WAL order. */
  onData(payload: Buffer): void;
  /** Primary keepalive: everything up to `walEnd` has been sent; `replyRequested` asks for a status now. */
  onKeepalive(walEnd: Lsn, replyRequested: boolean): void;
}

export class ReplicationStream {
  private client: pg.Client | null = null;
  private paused = false;
  private ended = false;
  /** Settles when the stream ends: resolves on stop(), rejects on any error. */
  readonly done: Promise<void>;
  private settle!: { resolve: () => void; reject: (e: Error) => void };
  private readonly status = Buffer.alloc(34);

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // Nobody may be awaiting `done` yet when it fails early; the failure still surfaces where it is awaited.
    this.done.catch(() => undefined);
  }

  /**
   * Connects and starts streaming from the slot's confirmed position (PostgreSQL ignores an older
   * start position for logical slots). Resolves once the server has entered CopyBoth mode.
   */
  async start(handlers: StreamHandlers): Promise<void> {
    // Listeners go on only once the host is chosen: the clients of hosts that did not match end
    // without failing the stream.
    const { client, host } = await connectSource(this.cfg, { replication: true, applicationName: "airflow-eventstream" });
    this.client = client;
    const where = `${host.host}:${host.port}`;
    client.on("error", (e: Error) =>
      this.fail(new TransientError(`replication connection to PostgreSQL at ${where} failed: ${e.message}`, { cause: e })),
    );
    client.on("end", () => this.fail(new TransientError(`replication connection to PostgreSQL at ${where} closed`)));
    // Up to PostgreSQL 17 a dropped publication fails the stream (ERROR "publication ... does not
    // exist"). From 18 on pgoutput only warns ("skipped loading publication") and decodes on without
    // it: every later change of the captured tables would pass unseen, and be acknowledged with the
    // keepalives. That warning, sent to this connection as a notice, is the only sign: it ends the
    // stream as the error did, before any later message is handled (explainPublicationDropped).
    client.on("notice", (n: { code?: string; message?: string; where?: string }) => {
      // Matched on the text: 18.1 sends it with SQLSTATE 55000, not the 42704 of the earlier error.
      if (n.message === `skipped loading publication "${this.cfg.publication}"`)
        this.fail(Object.assign(new Error(n.message), { code: n.code, where: n.where }));
    });
    if (this.ended) {
      await client.end().catch(() => undefined);
      return;
    }

    // The `connection` object is node-postgres' protocol layer: the only place CopyBoth data shows up.
    const connection = (client as unknown as { connection: PgConnection }).connection;
    connection.on("copyData", (msg: { chunk: Buffer }) => {
      // One socket read holds many messages, each handed over here in turn, also after one of them
      // ended the stream: nothing after that one may be decoded or published, or it would reach
      // Kafka ahead of the message that failed (which the next session sends again).
      if (this.ended) return;
      const buf = msg.chunk;
      try {
        switch (buf[0]) {
          case 0x77: // 'w' XLogData: walStart(8) walEnd(8) sendTime(8) data
            handlers.onData(buf.subarray(25));
            break;
          case 0x6b: // 'k' primary keepalive: walEnd(8) sendTime(8) replyRequested(1)
            handlers.onKeepalive(buf.readBigUInt64BE(1), buf[17] === 1);
            break;
          default:
            throw new Error(`unknown replication message 0x${(buf[0] ?? 0).toString(16)}`);
        }
      } catch (e: unknown) {
        // A message that cannot be handled is never skipped: the stream stops and resumes from the
        // last acknowledged position: skipping it would acknowledge past a change never published.
        this.fail(e instanceof Error ? e : new Error(String(e)));
      }
    });

    // Logical decoding messages (snapshot requests and watermarks, src/snapshot/): pgoutput has the
    // option from PostgreSQL 14; on 13 it would refuse to start, so snapshots are not available there.
    const version = await client.query<{ server_version_num: string }>("SHOW server_version_num");
    const messages = Number(version.rows[0]?.server_version_num ?? 0) >= 140000 ? ", messages 'true'" : "";
    const sql =
      `START_REPLICATION SLOT ${ident(this.cfg.slot)} LOGICAL ${formatLsn(0n)} ` +
      `(proto_version '1', publication_names ${literal(ident(this.cfg.publication))}${messages})`;
    await new Promise<void>((resolve, reject) => {
      connection.once("replicationStart", () => resolve());
      client.query(sql).then(
        () => this.end(),
        (e: unknown) => {
          const err = this.explainStartError(e);
          reject(err);
          this.fail(err);
        },
      );
    });
    this.log.info({ slot: this.cfg.slot, publication: this.cfg.publication, host: where }, "replication started");
  }

  private explainStartError(e: unknown): Error {
    const code = sqlState(e);
    const msg = (e as Error)?.message ?? String(e);
    if (code === "55006") {
      return new SlotBusyError(
        `replication slot "${this.cfg.slot}" is in use by another connection (${msg}); waiting for it to be released`,
        { cause: e },
      );
    }
    return new Error(`START_REPLICATION on slot "${this.cfg.slot}" failed: ${msg}`, { cause: e });
  }

  /**
   * Standby status update with the position every transaction before it is safe in Kafka.
   * write = flush = apply = `lsn`, exactly: never + 1, which would also confirm a transaction whose
   * commit record starts exactly where the acknowledged one ends.
   */
  sendStatus(lsn: Lsn, replyRequested = false): void {
    if (this.ended) return;
    const b = this.status;
    b[0] = 0x72; // 'r'
    b.writeBigUInt64BE(lsn, 1);
    b.writeBigUInt64BE(lsn, 9);
    b.writeBigUInt64BE(lsn, 17);
    b.writeBigInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_OFFSET_US, 25);
    b[33] = replyRequested ? 1 : 0;
    if (this.client === null) return;
    const connection = (this.client as unknown as { connection: PgConnection }).connection;
    // sendCopyFromChunk copies into its own frame, so reusing `status` is safe.
    connection.sendCopyFromChunk(b);
  }

  /** Backpressure: stop reading the socket. The server keeps the WAL; our status updates keep the connection alive. */
  pause(): void {
    if (this.paused || this.ended) return;
    this.paused = true;
    this.socket()?.pause();
  }

  resume(): void {
    if (!this.paused || this.ended) return;
    this.paused = false;
    this.socket()?.resume();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Still connected: a status update sent now reaches PostgreSQL. */
  get isOpen(): boolean {
    return !this.ended;
  }

  /** Ends the connection; `done` resolves. */
  async stop(): Promise<void> {
    this.end();
    await this.client?.end().catch(() => undefined);
  }

  private socket(): { pause(): void; resume(): void } | undefined {
    return (this.client as unknown as { connection?: PgConnection } | null)?.connection?.stream;
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.settle.resolve();
  }

  private fail(e: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.settle.reject(e);
    this.client?.end().catch(() => undefined);
  }
}

interface PgConnection {
  on(event: "copyData", fn: (msg: { chunk: Buffer }) => void): void;
  once(event: "replicationStart", fn: () => void): void;
  sendCopyFromChunk(chunk: Buffer): void;
  stream: { pause(): void; resume(): void };
}
