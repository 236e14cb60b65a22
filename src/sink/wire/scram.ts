/**
 * The client's side of SCRAM (RFC 5802) with SHA-256 (RFC 7677) or SHA-512, as Kafka's brokers
 * speak it: no channel binding ("n,,"), no authorization identity, no extensions.
 *
 * No SASLprep (RFC 4013) of the user name or password: Kafka's own client and the tools that store
 * the credentials (kafka-configs.sh, the Admin API) take the password's UTF-8 bytes as they are
 * (ScramFormatter.normalize in Kafka's sources is a plain UTF-8 encoding). Prepping here would make
 * a password that SASLprep changes (non-ASCII spaces, compatibility characters) fail against a
 * broker that accepts it from the Java client; for ASCII passwords both give the same bytes.
 *
 * Pure functions over strings and buffers; the exchange with the broker is in sasl.ts.
 */
import { createHash, createHmac, pbkdf2, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import { SaslAuthenticationError } from "../../errors.js";

const pbkdf2Async = promisify(pbkdf2);

export type ScramHash = "sha256" | "sha512";

/** Kafka's Java client refuses fewer iterations than this for both mechanisms (ScramMechanism.minIterations). */
export const MIN_ITERATIONS = 4096;

/** The GS2 header without channel binding or authorization identity; "biws" in the client-final's c=. */
const GS2_HEADER = "n,,";

/** The user name as a SCRAM saslname: "=" and "," would end the attribute, so they travel escaped. */
export function saslName(username: string): string {
  return username.replaceAll("=", "=3D").replaceAll(",", "=2C");
}

export interface ClientFirst {
  /** client-first-message-bare: part of the AuthMessage both sides sign. */
  bare: string;
  /** What is sent: the GS2 header and the bare message. */
  message: string;
  nonce: string;
}

/** The client-first message for `username` with `nonce` (printable, no comma: base64 qualifies). */
export function clientFirst(username: string, nonce: string): ClientFirst {
  const bare = `n=${saslName(username)},r=${nonce}`;
  return { bare, message: GS2_HEADER + bare, nonce };
}

export interface ServerFirst {
  /** The message as received: part of the AuthMessage. */
  message: string;
  /** Client nonce followed by the server's. */
  nonce: string;
  salt: Buffer;
  iterations: number;
}

/** Attributes of a SCRAM message, "a=value" separated by commas (a value may contain "="). */
function attributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(",")) {
    const eq = part.indexOf("=");
    if (eq !== 1) continue; // not an attribute (e.g. an empty trailing part): ignored, as extensions are
    if (!out.has(part[0]!)) out.set(part[0]!, part.slice(2));
  }
  return out;
}

function refuse(why: string): never {
  throw new SaslAuthenticationError(why, null);
}

/** The server-first message, checked as Kafka's client checks it; refusals name what was wrong, never a secret. */
export function parseServerFirst(message: string, clientNonce: string): ServerFirst {
  if (message.startsWith("m=")) refuse(`the broker's SCRAM server-first message asks for a mandatory extension this client does not know`);
  if (message.startsWith("e=")) refuse(`the broker refused the SCRAM client-first message: ${message.slice(2)}`);
  const attrs = attributes(message);
  const nonce = attrs.get("r");
  const salt = attrs.get("s");
  const iterationsText = attrs.get("i");
  if (nonce === undefined || salt === undefined || iterationsText === undefined)
    refuse(`the broker's SCRAM server-first message lacks r=, s= or i= (${JSON.stringify(message)})`);
  // The server must extend our nonce: anything else is a replay or someone else's exchange.
  if (!nonce.startsWith(clientNonce) || nonce.length === clientNonce.length)
    refuse("the broker's SCRAM nonce does not extend the client's nonce (a replayed or foreign exchange)");
  if (!/^[0-9]+$/.test(iterationsText)) refuse(`the broker's SCRAM iteration count is not a number: ${JSON.stringify(iterationsText)}`);
  const iterations = Number(iterationsText);
  if (iterations < MIN_ITERATIONS)
    refuse(`the broker asks for ${iterations} SCRAM iterations, fewer than the minimum of ${MIN_ITERATIONS}`);
  if (!Number.isSafeInteger(iterations) || iterations > 0x7fffffff)
    refuse(`the broker's SCRAM iteration count ${iterationsText} is too large`);
  const saltBytes = Buffer.from(salt, "base64");
  if (saltBytes.length === 0) refuse("the broker's SCRAM salt is empty");
  return { message, nonce, salt: saltBytes, iterations };
}

export interface ClientFinal {
  /** What is sent: c=, r=, p=. */
  message: string;
  /** The ServerSignature a broker that knows the credentials sends back in v=. */
  serverSignature: Buffer;
}

function hmac(hash: ScramHash, key: Buffer, data: string): Buffer {
  return createHmac(hash, key).update(data, "utf8").digest();
}

/** The keys both sides derive from the password (RFC 5802 section 3). */
export async function saltedPassword(hash: ScramHash, password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  // Hi() is PBKDF2 with HMAC-hash and one block of output; async keeps the event loop free meanwhile.
  const keyLength = hash === "sha256" ? 32 : 64;
  return pbkdf2Async(Buffer.from(password, "utf8"), salt, iterations, keyLength, hash);
}

/** The client-final message with its proof, and the server signature to expect. */
export async function clientFinal(hash: ScramHash, password: string, first: ClientFirst, server: ServerFirst): Promise<ClientFinal> {
  const salted = await saltedPassword(hash, password, server.salt, server.iterations);
  const withoutProof = `c=${Buffer.from(GS2_HEADER, "utf8").toString("base64")},r=${server.nonce}`;
  const authMessage = `${first.bare},${server.message},${withoutProof}`;
  const clientKey = hmac(hash, salted, "Client Key");
  const storedKey = createHash(hash).update(clientKey).digest();
  const clientSignature = hmac(hash, storedKey, authMessage);
  const proof = Buffer.alloc(clientKey.length);
  for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ clientSignature[i]!;
  const serverSignature = hmac(hash, hmac(hash, salted, "Server Key"), authMessage);
  return { message: `${withoutProof},p=${proof.toString("base64")}`, serverSignature };
}

/**
 * The server-final message: e= is a refusal; v= must be the expected server signature, or the
 * broker never knew the credentials (a stand-in that accepts any proof) and the login is refused.
 */
export function checkServerFinal(message: string, expected: Buffer): void {
  const attrs = attributes(message);
  const error = attrs.get("e");
  if (error !== undefined) refuse(`the broker refused the SCRAM proof: ${error}`);
  const verifier = attrs.get("v");
  if (verifier === undefined) refuse(`the broker's SCRAM server-final message has neither e= nor v= (${JSON.stringify(message)})`);
  const got = Buffer.from(verifier, "base64");
  if (got.length !== expected.length || !timingSafeEqual(got, expected))
    refuse("the broker's SCRAM server signature is wrong: it does not hold this user's credentials (or is not the broker configured)");
}
