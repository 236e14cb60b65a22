import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { InsightEvent } from "../serve/schemas.js";
import {
  AssetEventEvent,
  DagRunEvent,
  NotificationEvent,
  NotificationValue,
  StreamEvent,
  StreamGapEvent,
  TableTruncatedEvent,
  TaskInstanceEvent,
} from "./events.js";

/**
 * The event contract as JSON Schema files, for consumers in other languages. Generated from the zod
 * schemas (the single source); a unit test fails when the committed files drift from them.
 */
export function jsonSchemas(): Record<string, unknown> {
  const doc = (schema: z.ZodType, title: string) => ({
    title,
    ...z.toJSONSchema(schema, { target: "draft-2020-12" }),
  });
  return {
    "task-instance-event.schema.json": doc(TaskInstanceEvent, "Airflow task-instance event"),
    "dag-run-event.schema.json": doc(DagRunEvent, "Airflow DAG-run event"),
    "notification-event.schema.json": doc(NotificationEvent, "Notification event (a task pushed the notification XCom)"),
    "notification-value.schema.json": doc(NotificationValue, "Notification XCom value (what a task pushes)"),
    "asset-event.schema.json": doc(AssetEventEvent, "Airflow asset event (3.x asset_event, 2.x dataset_event), on the asset topic"),
    "table-truncated-event.schema.json": doc(TableTruncatedEvent, "A captured Airflow table was truncated: all its state is void"),
    "stream-gap-event.schema.json": doc(StreamGapEvent, "Events were lost: the replication slot could not serve a range of the WAL"),
    // Every event type in one schema: what the schema registry holds for an event topic (docs/schema-registry.md).
    "stream-event.schema.json": streamEventSchema(),
    "insight-event.schema.json": doc(InsightEvent, "An insight `airflow-eventstream serve` derived, on the insights topic"),
  };
}

/**
 * Any event of the event topics, an anyOf of the types above (the `type` field tells them apart):
 * what the schema registry holds. Draft-07, not 2020-12 like the others (the same keywords: only
 * `$schema` differs), because Apicurio Registry 2.x's compatibility checker knows drafts up to 07
 * and refuses every new version of a 2020-12 schema ("could not determine version").
 */
export function streamEventSchema(): Record<string, unknown> {
  return { title: "airflow-eventstream event (any type)", ...z.toJSONSchema(StreamEvent, { target: "draft-7" }) };
}

export function writeJsonSchemas(dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const [name, schema] of Object.entries(jsonSchemas())) {
    const path = join(dir, name);
    writeFileSync(path, `${JSON.stringify(schema, null, 2)}\n`);
    written.push(path);
  }
  return written;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  for (const p of writeJsonSchemas(process.argv[2] ?? "schemas")) process.stdout.write(`wrote ${p}\n`);
}
