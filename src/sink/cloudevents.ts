import type { StreamEvent } from "../airflow/events.js";
import type { SourceIdentity } from "../checkpoint/position.js";
import { assertNever, ConfigError } from "../errors.js";

/**
 * CloudEvents 1.0 in binary content mode, per the Kafka protocol binding
 * (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md):
 * the attributes go in `ce_` headers and the record's value stays the event's JSON, byte for byte,
 * so consumers that ignore headers see no change. The mapping is documented in docs/events.md.
 */

/** A record's CloudEvents headers: plain strings, which kafkajs writes as UTF-8. */
export type CloudEventHeaders = Record<string, string>;

/** `ce_type` per event type: reverse-DNS names, one per event type of src/airflow/events.ts. */
export const CLOUDEVENT_TYPES = {
  task_instance: "org.apache.airflow.task_instance.state_changed",
  dag_run: "org.apache.airflow.dag_run.state_changed",
  notification: "org.apache.airflow.notification.pushed",
  table_truncated: "org.apache.airflow.tables.truncated",
  stream_gap: "org.apache.airflow.eventstream.stream_gap",
  asset_event: "org.apache.airflow.asset_event.created",
} as const satisfies Record<StreamEvent["type"], string>;

/**
 * The default `ce_source`: the PostgreSQL cluster (its system identifier, which a physical standby
 * shares, so a failover keeps it) and the database. A URN, so it is an absolute URI as the spec
 * recommends, and never mistaken for a connection string. Without a system identifier (a managed
 * service that withholds pg_control_system()) nothing identifies the cluster, so the operator names it.
 */
export function cloudEventsSource(identity: SourceIdentity): string {
  if (identity.systemIdentifier === null) {
    throw new ConfigError(
      "EVENTSTREAM_CLOUDEVENTS=binary: the server does not tell its system identifier (pg_control_system()), from which ce_source is made; set EVENTSTREAM_CLOUDEVENTS_SOURCE to a URI naming this Airflow database, e.g. urn:airflow-eventstream:prod-airflow",
    );
  }
  return `urn:airflow-eventstream:${identity.systemIdentifier}:${encodeURIComponent(identity.database)}`;
}

/**
 * A subject path segment: "/" separates segments and "%" escapes, so both are escaped in the value
 * (a run_id may hold either); everything else stays readable ("manual__2026-11-25T08:17:27+00:00").
 */
function segment(s: string): string {
  return s.includes("/") || s.includes("%") ? s.replaceAll("%", "%25").replaceAll("/", "%2F") : s;
}

/**
 * `ce_subject`: what the event is about, within the source. Task instances and notifications:
 * `<dag_id>/<run_id>/<task_id>`, plus `/<map_index>` for a mapped one (map_index >= 0); DAG runs:
 * `<dag_id>/<run_id>`; a TRUNCATE: the tables, comma-separated; an asset event: the asset's URI. None (undefined) for a stream gap,
 * which is about every row, and for an Airflow 3 delete whose key the WAL did not carry.
 */
export function cloudEventSubject(event: StreamEvent): string | undefined {
  switch (event.type) {
    case "task_instance":
    case "notification": {
      if (event.dag_id === null || event.run_id === null || event.task_id === null) return undefined;
      const base = `${segment(event.dag_id)}/${segment(event.run_id)}/${segment(event.task_id)}`;
      return event.map_index !== null && event.map_index >= 0 ? `${base}/${event.map_index}` : base;
    }
    case "dag_run":
      return `${segment(event.dag_id)}/${segment(event.run_id)}`;
    case "table_truncated":
      return event.tables.join(",");
    case "stream_gap":
      return undefined;
    case "asset_event":
      // The asset's URI as it is (it is the record's key too); none when the asset was unknown.
      return event.asset.uri ?? undefined;
    default:
      return assertNever(event);
  }
}

/**
 * The session's header maker; undefined when CloudEvents are off. The source is the setting's, or
 * made from the identity the start read (gap detection), or read now when gap detection is off.
 */
export async function cloudEventsFor(
  settings: { source: string | null } | null,
  identity: SourceIdentity | null,
  readIdentity: () => Promise<SourceIdentity>,
): Promise<CloudEvents | undefined> {
  if (settings === null) return undefined;
  return new CloudEvents(settings.source ?? cloudEventsSource(identity ?? (await readIdentity())));
}

/** Makes each event's headers for one source. */
export class CloudEvents {
  /** `source`: ce_source of every record. */
  constructor(readonly source: string) {}

  /** The headers of `event`'s record: one object of one shape per record (this runs once per event). */
  headersFor(event: StreamEvent): CloudEventHeaders {
    const h: CloudEventHeaders = {
      ce_specversion: "1.0",
      ce_id: event.source.position,
      ce_source: this.source,
      ce_type: CLOUDEVENT_TYPES[event.type],
      ce_time: event.source.commit_time,
      "content-type": "application/json",
    };
    const subject = cloudEventSubject(event);
    if (subject !== undefined) h.ce_subject = subject;
    return h;
  }
}
