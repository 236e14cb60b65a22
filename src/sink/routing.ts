import { createHash } from "node:crypto";

/** Kafka's topic-name rules: [a-zA-Z0-9._-], at most 249 characters, not "." or "..". */
const MAX_TOPIC = 249;
const ILLEGAL = /[^a-zA-Z0-9._-]/g;

/**
 * Where an event goes. One topic for everything by default; with a template ("airflow.{dag_id}")
 * one topic per DAG. Airflow's dag_id alphabet is already Kafka-legal, so sanitising matters only
 * for over-long ids: those keep a readable prefix and end in a hash, so distinct DAGs never share
 * a topic by truncation.
 */
export class TopicRouter {
  private readonly cache = new Map<string, string>();

  constructor(
    private readonly topic: string,
    private readonly template: string | null,
  ) {}

  topicFor(dagId: string | null): string {
    if (this.template === null || dagId === null) return this.topic;
    let t = this.cache.get(dagId);
    if (t === undefined) {
      t = sanitizeTopic(this.template.replaceAll("{dag_id}", dagId));
      this.cache.set(dagId, t);
    }
    return t;
  }
}

export function sanitizeTopic(name: string): string {
  let t = name.replace(ILLEGAL, "_");
  if (t === "." || t === "..") t = t.replaceAll(".", "_");
  if (t.length > MAX_TOPIC) {
    const hash = createHash("sha256").update(name).digest("hex").slice(0, 16);
    t = `${t.slice(0, MAX_TOPIC - hash.length - 1)}-${hash}`;
  }
  return t;
}
