import { isIP, connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import type { Config } from "../../config.js";
import { UserActionError } from "../../errors.js";
import { KafkaConnectionError, KafkaProtocolError } from "./errors.js";
import { Reader } from "./reader.js";
import { authenticate } from "./sasl.js";
import { Writer } from "./writer.js";

/** API keys the wire producer speaks. */
export const API = { Produce: 0, Metadata: 3, ApiVersions: 18, InitProducerId: 22 } as const;

/**
 * The versions used: non-flexible ones only (request header v1, no tagged fields). Produce v3 is
 * the first to carry RecordBatch v2 (Kafka 4.0 dropped v0-2), v9 the first flexible; Metadata v4
 * is the first with allow_auto_topic_creation (4.0 dropped v0-3), v9 flexible; InitProducerId v2 flexible.
 */
const WANTED = {
  Produce: [3, 8],
  Metadata: [4, 8],
  InitProducerId: [0, 1],
} as const satisfies Record<string, readonly [number, number]>;

export type Versions = Record<keyof typeof WANTED, number>;

export interface BrokerOptions {
  host: string;
  port: number;
  clientId: string;
  ssl: Config["kafka"]["ssl"];
  sasl: Config["kafka"]["sasl"];
  connectTimeoutMs: number;
  requestTimeoutMs: number;
}

/** Starts a request frame in `w`: size (filled by endFrame), request header v1; the correlation id is set at send. */
export function beginFrame(w: Writer, apiKey: number, apiVersion: number, clientId: string): number {
  const start = w.pos;
  w.int32(0);
  w.int16(apiKey);
  w.int16(apiVersion);
  w.int32(0);
  w.string(clientId);
  return start;
}

export function endFrame(w: Writer, start: number): void {
  w.buf.writeInt32BE(w.pos - start - 4, start);
}

/** "host:port" or "[v6]:port" of KAFKA_BROKERS. */
export function parseBroker(broker: string): { host: string; port: number } {
  const sep = broker.lastIndexOf(":");
  return { host: broker.slice(0, sep).replace(/^\[(.*)\]$/, "$1"), port: Number(broker.slice(sep + 1)) };
}

/** As client.ts's tlsOptions for kafkajs: the configured CA only, or Node's list; certificates always checked. */
function tlsOptions(ssl: NonNullable<Config["kafka"]["ssl"]>, host: string): ConnectionOptions {
  return {
    ...(ssl.ca ? { ca: [ssl.ca.pem] } : {}),
    rejectUnauthorized: true,
    // SNI with host names only (an IP address there is refused by Node and meaningless anyway).
    ...(isIP(host) === 0 ? { servername: host } : {}),
  };
}

interface Pending {
  resolve: (body: Buffer) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * One connection to one broker: 4-byte size framing, correlation ids, a map of pending requests,
 * a timeout per request. A closed connection, or a request that got no answer in time, rejects
 * everything pending with a KafkaConnectionError and the connection is not used again.
 */
export class BrokerConnection {
  versions: Versions = { Produce: 0, Metadata: 0, InitProducerId: 0 };
  private socket: Socket | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private inbox: Buffer | null = null;
  private failure: Error | null = null;
  readonly name: string;

  constructor(private readonly opts: BrokerOptions) {
    this.name = `${opts.host}:${opts.port}`;
  }

  get closed(): boolean {
    return this.failure !== null;
  }

  /** Connects, authenticates (SASL, when configured) and learns the broker's API versions. */
  async open(): Promise<void> {
    const { host, port, ssl } = this.opts;
    await new Promise<void>((resolve, reject) => {
      const socket = ssl ? tlsConnect({ host, port, ...tlsOptions(ssl, host) }) : netConnect({ host, port });
      this.socket = socket;
      socket.setNoDelay(true);
      const timer = setTimeout(
        () => fail(new KafkaConnectionError(`connecting to Kafka broker ${this.name} timed out`)),
        this.opts.connectTimeoutMs,
      );
      const fail = (e: Error): void => {
        clearTimeout(timer);
        this.close(e);
        reject(e);
      };
      socket.once(ssl ? "secureConnect" : "connect", () => {
        clearTimeout(timer);
        socket.removeListener("error", fail);
        socket.on("error", (e: Error) => this.close(new KafkaConnectionError(`Kafka broker ${this.name}: ${e.message}`, { cause: e })));
        resolve();
      });
      // A TLS failure keeps its own error (src/errors.ts's tlsFailure reads its code) as the cause.
      socket.once("error", (e: Error) => fail(new KafkaConnectionError(`Kafka broker ${this.name}: ${e.message}`, { cause: e })));
      socket.on("data", (chunk: Buffer) => this.onData(chunk));
      socket.on("close", () => this.close(new KafkaConnectionError(`the connection to Kafka broker ${this.name} closed`)));
    });
    try {
      if (this.opts.sasl) await authenticate((k, v, body) => this.raw(k, v, body), this.opts.sasl);
      this.versions = await this.apiVersions();
    } catch (e: unknown) {
      this.close();
      throw e;
    }
  }

  /** Sends a frame built with beginFrame/endFrame; resolves with the response body after the correlation id. */
  request(frame: Buffer): Promise<Buffer> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = this.nextId;
    this.nextId = (this.nextId + 1) & 0x7fffffff;
    frame.writeInt32BE(id, 8);
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(
        () => this.close(new KafkaConnectionError(`Kafka broker ${this.name} did not answer within ${this.opts.requestTimeoutMs} ms`)),
        this.opts.requestTimeoutMs,
      );
      this.pending.set(id, { resolve, reject, timer });
      this.socket!.write(frame);
    });
  }

  /** One request from its body (SASL, ApiVersions): framed here. */
  raw(apiKey: number, apiVersion: number, body: Buffer): Promise<Buffer> {
    const w = new Writer(64 + body.length);
    const start = beginFrame(w, apiKey, apiVersion, this.opts.clientId);
    w.ensure(body.length);
    body.copy(w.buf, w.pos);
    w.pos += body.length;
    endFrame(w, start);
    return this.request(w.finish());
  }

  /** Closes the connection (idempotent); whatever is pending is rejected with `reason`. */
  close(reason: Error = new KafkaConnectionError(`the connection to Kafka broker ${this.name} was closed by the producer`)): void {
    if (this.failure === null) this.failure = reason;
    this.socket?.destroy();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(this.failure);
    }
  }

  private onData(chunk: Buffer): void {
    let data = this.inbox === null ? chunk : Buffer.concat([this.inbox, chunk]);
    while (data.length >= 4) {
      const size = data.readInt32BE(0);
      if (data.length < 4 + size) break;
      const id = data.readInt32BE(4);
      const body = data.subarray(8, 4 + size);
      data = data.subarray(4 + size);
      const p = this.pending.get(id);
      if (p === undefined) continue; // an answer after its timeout: the connection is closing anyway
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.resolve(body);
    }
    this.inbox = data.length > 0 ? data : null;
  }

  /** ApiVersions v0 (every broker since 0.10 answers it): the highest wanted version of each API. */
  private async apiVersions(): Promise<Versions> {
    const r = new Reader(await this.raw(API.ApiVersions, 0, Buffer.alloc(0)));
    const error = r.int16();
    if (error !== 0) throw new KafkaProtocolError(error, `ApiVersions from Kafka broker ${this.name}`);
    const ranges = new Map<number, readonly [number, number]>();
    for (const [key, min, max] of r.array((x) => [x.int16(), x.int16(), x.int16()] as const)) ranges.set(key, [min, max]);
    return pickVersions(ranges, this.name);
  }
}

/**
 * The highest version of each API that both the broker (its ApiVersions ranges, by API key) and
 * this producer (WANTED) speak; a broker with none in common is named with what it offers.
 */
export function pickVersions(ranges: ReadonlyMap<number, readonly [number, number]>, broker: string): Versions {
  const pick = (api: keyof typeof WANTED): number => {
    const [lo, hi] = WANTED[api];
    const range = ranges.get(API[api]);
    const best = range === undefined ? -1 : Math.min(hi, range[1]);
    if (range === undefined || best < Math.max(lo, range[0])) {
      const offered = range === undefined ? "none" : `${range[0]}-${range[1]}`;
      throw new UserActionError(
        `Kafka broker ${broker} offers ${api} versions ${offered}; the wire producer needs one of ${lo}-${hi} (non-flexible versions): set EVENTSTREAM_KAFKA_PRODUCER=kafkajs`,
      );
    }
    return best;
  };
  return { Produce: pick("Produce"), Metadata: pick("Metadata"), InitProducerId: pick("InitProducerId") };
}
