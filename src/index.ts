/** The package's public surface: the event contract for consumers, and the daemon for embedding. */
export {
  AirflowEvent,
  StreamEvent,
  TaskInstanceEvent,
  DagRunEvent,
  NotificationEvent,
  NotificationValue,
  TableTruncatedEvent,
  StreamGapEvent,
  SourcePosition,
  TaskState,
} from "./airflow/events.js";
/** The insights `serve` publishes (docs/insights.md), for consumers of the insights topic. */
export { InsightEvent } from "./serve/schemas.js";
export { loadConfig, type Config } from "./config.js";
export { Daemon } from "./main.js";
export * from "./errors.js";
export { eventConsumer, EventConsumer, partitionScope } from "./consumer/consumer.js";
export type { PositionStore } from "./consumer/sequencer.js";
export type { ConsumerOptions, RunOptions, EventContext, BootstrapInfo, StartFrom } from "./consumer/types.js";
export { readCurrentState, type CurrentState, type ReadStateOptions } from "./sink/state-reader.js";
export {
  applyStateRecord,
  emptyState,
  stateKey,
  truncateStateKey,
  type FoldedState,
  type StateEntry,
  type StateRecord,
} from "./sink/state-topic.js";
export { eventJsonText, framedSchemaId, parseEventValue, WIRE_HEADER_BYTES } from "./sink/wire-format.js";
