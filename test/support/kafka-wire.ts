import { readFileSync } from "node:fs";
import { connect, type TLSSocket } from "node:tls";
import type { RawRequest } from "../../src/sink/wire/sasl.js";

/**
 * A minimal Kafka connection over TLS for the tests of src/sink/wire: 4-byte size framing, request
 * header v1 (api key, version, correlation id, client id), response header v0 (correlation id).
 * Only non-flexible request versions: flexible ones need header v2, which this does not write.
 */
export interface WireConnection {
  request: RawRequest;
  close(): void;
}

export async function connectTls(broker: string, caFile: string, clientId = "eventstream-wire-test"): Promise<WireConnection> {
  const [host, port] = [broker.slice(0, broker.lastIndexOf(":")), Number(broker.slice(broker.lastIndexOf(":") + 1))];
  const socket: TLSSocket = await new Promise((resolve, reject) => {
    const s = connect({ host, port, ca: readFileSync(caFile) }, () => resolve(s));
    s.once("error", reject);
  });
  const pending = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void }>();
  let buffered = Buffer.alloc(0);
  let nextId = 1;
  let closedWith: Error | null = null;
  const fail = (e: Error) => {
    closedWith ??= e;
    for (const p of pending.values()) p.reject(closedWith);
    pending.clear();
  };
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readInt32BE(0)) {
      const frame = buffered.subarray(4, 4 + buffered.readInt32BE(0));
      buffered = buffered.subarray(4 + frame.length);
      const id = frame.readInt32BE(0);
      const p = pending.get(id);
      if (!p) return fail(new Error(`${broker} answered correlation id ${id}, which no request has`));
      pending.delete(id);
      p.resolve(frame.subarray(4));
    }
  });
  socket.on("error", (e) => fail(e));
  socket.on("close", () => fail(new Error(`${broker} closed the connection`)));

  const client = Buffer.from(clientId, "utf8");
  const request: RawRequest = (apiKey, apiVersion, body) => {
    if (closedWith) return Promise.reject(closedWith);
    const id = nextId++;
    const header = Buffer.alloc(4 + 2 + 2 + 4 + 2 + client.length);
    let at = header.writeInt32BE(header.length - 4 + body.length, 0);
    at = header.writeInt16BE(apiKey, at);
    at = header.writeInt16BE(apiVersion, at);
    at = header.writeInt32BE(id, at);
    at = header.writeInt16BE(client.length, at);
    client.copy(header, at);
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      socket.write(Buffer.concat([header, body]));
    });
  };
  return { request, close: () => socket.destroy() };
}
