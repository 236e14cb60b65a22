import type { Config } from "../config.js";
import { ConfigError, TransientError } from "../errors.js";
import type { Logger } from "../log.js";
import { createClients } from "../sink/client.js";
import { deliveryMode } from "../sink/delivery.js";
import { privateReader } from "../sink/reader.js";
import { SnapshotProgress, parseJson } from "./spec.js";

/** What `--wait` reports as the job goes. */
export type JobState =
  | { kind: "queued" }
  | { kind: "running"; table: string; rows: number }
  | { kind: "done"; rows: number }
  | { kind: "failed"; rows: number; error: string };

/** The job's state in a checkpoint value (null: the job is not in it, e.g. not seen by the daemon yet). */
export function jobState(checkpointValue: string, id: string): JobState | null {
  const cp = safeSnapshot(checkpointValue);
  if (cp === null) return null;
  const done = cp.done.find((d) => d.id === id);
  if (done) return done.error === undefined ? { kind: "done", rows: done.rows } : { kind: "failed", rows: done.rows, error: done.error };
  if (cp.active?.spec.id === id)
    return { kind: "running", table: cp.active.spec.tables[cp.active.table] ?? "finishing", rows: cp.active.rows };
  return cp.queued.some((q) => q.id === id) ? { kind: "queued" } : null;
}

function safeSnapshot(value: string): SnapshotProgress | null {
  try {
    const v = JSON.parse(value) as { snapshot?: unknown };
    return v.snapshot === undefined ? null : parseJson(SnapshotProgress, JSON.stringify(v.snapshot));
  } catch {
    return null;
  }
}

/**
 * Follows a job through the checkpoint records (where the daemon keeps progress), read with a
 * consumer of its own that commits nothing and fences nothing; calls `report` on each change of
 * state and resolves with the rows once the job is done, or rejects after `timeoutMs`.
 */
export async function waitForJob(cfg: Config, log: Logger, id: string, report: (s: JobState) => void, timeoutMs: number): Promise<number> {
  const ckpt = deliveryMode(cfg).ckpt;
  if (ckpt === null)
    throw new ConfigError("snapshot --wait reads progress from the checkpoint topic, which EVENTSTREAM_GAP_DETECTION=false turns off");
  const clients = createClients(cfg, log);
  const { consumer, close } = privateReader(clients.kafka, `${cfg.kafka.clientId}.snapshot-wait`, () => undefined);
  let last = "";
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [ckpt.topic], fromBeginning: true });
    return await new Promise<number>((resolve, reject) => {
      timer = setTimeout(() => reject(new TransientError(`snapshot ${id} not done within ${timeoutMs} ms`)), timeoutMs);
      consumer
        .run({
          eachMessage: async ({ message }) => {
            if (message.key?.toString() !== ckpt.key || message.value === null) return;
            const s = jobState(message.value.toString(), id);
            if (s === null || JSON.stringify(s) === last) return;
            last = JSON.stringify(s);
            report(s);
            if (s.kind === "done") resolve(s.rows);
            if (s.kind === "failed") reject(new Error(`snapshot ${id} failed after ${s.rows} rows: ${s.error}`));
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await close();
  }
}
