import { connect } from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../../src/log.js";
import { buildApi, type Api } from "../../../src/serve/api.js";
import { listen, type Server } from "../../../src/serve/listen.js";
import { RecentEvents } from "../../../src/serve/recent.js";
import { ApiError } from "../../../src/serve/schemas.js";
import { RunStore } from "../../../src/serve/view/store.js";

/** Fixes found by schemathesis (test/integration/serve-fuzz.test.ts), each at its smallest. */

let api: Api;
let server: Server;
let port = 0;

beforeAll(async () => {
  api = buildApi({
    store: new RunStore(),
    follower: { phase: "following", failure: null },
    recent: new RecentEvents(10),
    log: createLogger("silent"),
    maxWaiters: 10,
    sse: { maxClients: 10, maxQueued: 10, keepAliveMs: 60_000 },
  });
  server = await listen(api.app.fetch, "127.0.0.1", 0);
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  api.close();
  server.closeAllConnections?.();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** One raw HTTP/1.1 exchange: what Node's parser answers before the app sees the request. */
function raw(request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(request));
    let answer = "";
    socket.on("data", (b: Buffer) => (answer += b.toString("utf8")));
    socket.on("end", () => resolve(answer));
    socket.on("error", reject);
  });
}

describe("serve's HTTP edge", () => {
  it("answers a request line over Node's 16 KB limit with a JSON ApiError 431, as the document declares", async () => {
    // Valid by the contract: task ids of up to 250 characters, up to 100 of them.
    const tasks = Array.from({ length: 100 }, (_, i) => `task=${"é".repeat(200)}${i}`).join("&");
    const answer = await raw(`GET /dags/d/runs/r/ready?${encodeURI(tasks)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [head, body] = answer.split("\r\n\r\n") as [string, string];
    expect(head).toMatch(/^HTTP\/1\.1 431 /);
    expect(head).toMatch(/content-type: application\/json/i);
    expect(ApiError.parse(JSON.parse(body)).error).toMatch(/over 16 KB/);
  });

  it("documents 431 on the routes that take task lists, and /events as a text/event-stream", async () => {
    const doc = (await (await api.app.request("/openapi.json")).json()) as {
      paths: Record<string, { get: { responses: Record<string, { content: Record<string, unknown> }> } }>;
    };
    for (const p of ["/dags/{dag_id}/runs/{run_id}/ready", "/dags/{dag_id}/ready"])
      expect(Object.keys(doc.paths[p]!.get.responses)).toContain("431");
    const events = doc.paths["/events"]!.get.responses;
    expect(Object.keys(events["200"]!.content)).toEqual(["text/event-stream"]);
    expect(Object.keys(events)).toEqual(expect.arrayContaining(["400", "429"]));
  });
});
