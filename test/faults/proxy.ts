import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * A loopback TCP proxy the test controls: while "cut", existing connections are destroyed and new
 * ones are closed at once (as a broken network path would look to the daemon: resets and refusals).
 * While "muted", what the client sends on existing connections is dropped and the server's bytes
 * still arrive: PostgreSQL keeps streaming to the daemon but never hears its status updates, so the
 * slot stays where it was. A muted connection is left in mid-message: end its client before unmuting.
 */
export class CutProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  cut = false;
  muted = false;
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  async listen(): Promise<number> {
    this.server = createServer((client) => {
      if (this.cut) {
        client.destroy();
        return;
      }
      const upstream = connect({ host: this.targetHost, port: this.targetPort });
      this.sockets.add(client);
      this.sockets.add(upstream);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
      client.on("data", (chunk: Buffer) => {
        if (!this.muted) upstream.write(chunk);
      });
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    const addr = this.server.address();
    this.port = typeof addr === "object" && addr ? addr.port : 0;
    return this.port;
  }

  setCut(cut: boolean): void {
    this.cut = cut;
    if (cut) for (const s of this.sockets) s.destroy();
  }

  setMuted(muted: boolean): void {
    this.muted = muted;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
