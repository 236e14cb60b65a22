"""The events of the daemon's topics, as the generated Pydantic models (see _generated/, scripts/generate.py)."""

from __future__ import annotations

import json
from typing import Any, Union

from pydantic import ValidationError

from ._generated.asset_event import AssetEventEvent
from ._generated.dag_run_event import DagRunEvent as _DagRunRoot
from ._generated.dag_run_event import DagRunEvent1, DagRunEvent2, DagRunEvent3, DagRunEvent4
from ._generated.notification_event import NotificationEvent
from ._generated.notification_value import NotificationValue
from ._generated.stream_gap_event import StreamGapEvent
from ._generated.table_truncated_event import TableTruncatedEvent
from ._generated.task_instance_event import TaskInstanceEvent as _TaskInstanceRoot
from ._generated.task_instance_event import TaskInstanceEvent1, TaskInstanceEvent2, TaskInstanceEvent3, TaskInstanceEvent4
from .errors import EventStreamError

# One class per `op` variant, as the schemas' oneOf has them; `event.type` and `event.op` tell them apart.
TaskInstanceEvent = Union[TaskInstanceEvent1, TaskInstanceEvent2, TaskInstanceEvent3, TaskInstanceEvent4]
DagRunEvent = Union[DagRunEvent1, DagRunEvent2, DagRunEvent3, DagRunEvent4]
StreamEvent = Union[TaskInstanceEvent, DagRunEvent, NotificationEvent, TableTruncatedEvent, StreamGapEvent, AssetEventEvent]

_BY_TYPE: dict[str, Any] = {
    "task_instance": _TaskInstanceRoot,
    "dag_run": _DagRunRoot,
    "notification": NotificationEvent,
    "table_truncated": TableTruncatedEvent,
    "stream_gap": StreamGapEvent,
    # On EVENTSTREAM_ASSET_TOPIC (keyed by the asset's URI), not the DAG events' topic.
    "asset_event": AssetEventEvent,
}

__all__ = [
    "AssetEventEvent",
    "DagRunEvent",
    "NotificationEvent",
    "NotificationValue",
    "StreamEvent",
    "StreamGapEvent",
    "TableTruncatedEvent",
    "TaskInstanceEvent",
    "dag_id_of",
    "event_json",
    "parse_event",
]


def event_json(raw: bytes | str) -> bytes | str:
    """A record value's JSON, plain or in the schema registry's wire format (a zero byte, the 4-byte
    schema id, the JSON: docs/schema-registry.md); JSON text never starts with a zero byte."""
    if isinstance(raw, (bytes, bytearray)) and len(raw) >= 5 and raw[0] == 0:
        return bytes(raw[5:])
    return raw


def parse_event(raw: bytes | str | dict[str, Any]) -> StreamEvent:
    """A record's value as its typed event; EventStreamError when it is not one of the daemon's events."""
    try:
        data = json.loads(event_json(raw)) if isinstance(raw, (bytes, str)) else raw
    except ValueError as e:
        raise EventStreamError(f"not JSON: {e}") from e
    kind = data.get("type") if isinstance(data, dict) else None
    model = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise EventStreamError(f"not an airflow-eventstream event (type {kind!r})")
    try:
        parsed = model.model_validate(data)
    except ValidationError as e:
        raise EventStreamError(f"not a valid {kind} event: {str(e)[:500]}") from e
    # The task-instance and DAG-run schemas are unions (root models): hand over the variant itself.
    return getattr(parsed, "root", parsed)


def dag_id_of(event: StreamEvent) -> str | None:
    """The DAG, or None for an event about no single DAG (table_truncated, stream_gap, a 3.x delete the WAL did not name, an asset event)."""
    dag_id = getattr(event, "dag_id", None)
    return dag_id if isinstance(dag_id, str) else None
