import type { Config } from "../config.js";

/** One transactional id per slot: a second daemon on the same slot fences the first. */
export function transactionalIdFor(slot: string): string {
  return `airflow-eventstream.${slot}`;
}

/** Where this slot's checkpoints go, and under which key. */
export interface CheckpointTarget {
  topic: string;
  key: string;
}

/** What the delivery settings ask of Kafka; every sink module reads them from here. */
export interface DeliveryMode {
  /** Exactly-once only: where the checkpoints go, under which key, with which producer id. */
  eos: (CheckpointTarget & { transactionalId: string }) | null;
  /** Where the checkpoints go and under which key; null: at-least-once without gap detection. */
  ckpt: CheckpointTarget | null;
}

export function deliveryMode(cfg: Pick<Config, "delivery" | "gapDetection" | "checkpointTopic" | "slot">): DeliveryMode {
  const eos =
    cfg.delivery === "exactly-once" ? { topic: cfg.checkpointTopic, key: cfg.slot, transactionalId: transactionalIdFor(cfg.slot) } : null;
  const ckpt = cfg.gapDetection || eos ? { topic: cfg.checkpointTopic, key: cfg.slot } : null;
  return { eos, ckpt };
}
