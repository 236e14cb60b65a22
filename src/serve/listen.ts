import type { Socket } from "node:net";
import { serve, type ServerType } from "@hono/node-server";
import { UserActionError } from "../errors.js";
import type { ApiError } from "./schemas.js";

export type Server = ServerType & { closeAllConnections?: () => void };

/**
 * Node's HTTP parser refuses a request line plus headers over 16 KB (its --max-http-header-size)
 * before the API sees it, and by default answers a bare 431 with no body and no content type. The
 * contract promises an ApiError for every 4xx, and the limit is reachable with valid parameters
 * (100 task ids of 250 characters, percent-encoded UTF-8, found by schemathesis), so say it in JSON
 * and say what to do.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable) return void socket.destroy();
  const [status, reason, error] =
    err.code === "HPE_HEADER_OVERFLOW"
      ? [431, "Request Header Fields Too Large", "request line and headers over 16 KB: name fewer or shorter tasks"]
      : [400, "Bad Request", "malformed HTTP request"];
  const body = JSON.stringify({ error } satisfies ApiError);
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function listen(fetch: (req: Request) => Response | Promise<Response>, host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server: Server = serve({ fetch, hostname: host, port }, () => resolve(server));
    server.on("clientError", answerClientError);
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        e.code === "EADDRINUSE" || e.code === "EACCES" || e.code === "EADDRNOTAVAIL"
          ? new UserActionError(
              `cannot listen on ${host}:${port} (${e.code}): set EVENTSTREAM_SERVE_PORT to a free port or EVENTSTREAM_SERVE_HOST to an address of this host`,
            )
          : e,
      ),
    );
  });
}
