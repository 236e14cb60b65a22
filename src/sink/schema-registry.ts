import type { Message } from "kafkajs";
import type { Config } from "../config.js";
import { streamEventSchema } from "../airflow/json-schema.js";
import { coerceError, SchemaRegistryError, TransientError } from "../errors.js";
import type { Logger } from "../log.js";
import { frameValue } from "./wire-format.js";

/**
 * EVENTSTREAM_SCHEMA_REGISTRY_URL: the event schema registered with a Confluent-compatible registry
 * and every value of the event and current-state topics framed with its id (wire-format.ts).
 *
 * Subjects: TopicNameStrategy, `<topic>-value`, each holding one schema for every event type (the
 * union of schemas/stream-event.schema.json; the `type` field tells the types apart). Every
 * topic the daemon writes events to mixes types (one topic by default; with a topic template, a
 * DAG's topic still carries its task-instance, DAG-run and notification events), and the stock
 * serialisers, Kafka Connect's converters and ksqlDB look schemas up by topic. Per-type subjects
 * (RecordNameStrategy) would need every consumer configured for that strategy. See
 * docs/schema-registry.md for the compatibility rules.
 */

/** The compatibility level the daemon sets on each of its subjects (docs/schema-registry.md). */
export const SUBJECT_COMPATIBILITY = "BACKWARD_TRANSITIVE";

const CONTENT_TYPE = "application/vnd.schemaregistry.v1+json";
const REQUEST_TIMEOUT_MS = 10_000;

/** The subject of a topic's values (TopicNameStrategy). */
export function valueSubject(topic: string): string {
  return `${topic}-value`;
}

/** The few calls of the Confluent REST API the daemon makes. */
export class SchemaRegistryClient {
  private readonly base: string;

  constructor(url: string) {
    this.base = url.replace(/\/+$/, "");
  }

  /** Registers `schema` (JSON Schema text) under `subject`; the registry's id (the same id again when already registered). */
  async register(subject: string, schema: string): Promise<number> {
    const body = await this.call("POST", `/subjects/${encodeURIComponent(subject)}/versions`, { schemaType: "JSON", schema });
    const id = (body as { id?: unknown }).id;
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > 0xffffffff)
      throw new SchemaRegistryError(`the schema registry at ${this.base} answered the registration of ${subject} without a schema id`);
    return id;
  }

  async setCompatibility(subject: string, level: string): Promise<void> {
    await this.call("PUT", `/config/${encodeURIComponent(subject)}`, { compatibility: level });
  }

  /** The schema text of `id`, as a consumer reads it. */
  async schemaById(id: number): Promise<string> {
    const body = (await this.call("GET", `/schemas/ids/${id}`)) as { schema?: unknown };
    if (typeof body.schema !== "string")
      throw new SchemaRegistryError(`the schema registry at ${this.base} has no schema text for id ${id}`);
    return body.schema;
  }

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const url = `${this.base}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { "Content-Type": CONTENT_TYPE, Accept: CONTENT_TYPE },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (e: unknown) {
      const why = coerceError(e);
      const cause = why.cause instanceof Error ? `: ${why.cause.message}` : "";
      throw new UnreachableRegistry(
        `the schema registry at ${this.base} could not be reached (${why.message}${cause}). Start it, or fix EVENTSTREAM_SCHEMA_REGISTRY_URL, or unset it to publish plain JSON`,
      );
    }
    const text = await res.text();
    if (!res.ok) {
      const refusal = registryMessage(text);
      const hint =
        res.status === 409
          ? `the new event schema is not ${SUBJECT_COMPATIBILITY}-compatible with what the subject holds: see docs/schema-registry.md (compatibility) before changing the subject's versions or compatibility`
          : res.status === 404
            ? "is EVENTSTREAM_SCHEMA_REGISTRY_URL the API root (Apicurio: .../apis/ccompat/v7)?"
            : "see the registry's log";
      throw new SchemaRegistryError(
        `the schema registry at ${this.base} refused ${method} ${path}: HTTP ${res.status} ${refusal}; ${hint}`,
      );
    }
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new SchemaRegistryError(
        `the schema registry at ${this.base} answered ${method} ${path} with something not JSON: is this a schema registry?`,
      );
    }
  }
}

/** The registry did not answer: a SchemaRegistryError at start, retried (TransientError) once the daemon streams. */
class UnreachableRegistry extends SchemaRegistryError {}

function registryMessage(text: string): string {
  try {
    const m = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof m === "string") return m;
  } catch {
    // Not the registry's JSON error body: say what came back, shortened.
  }
  return text.slice(0, 300);
}

/**
 * The schema ids of the topics written so far, and the framing of their values. Made once per
 * process (the Daemon): registered at start for the fixed topics, and for a topic template's DAG
 * topics when the first record goes to one (registering again only returns the same id).
 */
export class ValueFraming {
  private readonly ids = new Map<string, number>();
  private readonly schema = JSON.stringify(streamEventSchema());
  private started = false;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    private readonly client: SchemaRegistryClient,
  ) {}

  /** At start: the fixed topics' subjects; every failure is a SchemaRegistryError saying what to do. */
  async start(): Promise<void> {
    const topics = [this.cfg.topic];
    if (this.cfg.stateTopic !== null) topics.push(this.cfg.stateTopic);
    if (this.cfg.assetTopic !== null) topics.push(this.cfg.assetTopic);
    await this.ensureTopics(topics);
    this.started = true;
  }

  /**
   * Registers the subjects of the topics not seen yet (neither the dead-letter topic, whose summaries
   * are not events, nor the checkpoint topic). Once streaming, a registry that does not answer is a
   * TransientError: the session restarts from the last acknowledged position and tries again.
   */
  async ensureTopics(topics: readonly string[]): Promise<void> {
    for (const topic of topics) {
      if (this.ids.has(topic) || !this.frames(topic)) continue;
      const subject = valueSubject(topic);
      try {
        await this.client.setCompatibility(subject, SUBJECT_COMPATIBILITY);
        const id = await this.client.register(subject, this.schema);
        this.ids.set(topic, id);
        this.log.info({ subject, schemaId: id, compatibility: SUBJECT_COMPATIBILITY }, "event schema registered");
      } catch (e: unknown) {
        if (this.started && e instanceof UnreachableRegistry) throw new TransientError(`${e.message}; retrying`);
        throw e;
      }
    }
  }

  /** Whether a topic's values are framed: events and current state, not the dead-letter or checkpoint topics. */
  frames(topic: string): boolean {
    return topic !== this.cfg.deadLetterTopic && topic !== this.cfg.checkpointTopic;
  }

  /** The messages of one topic with their values framed (tombstones stay null); unchanged for a topic not framed. */
  frameMessages(topic: string, messages: Message[]): Message[] {
    const id = this.ids.get(topic);
    if (id === undefined) {
      if (this.frames(topic)) throw new Error(`internal: no schema id for topic ${topic} (ensureTopics must precede framing)`);
      return messages;
    }
    return messages.map((m) => (typeof m.value === "string" ? { ...m, value: frameValue(id, m.value) } : m));
  }
}

/** EVENTSTREAM_SCHEMA_REGISTRY_URL's framing, registered; null when it is unset. */
export async function startValueFraming(cfg: Config, log: Logger): Promise<ValueFraming | null> {
  if (cfg.schemaRegistryUrl === null) return null;
  const framing = new ValueFraming(cfg, log.child({ module: "schema-registry" }), new SchemaRegistryClient(cfg.schemaRegistryUrl));
  await framing.start();
  return framing;
}
