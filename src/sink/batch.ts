/**
 * Sizes as Kafka counts them, for every comparison with a Kafka limit: bytes of UTF-8, never
 * string lengths (UTF-16 code units: a CJK character is 1 unit but 3 bytes, so a length-based cap
 * lets through a request up to 3 times the limit, which Kafka refuses on every retry).
 *
 * Record format v2: https://kafka.apache.org/documentation/#recordbatch
 */

/**
 * A record's fields besides key and value, at their largest: length (varint, 5), attributes (1),
 * timestampDelta (varlong, 10), offsetDelta (varint, 5), key length (5), value length (5), header
 * count (5). Headers, when there are any (EVENTSTREAM_CLOUDEVENTS), add headersBytes.
 */
export const RECORD_OVERHEAD_BYTES = 36;

/** Per header, besides its key and value bytes: the key's length and the value's (varints, 5 each). */
export const HEADER_OVERHEAD_BYTES = 10;

/** What a record's headers add to it, at their largest: UTF-8 bytes of every key and value, and each header's overhead. */
export function headersBytes(headers: Readonly<Record<string, string>> | undefined): number {
  if (headers === undefined) return 0;
  let bytes = 0;
  for (const k in headers) bytes += Buffer.byteLength(k, "utf8") + Buffer.byteLength(headers[k]!, "utf8") + HEADER_OVERHEAD_BYTES;
  return bytes;
}

/**
 * An upper bound of headersBytes without counting UTF-8 (a UTF-16 unit is at most 3 bytes): the
 * per-event size check compares against it first, so the exact count runs only near the limit.
 */
export function headersBytesBound(headers: Readonly<Record<string, string>> | undefined): number {
  if (headers === undefined) return 0;
  let units = 0;
  let count = 0;
  for (const k in headers) {
    units += k.length + headers[k]!.length;
    count++;
  }
  return units * 3 + count * HEADER_OVERHEAD_BYTES;
}

/** The header of one record batch (one per partition in a produce request). */
export const RECORD_BATCH_OVERHEAD_BYTES = 61;

/** What one record adds to a produce request: UTF-8 bytes of its value, key and headers, and its overhead. */
export function recordBytes(value: string | null, key: string | null, headers?: Readonly<Record<string, string>>): number {
  return (
    (value === null ? 0 : Buffer.byteLength(value, "utf8")) +
    (key === null ? 0 : Buffer.byteLength(key, "utf8")) +
    RECORD_OVERHEAD_BYTES +
    headersBytes(headers)
  );
}

/** recordBytes, the value's UTF-8 bytes (`valueBytes`) counted already. */
export function recordBytesOf(valueBytes: number, key: string | null, headers?: Readonly<Record<string, string>>): number {
  return valueBytes + (key === null ? 0 : Buffer.byteLength(key, "utf8")) + RECORD_OVERHEAD_BYTES + headersBytes(headers);
}

/**
 * What an event's records on the current-state topic add to the request (see batchEnd for their
 * cap). A record whose value is the event's own string `value` reuses its count `valueBytes`.
 */
export function stateBytes(
  state: readonly { key: string; value: string | null }[] | undefined,
  value: string | null = null,
  valueBytes = 0,
): number {
  let bytes = 0;
  if (state === undefined) return bytes;
  for (const st of state)
    bytes += st.value !== null && st.value === value ? recordBytesOf(valueBytes, st.key) : recordBytes(st.value, st.key);
  return bytes;
}

/**
 * Where the next batch ends: records [head, end) of `sizes`, at most `maxEvents`, and together
 * (with one batch header) at most `maxBytes`; `bytes` is the records' sum, without the header.
 * Always at least one record, so one that is alone over the cap (the message loop,
 * src/loop/maker.ts, keeps each under EVENTSTREAM_MAX_MESSAGE_BYTES) still goes.
 *
 * `stateSizes`: per record, its bytes on the current-state topic, capped on their own: those
 * records never share a partition with the events, and the cap is there for one partition's
 * batch. Counted together they halved the events per request and, measured with `npm run bench`,
 * cut the drain rate by more than half.
 */
export function batchEnd(
  sizes: readonly number[],
  head: number,
  maxEvents: number,
  maxBytes: number,
  stateSizes: readonly number[] = [],
): { end: number; bytes: number } {
  const limit = Math.min(sizes.length, head + maxEvents);
  let end = head;
  /** The records' bytes; the cap also counts the batch header. */
  let bytes = 0;
  let state = 0;
  while (end < limit) {
    const size = sizes[end]!;
    const st = stateSizes[end] ?? 0;
    if (end > head && (RECORD_BATCH_OVERHEAD_BYTES + bytes + size > maxBytes || RECORD_BATCH_OVERHEAD_BYTES + state + st > maxBytes)) break;
    bytes += size;
    state += st;
    end++;
  }
  return { end, bytes: bytes + state };
}
