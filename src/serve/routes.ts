import { createRoute } from "@hono/zod-openapi";
import { z } from "zod";
import { ApiError, DagListItem, HistoryEntry, ReadyAnswer, RunView, StuckItem } from "./schemas.js";

/**
 * The REST routes as OpenAPI route definitions: the request parameters (zod, so a malformed one is a
 * 400 naming it) and the responses (the contract's schemas, src/serve/schemas.ts). GET /openapi.json
 * is generated from these.
 */

/** Airflow's ID_LEN: no dag_id, run_id or task_id is longer. */
const ID_MAX = 250;
const id = (name: string) =>
  z
    .string()
    .min(1)
    .max(ID_MAX, { message: `at most ${ID_MAX} characters` })
    .describe(name);

const dagParam = z.object({ dag_id: id("The DAG's id") });
const runParams = z.object({ dag_id: id("The DAG's id"), run_id: id("The run's run_id") });

export const MAX_WAIT_SECONDS = 300;
export const MAX_TASKS = 100;

const tasksQuery = z
  .union([id("A task_id"), z.array(id("A task_id")).max(MAX_TASKS, { message: `at most ${MAX_TASKS} tasks` })])
  .optional()
  .describe("The tasks to wait for (repeat: task=a&task=b); none: the whole run");
const waitQuery = z.coerce
  .number({ message: "expected a number of seconds" })
  .min(0, { message: "must be at least 0" })
  .max(MAX_WAIT_SECONDS, { message: `must be at most ${MAX_WAIT_SECONDS}` })
  .optional()
  .describe(`Long poll: wait up to this many seconds (at most ${MAX_WAIT_SECONDS}) for the answer to turn ready`);

/** Names the component in the OpenAPI document without changing the contract's schemas. */
const named = <T extends z.ZodType>(schema: T, name: string) => schema.meta({ id: name });

const json = <T extends z.ZodType>(schema: T, description: string) => ({ content: { "application/json": { schema } }, description });
const apiError = named(ApiError, "ApiError");
const notFound = { 404: json(apiError, "Unknown DAG or run") };
const badRequest = { 400: json(apiError, "A malformed parameter (named in `parameter`)") };
const busy = { 429: json(apiError, "Too many waiting requests or event streams: try again later") };
/** `limit=`: a whole number from 1 to `max`. */
function limitQuery(max: number, dflt: number) {
  return z.coerce
    .number({ message: "expected a whole number" })
    .int({ message: "expected a whole number" })
    .min(1, { message: "must be at least 1" })
    .max(max, { message: `must be at most ${max}` })
    .default(dflt)
    .describe(`At most this many (1..${max}, default ${dflt})`);
}

/** Reachable with valid parameters: 100 task ids of 250 characters, percent-encoded, pass Node's 16 KB limit (src/serve/listen.ts). */
const tooLarge = { 431: json(apiError, "Request line and headers over 16 KB: name fewer or shorter tasks") };

export const routes = {
  dags: createRoute({
    method: "get",
    path: "/dags",
    summary: "The DAGs the service holds runs of",
    responses: { 200: json(z.array(named(DagListItem, "DagListItem")), "DAGs, by dag_id") },
  }),
  runs: createRoute({
    method: "get",
    path: "/dags/{dag_id}/runs",
    summary: "A DAG's runs, newest first",
    request: {
      params: dagParam,
      query: z.object({
        limit: limitQuery(1000, 50),
      }),
    },
    responses: { 200: json(z.array(named(RunView, "RunView")), "Runs, newest logical date first"), ...badRequest, ...notFound },
  }),
  run: createRoute({
    method: "get",
    path: "/dags/{dag_id}/runs/{run_id}",
    summary: "Is it complete? A run, its task instances, and its summary when finished",
    request: { params: runParams },
    responses: { 200: json(named(RunView, "RunView"), "The run"), ...badRequest, ...notFound },
  }),
  history: createRoute({
    method: "get",
    path: "/dags/{dag_id}/runs/{run_id}/history",
    summary: "Can I undo and rerun? Every state change, try and clear of the run, in order",
    request: { params: runParams },
    responses: { 200: json(z.array(named(HistoryEntry, "HistoryEntry")), "Oldest first"), ...badRequest, ...notFound },
  }),
  ready: createRoute({
    method: "get",
    path: "/dags/{dag_id}/runs/{run_id}/ready",
    summary: "When can I start? Whether the named tasks (or the run) finished successfully; wait= long-polls",
    request: { params: runParams, query: z.object({ task: tasksQuery, wait: waitQuery }) },
    responses: {
      200: json(named(ReadyAnswer, "ReadyAnswer"), "The answer (at the deadline, ready may be false)"),
      ...badRequest,
      ...notFound,
      ...busy,
      ...tooLarge,
    },
  }),
  readyByDate: createRoute({
    method: "get",
    path: "/dags/{dag_id}/ready",
    summary: "When can I start? The same, for the run with this logical date",
    request: {
      params: dagParam,
      query: z.object({
        logical_date: z
          .string()
          .max(64)
          .refine((s) => Number.isFinite(Date.parse(s)), { message: "expected an ISO-8601 date-time" })
          .describe("The run's logical date, ISO-8601"),
        task: tasksQuery,
        wait: waitQuery,
      }),
    },
    responses: { 200: json(named(ReadyAnswer, "ReadyAnswer"), "The answer"), ...badRequest, ...notFound, ...busy, ...tooLarge },
  }),
  stuck: createRoute({
    method: "get",
    path: "/stuck",
    summary: "Where are we stuck? Task instances waiting past their threshold, runs running past their DAG's p95",
    request: { query: z.object({ dag: id("Only this DAG").optional(), limit: limitQuery(10_000, 1000) }) },
    responses: { 200: json(z.array(named(StuckItem, "StuckItem")), "Longest first, the first `limit`"), ...badRequest },
  }),
};

/**
 * GET /events in the document, so a client finds the stream beside the questions. Documented only:
 * sse.ts answers it with its own checks (a bad Last-Event-ID names the header as the client sent
 * it), and fuzzers leave it out (a stream never ends).
 */
export const eventsDoc = createRoute({
  method: "get",
  path: "/events",
  summary: "The events as Server-Sent Events (id: position, event: type, data: the event's JSON); resumable with Last-Event-ID",
  request: {
    query: z.object({
      dag: z
        .union([id("A dag_id"), z.array(id("A dag_id")).max(100)])
        .optional()
        .describe("Only these DAGs (repeat: dag=a&dag=b); none: every DAG"),
      last_event_id: z.string().optional().describe("As the Last-Event-ID header, for clients that cannot set it"),
    }),
    headers: z.object({
      "Last-Event-ID": z
        .string()
        .optional()
        .describe("Resume after this event position (16 hex digits, '-', 8 hex digits); older than the buffer: an `event: reset` first"),
    }),
  },
  responses: {
    200: {
      content: { "text/event-stream": { schema: z.string().describe("A stream of SSE messages; `: keep-alive` comments between") } },
      description: "The stream, until the client closes it (or falls 10,000 events behind: reconnect with Last-Event-ID)",
    },
    ...badRequest,
    ...busy,
  },
});

/** The task query as a list (one value or several). */
export function taskList(task: string | string[] | undefined): string[] {
  return task === undefined ? [] : typeof task === "string" ? [task] : task;
}
