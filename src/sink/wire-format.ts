/**
 * The schema registry's wire format (Confluent's, which Apicurio's ccompat API and every Confluent
 * deserialiser share): a zero "magic" byte, the schema id as a 4-byte big-endian integer, then the
 * payload, here the event's UTF-8 JSON. See docs/schema-registry.md.
 *
 * Readers accept both forms with one function (eventJsonText): a topic written before the registry
 * was enabled, or by a daemon without it, holds plain JSON, and the two are told apart by the first
 * byte alone, since JSON text never starts with a zero byte (RFC 8259: only whitespace, `{`, `[`,
 * `"`, a digit, `-`, `t`, `f` or `n` may open it).
 */

/** Bytes the framing adds to every framed value: the magic byte and the schema id. */
export const WIRE_HEADER_BYTES = 5;

const MAGIC = 0;

/** `json` framed with schema `id`. */
export function frameValue(id: number, json: string): Buffer {
  const len = Buffer.byteLength(json, "utf8");
  const out = Buffer.allocUnsafe(WIRE_HEADER_BYTES + len);
  out.writeUInt8(MAGIC, 0);
  out.writeUInt32BE(id, 1);
  out.write(json, WIRE_HEADER_BYTES, len, "utf8");
  return out;
}

/** The schema id of a framed value; null for plain JSON (or anything too short to be framed). */
export function framedSchemaId(value: Buffer): number | null {
  return value.length >= WIRE_HEADER_BYTES && value[0] === MAGIC ? value.readUInt32BE(1) : null;
}

/** A record value's JSON text, whether framed or plain. */
export function eventJsonText(value: Buffer | string): string {
  if (typeof value === "string") return value;
  return framedSchemaId(value) === null ? value.toString("utf8") : value.toString("utf8", WIRE_HEADER_BYTES);
}

/** A record value parsed as JSON, whether framed or plain; throws (SyntaxError) when it is neither. */
export function parseEventValue(value: Buffer | string): unknown {
  return JSON.parse(eventJsonText(value));
}
