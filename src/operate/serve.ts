import { readFileSync } from "node:fs";
import { z } from "zod";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import { Metrics } from "./metrics.js";
import { OperateServer } from "./http.js";
import { SlotProbe } from "./slot-probe.js";

/** The package's version: package.json sits two levels above both src/operate/ and dist/operate/. */
export function packageVersion(): string {
  try {
    const pkg = z.object({ version: z.string() }).parse(JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")));
    return pkg.version;
  } catch {
    return "unknown";
  }
}

/** The daemon's metrics, with the build facts filled in. */
export function daemonMetrics(cfg: Config): Metrics {
  return new Metrics({ version: packageVersion(), airflowSchema: cfg.airflowSchema, delivery: cfg.delivery, stallMs: cfg.http.stallMs });
}

export interface Operate {
  /** The port listened on; null: EVENTSTREAM_HTTP_PORT=0. */
  readonly port: number | null;
  close(): Promise<void>;
}

/**
 * Starts the HTTP endpoint and the slot probe (none of it with EVENTSTREAM_HTTP_PORT=0). The probe
 * runs a few times per stall period, so /readyz turns within the configured time, and at most every
 * 5 s otherwise: each probe is one short query on an idle connection.
 */
export async function startOperate(cfg: Config, log: Logger, metrics: Metrics): Promise<Operate> {
  if (cfg.http.port === 0) return { port: null, close: async () => undefined };
  const opLog = log.child({ module: "operate" });
  const server = new OperateServer(metrics, opLog);
  const port = await server.listen(cfg.http.host, cfg.http.port);
  const probe = new SlotProbe(cfg, metrics, opLog, Math.min(5_000, Math.max(500, cfg.http.stallMs / 4)));
  probe.start();
  return {
    port,
    close: async () => {
      await probe.stop();
      await server.close();
    },
  };
}
