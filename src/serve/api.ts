import { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { z } from "zod";
import { describeError } from "../errors.js";
import type { Logger } from "../log.js";
import type { Follower } from "./follow.js";
import { ReadyAnswer, type ApiError } from "./schemas.js";
import { eventsDoc, MAX_WAIT_SECONDS, routes, taskList } from "./routes.js";
import { eventStream, type SseLimits } from "./sse.js";
import type { RecentEvents } from "./recent.js";
import { servePage } from "./static.js";
import { Waiters } from "./waiters.js";
import type { ReadyView } from "./view/ready.js";
import type { RunStore } from "./view/store.js";
import { RunView, HistoryEntry, StuckItem, DagListItem } from "./schemas.js";

export interface ApiDeps {
  store: RunStore;
  follower: Pick<Follower, "phase" | "failure">;
  recent: RecentEvents;
  log: Logger;
  /** Long polls held at once. */
  maxWaiters: number;
  sse: SseLimits;
  /** The clock /stuck measures with (tests move it). */
  now?: () => number;
}

export interface Api {
  app: OpenAPIHono;
  close(): void;
}

const notFound = (c: Context, error: string) => c.json({ error } satisfies ApiError, 404);

/**
 * Every answer is validated against the contract before it is sent: a view that does not fit its
 * schema is a bug of the service, logged and answered 500, never a malformed body a client trusts.
 */
function send<T extends z.ZodType>(c: Context, schema: T, body: z.input<T>): Response {
  return c.json(schema.parse(body) as object, 200);
}

export function buildApi(deps: ApiDeps): Api {
  const { store } = deps;
  const now = deps.now ?? Date.now;
  const waiters = new Waiters(store, deps.maxWaiters);
  const app = new OpenAPIHono({
    defaultHook: (result, c) => {
      if (result.success) return;
      const issue = result.error.issues[0];
      const parameter = String(issue?.path[0] ?? result.target);
      return c.json({ error: `${parameter}: ${issue === undefined ? "invalid" : issueMessage(issue)}`, parameter } satisfies ApiError, 400);
    },
  });
  app.onError((e, c) => {
    deps.log.error({ err: describeError(e), path: c.req.path }, "request failed");
    return c.json({ error: "internal error (logged by the service)" } satisfies ApiError, 500);
  });
  app.notFound((c) => c.json({ error: `no such endpoint: ${c.req.method} ${c.req.path} (see /openapi.json)` } satisfies ApiError, 404));

  app.openapi(routes.dags, (c) => send(c, DagListItem.array(), store.dags(now())) as never);
  app.openapi(routes.runs, (c) => {
    const { dag_id } = c.req.valid("param");
    if (!store.hasDag(dag_id)) return notFound(c, `no runs of DAG "${dag_id}" are known to this service`) as never;
    return send(c, RunView.array(), store.runs(dag_id, { limit: c.req.valid("query").limit })) as never;
  });
  app.openapi(routes.run, (c) => {
    const { dag_id, run_id } = c.req.valid("param");
    const run = store.run(dag_id, run_id);
    return (run === null ? notFound(c, unknownRun(dag_id, run_id)) : send(c, RunView, run)) as never;
  });
  app.openapi(routes.history, (c) => {
    const { dag_id, run_id } = c.req.valid("param");
    const h = store.history(dag_id, run_id);
    return (h === null ? notFound(c, unknownRun(dag_id, run_id)) : send(c, HistoryEntry.array(), h.entries)) as never;
  });
  app.openapi(
    routes.stuck,
    (c) => send(c, StuckItem.array(), store.stuck(now(), c.req.valid("query").dag).slice(0, c.req.valid("query").limit)) as never,
  );

  readyRoutes(app, store, waiters, deps.maxWaiters);
  app.get("/events", (c) => eventStream(c, deps.recent, deps.sse));
  app.openAPIRegistry.registerPath(eventsDoc);
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/readyz", (c) => {
    const phase = deps.follower.phase;
    if (phase === "following") return c.text("following the event topics\n");
    return c.text(
      phase === "failed" ? `reading Kafka failed: ${deps.follower.failure ?? "unknown"}\n` : `${phase.replace("_", " ")}\n`,
      503,
    );
  });
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "airflow-eventstream serve",
      version: "1",
      description: "The four questions about Airflow DAG runs, answered from the event stream (docs/serve.md)",
    },
  });
  servePage(app);
  return { app, close: () => waiters.close() };
}

/** The long polls: ready by run id and by logical date. */
function readyRoutes(app: OpenAPIHono, store: RunStore, waiters: Waiters, maxWaiters: number): void {
  const answerReady = async (c: Context, dagId: string, runId: string, find: () => ReadyView | null, waitSeconds: number | undefined) => {
    const started = performance.now();
    const ms = Math.min(waitSeconds ?? 0, MAX_WAIT_SECONDS) * 1000;
    const pending = waiters.wait(dagId, runId, ms, () => {
      const v = find();
      return { done: v?.ready === true, value: v };
    });
    if (pending === null) return c.json({ error: `too many waiting requests (${maxWaiters}): try again later` } satisfies ApiError, 429);
    const answer = await pending;
    if (answer === null)
      return notFound(c, runId === "*" ? `no run of DAG "${dagId}" with that logical date is known` : unknownRun(dagId, runId));
    return send(c, ReadyAnswer, { ...answer, waited_seconds: (performance.now() - started) / 1000 });
  };
  app.openapi(routes.ready, async (c) => {
    const { dag_id, run_id } = c.req.valid("param");
    const q = c.req.valid("query");
    const tasks = taskList(q.task);
    if (store.run(dag_id, run_id) === null && (q.wait ?? 0) === 0) return notFound(c, unknownRun(dag_id, run_id)) as never;
    return (await answerReady(c, dag_id, run_id, () => store.ready(dag_id, run_id, tasks), q.wait)) as never;
  });
  app.openapi(routes.readyByDate, async (c) => {
    const { dag_id } = c.req.valid("param");
    const q = c.req.valid("query");
    const tasks = taskList(q.task);
    const find = () => {
      const run = store.runByLogicalDate(dag_id, q.logical_date);
      return run === null ? null : store.ready(dag_id, run.run_id, tasks);
    };
    return (await answerReady(c, dag_id, "*", find, q.wait)) as never;
  });
}

/** A union's issue says only "Invalid input": the message of the branch that got furthest says what is wrong. */
function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code !== "invalid_union") return issue.message;
  const inner = issue.errors.flat().find((i) => i.code !== "invalid_type");
  return inner?.message ?? "expected one value or a list of values";
}

function unknownRun(dagId: string, runId: string): string {
  return `run "${runId}" of DAG "${dagId}" is not known to this service (not seen, or dropped from its bounded view)`;
}
