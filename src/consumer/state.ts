import type { Kafka } from "kafkajs";

/**
 * The consumer's door to the current-state topic's reader (src/sink/state-reader.ts, branch
 * i10-state). PLACEHOLDER until that branch is merged: the same shape, nothing read.
 */
export interface CurrentStateView {
  entries: Map<string, { table: "task_instance" | "dag_run"; position: string; event: Record<string, unknown> }>;
  /** The highest position read; null when the topic is empty. */
  position: string | null;
}

export function readState(_kafka: Kafka, topic: string): Promise<CurrentStateView> {
  return Promise.reject(new Error(`reading the state topic ${topic} needs src/sink/state-reader.ts (branch i10-state), not merged yet`));
}
