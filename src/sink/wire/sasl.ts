/**
 * SASL authentication of one broker connection, as Kafka's protocol carries it: SaslHandshake (17)
 * v1 names the mechanism, then SaslAuthenticate (36) v1 requests carry the mechanism's messages.
 * Both are non-flexible versions; the caller writes the request header (v1) and strips the
 * response header, so this module sees request and response bodies only.
 *
 * Mechanisms: PLAIN (RFC 4616, one message) and SCRAM-SHA-256 / SCRAM-SHA-512 (scram.ts). PLAIN
 * sends the password as it is: only over TLS, which is the caller's to ensure.
 *
 * SaslAuthenticate v1's response also carries session_lifetime_ms (KIP-368): when the broker sets
 * connections.max.reauth.ms it closes the connection after that time unless the client logs in
 * again on it. The producer treats that as any closed connection (reconnect, authenticate);
 * re-authenticating in place is not done here.
 */
import { randomBytes } from "node:crypto";
import { SaslAuthenticationError } from "../../errors.js";
import { checkServerFinal, clientFinal, clientFirst, parseServerFirst, type ScramHash } from "./scram.js";

/** Sends one request on the connection being authenticated; resolves with the response body after the response header (correlation id). */
export type RawRequest = (apiKey: number, apiVersion: number, body: Buffer) => Promise<Buffer>;

export interface SaslSettings {
  mechanism: "plain" | "scram-sha-256" | "scram-sha-512";
  username: string;
  password: string;
}

export const API_SASL_HANDSHAKE = 17;
export const API_SASL_AUTHENTICATE = 36;
const VERSION = 1;

/** Kafka's error codes an authentication can meet, by name (others are shown as their number). */
const ERROR_NAMES: Record<number, string> = {
  33: "UNSUPPORTED_SASL_MECHANISM",
  34: "ILLEGAL_SASL_STATE",
  35: "UNSUPPORTED_VERSION",
  58: "SASL_AUTHENTICATION_FAILED",
};
export const UNSUPPORTED_SASL_MECHANISM = 33;

const SCRAM_HASH: Record<Exclude<SaslSettings["mechanism"], "plain">, ScramHash> = {
  "scram-sha-256": "sha256",
  "scram-sha-512": "sha512",
};

function errorName(code: number): string {
  return ERROR_NAMES[code] ? `${code} (${ERROR_NAMES[code]})` : String(code);
}

/** Authenticates the connection `request` sends on; throws SaslAuthenticationError when the broker refuses (or fails our checks). */
export async function authenticate(request: RawRequest, sasl: SaslSettings): Promise<void> {
  return authenticateWithNonce(request, sasl, randomBytes(24).toString("base64"));
}

/** authenticate() with the SCRAM client nonce given: the tests replay RFC 7677's exchange with it. */
export async function authenticateWithNonce(request: RawRequest, sasl: SaslSettings, nonce: string): Promise<void> {
  const mechanism = sasl.mechanism.toUpperCase();
  const who = `the SASL ${mechanism} login of user ${JSON.stringify(sasl.username)}`;
  await handshake(request, mechanism, who);
  if (sasl.mechanism === "plain") {
    await saslAuthenticate(request, plainMessage(sasl.username, sasl.password), who);
    return;
  }
  const hash = SCRAM_HASH[sasl.mechanism];
  try {
    const first = clientFirst(sasl.username, nonce);
    const serverFirst = await saslAuthenticate(request, Buffer.from(first.message, "utf8"), who);
    const server = parseServerFirst(serverFirst.toString("utf8"), nonce);
    const final = await clientFinal(hash, sasl.password, first, server);
    const serverFinal = await saslAuthenticate(request, Buffer.from(final.message, "utf8"), who);
    checkServerFinal(serverFinal.toString("utf8"), final.serverSignature);
  } catch (e) {
    // scram.ts's refusals say what was wrong; add whose login it was.
    if (e instanceof SaslAuthenticationError && e.errorCode === null)
      throw new SaslAuthenticationError(`Kafka: ${who} failed: ${e.message}`, null);
    throw e;
  }
}

/** PLAIN's one message: empty authorization identity, NUL, user name, NUL, password (RFC 4616). */
export function plainMessage(username: string, password: string): Buffer {
  return Buffer.concat([Buffer.from([0]), Buffer.from(username, "utf8"), Buffer.from([0]), Buffer.from(password, "utf8")]);
}

async function handshake(request: RawRequest, mechanism: string, who: string): Promise<void> {
  const body = await request(API_SASL_HANDSHAKE, VERSION, encodeString(mechanism));
  const { errorCode, mechanisms } = decodeHandshakeResponse(body);
  if (errorCode === 0) return;
  const enabled = mechanisms.length > 0 ? mechanisms.join(", ") : "none";
  if (errorCode === UNSUPPORTED_SASL_MECHANISM)
    throw new SaslAuthenticationError(
      `Kafka refused ${who}: the broker's listener does not enable ${mechanism} (SaslHandshake error ${errorName(errorCode)}); it enables: ${enabled}`,
      errorCode,
    );
  throw new SaslAuthenticationError(
    `Kafka refused ${who}: SaslHandshake error ${errorName(errorCode)}; mechanisms enabled: ${enabled}`,
    errorCode,
  );
}

/** One SaslAuthenticate round: our bytes out, the broker's bytes back; an error code is a refusal. */
async function saslAuthenticate(request: RawRequest, authBytes: Buffer, who: string): Promise<Buffer> {
  const body = Buffer.allocUnsafe(4 + authBytes.length);
  body.writeInt32BE(authBytes.length, 0);
  authBytes.copy(body, 4);
  const response = decodeAuthenticateResponse(await request(API_SASL_AUTHENTICATE, VERSION, body));
  if (response.errorCode !== 0) {
    const said = response.errorMessage ? `: ${response.errorMessage}` : "";
    throw new SaslAuthenticationError(
      `Kafka refused ${who}: SaslAuthenticate error ${errorName(response.errorCode)}${said}`,
      response.errorCode,
    );
  }
  return response.authBytes;
}

/** A Kafka STRING: int16 length, UTF-8 bytes. */
function encodeString(s: string): Buffer {
  const bytes = Buffer.from(s, "utf8");
  const out = Buffer.allocUnsafe(2 + bytes.length);
  out.writeInt16BE(bytes.length, 0);
  bytes.copy(out, 2);
  return out;
}

/** Reads a response body front to back; a body shorter than its fields say is a broken response, not a refusal. */
class BodyReader {
  private at = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  private take(n: number): number {
    if (n < 0 || this.at + n > this.buf.length)
      throw new Error(`malformed ${this.what} response: ${this.buf.length} bytes, field at ${this.at} needs ${n}`);
    const start = this.at;
    this.at += n;
    return start;
  }
  int16(): number {
    return this.buf.readInt16BE(this.take(2));
  }
  int32(): number {
    return this.buf.readInt32BE(this.take(4));
  }
  /** STRING, or NULLABLE_STRING (length -1: null). */
  string(): string | null {
    const len = this.int16();
    if (len === -1) return null;
    const start = this.take(len);
    return this.buf.toString("utf8", start, start + len);
  }
  /** BYTES (length -1 is read as empty: no body carries null auth bytes). */
  bytes(): Buffer {
    const len = this.int32();
    if (len === -1) return Buffer.alloc(0);
    const start = this.take(len);
    return this.buf.subarray(start, start + len);
  }
}

/** SaslHandshake v1 response: error_code INT16, mechanisms ARRAY(STRING). */
export function decodeHandshakeResponse(body: Buffer): { errorCode: number; mechanisms: string[] } {
  const r = new BodyReader(body, "SaslHandshake");
  const errorCode = r.int16();
  const count = r.int32();
  const mechanisms: string[] = [];
  for (let i = 0; i < count; i++) mechanisms.push(r.string() ?? "");
  return { errorCode, mechanisms };
}

/** SaslAuthenticate v1 response: error_code INT16, error_message NULLABLE_STRING, auth_bytes BYTES, session_lifetime_ms INT64. */
export function decodeAuthenticateResponse(body: Buffer): { errorCode: number; errorMessage: string | null; authBytes: Buffer } {
  const r = new BodyReader(body, "SaslAuthenticate");
  const errorCode = r.int16();
  const errorMessage = r.string();
  const authBytes = r.bytes();
  // session_lifetime_ms follows (8 bytes); not used (see the module comment), so not required either.
  return { errorCode, errorMessage, authBytes };
}
