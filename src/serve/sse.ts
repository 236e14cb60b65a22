import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { ApiError } from "./schemas.js";
import type { RecentEvent, RecentEvents } from "./recent.js";

export interface SseLimits {
  /** Event streams open at once; more are refused (429). */
  maxClients: number;
  /** Events queued for one slow client before it is cut off (it reconnects with Last-Event-ID). */
  maxQueued: number;
  /** A comment line this often keeps proxies from closing an idle stream. */
  keepAliveMs: number;
}

const POSITION = /^[0-9A-F]{16}-[0-9A-F]{8}$/;
const MAX_DAGS = 100;
let open = 0;

/**
 * GET /events?dag=a&dag=b: the events as Server-Sent Events, `id:` the event's position, `event:` its
 * type, `data:` its JSON as published. Events about every DAG (table_truncated, stream_gap) go to
 * every client. Last-Event-ID (header, or `last_event_id=`) resumes after that position from the
 * buffer of recent events (RecentEvents); from before what the buffer holds, an `event: reset` comes
 * first: re-read the runs shown, then follow. Positions increase per DAG; across DAGs (partitions)
 * they arrive in no common order, so a resume is exact for a stream of one DAG, or of DAGs of one
 * partition.
 */
export function eventStream(c: Context, recent: RecentEvents, limits: SseLimits): Response {
  const dags = c.req.queries("dag") ?? [];
  if (dags.length > MAX_DAGS || dags.some((d) => d.length === 0 || d.length > 250))
    return c.json({ error: `dag: 1..${MAX_DAGS} DAG ids of 1..250 characters`, parameter: "dag" } satisfies ApiError, 400);
  const last = c.req.header("last-event-id") ?? c.req.query("last_event_id") ?? null;
  if (last !== null && !POSITION.test(last))
    return c.json(
      {
        error: "Last-Event-ID: expected an event position (16 hex digits, '-', 8 hex digits)",
        parameter: "Last-Event-ID",
      } satisfies ApiError,
      400,
    );
  if (open >= limits.maxClients)
    return c.json({ error: `too many event streams open (${limits.maxClients}): try again later` } satisfies ApiError, 429);
  const wanted = dags.length === 0 ? null : new Set(dags);
  const pass = (e: RecentEvent) => wanted === null || e.dagId === null || wanted.has(e.dagId);
  open++;
  return streamSSE(c, async (stream) => {
    const queue: RecentEvent[] = [];
    let wake: (() => void) | null = null;
    let cut = false;
    // Subscribe before reading the buffer, so nothing falls between the two; duplicates are skipped by position.
    const off = recent.subscribe((e) => {
      if (!pass(e)) return;
      if (queue.length >= limits.maxQueued) cut = true;
      else queue.push(e);
      wake?.();
    });
    const keepAlive = setInterval(() => void stream.write(": keep-alive\n\n").catch(() => undefined), limits.keepAliveMs);
    stream.onAbort(() => wake?.());
    try {
      const resent = new Set<string>();
      if (last !== null) {
        const held = recent.after(last);
        if (!held.complete)
          await stream.writeSSE({
            event: "reset",
            data: JSON.stringify({ reason: "events after Last-Event-ID are older than the buffer holds: re-read the runs shown" }),
          });
        for (const e of held.events)
          if (pass(e)) {
            resent.add(e.position);
            await write(stream, e);
          }
      }
      while (!stream.aborted && !cut) {
        const e = queue.shift();
        if (e === undefined) {
          await new Promise<void>((r) => (wake = r));
          wake = null;
          continue;
        }
        // Live events are sent as they come: across partitions a lower position may follow a higher one.
        if (!resent.has(e.position)) await write(stream, e);
      }
    } finally {
      off();
      clearInterval(keepAlive);
      open--;
    }
  });
}

async function write(
  stream: { writeSSE: (m: { id: string; event: string; data: string }) => Promise<void> },
  e: RecentEvent,
): Promise<void> {
  await stream.writeSSE({ id: e.position, event: e.type, data: e.json });
}
