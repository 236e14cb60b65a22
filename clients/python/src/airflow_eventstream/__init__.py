"""Typed events and a consumer helper for airflow-eventstream's Kafka topics."""

from .consumer import BootstrapInfo, EventConsumer, EventContext, Stats, partition_scope
from .errors import EventStreamError, KafkaUnavailable, RetentionError
from .events import (
    DagRunEvent,
    NotificationEvent,
    NotificationValue,
    StreamEvent,
    StreamGapEvent,
    TableTruncatedEvent,
    TaskInstanceEvent,
    dag_id_of,
    parse_event,
)
from .partitioner import partition_for
from .position import Position, format_position, parse_position
from .sequencer import DagSequencer
from .store import JsonFilePositionStore, MemoryPositionStore, PositionStore

__all__ = [
    "BootstrapInfo",
    "DagRunEvent",
    "DagSequencer",
    "EventConsumer",
    "EventContext",
    "EventStreamError",
    "JsonFilePositionStore",
    "KafkaUnavailable",
    "MemoryPositionStore",
    "NotificationEvent",
    "NotificationValue",
    "Position",
    "PositionStore",
    "RetentionError",
    "Stats",
    "StreamEvent",
    "StreamGapEvent",
    "TableTruncatedEvent",
    "TaskInstanceEvent",
    "dag_id_of",
    "format_position",
    "parse_event",
    "parse_position",
    "partition_for",
]
