"""Reads the consumer needs besides its group: the current-state topic to its end, and position -> offset searches."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from .errors import KafkaUnavailable, RetentionError
from .events import event_json
from .position import Position, parse_position

TIMEOUT_S = 120.0


def private_consumer(config: dict[str, Any], what: str) -> Consumer:
    """A consumer outside any group (assign() only, no commits), read_committed like the group's."""
    return Consumer(
        {
            **config,
            "group.id": f"airflow-eventstream-py.{what}.{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )


def partition_count(consumer: Consumer, topic: str) -> int | None:
    """None when the topic does not exist."""
    meta = consumer.list_topics(topic, timeout=30)
    t = meta.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def record_position(value: bytes | None) -> Position | None:
    """The record's `source.position`; None for a record that has none (another producer's, a tombstone)."""
    if value is None:
        return None
    try:
        pos = json.loads(event_json(value))["source"]["position"]
        return parse_position(pos) if isinstance(pos, str) else None
    except Exception:  # not JSON, not an event: passed over like any record without a position
        return None


@dataclass
class StateEntry:
    table: str
    position: str
    event: dict[str, Any]


@dataclass
class CurrentState:
    """The state topic folded as compaction would keep it: key -> entry; `position` the highest read."""

    entries: dict[str, StateEntry] = field(default_factory=dict)
    truncated: dict[str, str] = field(default_factory=dict)
    position: str | None = None
    records: int = 0
    invalid: int = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """As the daemon's applyStateRecord: last record per key wins, a tombstone removes it, a truncate voids its table's older rows."""
        self.records += 1
        try:
            k = json.loads(key) if key is not None else None
        except ValueError:
            k = None
        kind = k.get("type") if isinstance(k, dict) else None
        if kind not in ("task_instance", "dag_run", "table_truncated"):
            self.invalid += 1
            return
        text = key.decode("utf-8")  # type: ignore[union-attr]
        if value is None:
            if kind != "table_truncated":
                self.entries.pop(text, None)
            return
        try:
            v = json.loads(event_json(value))
            position = v["source"]["position"]
            assert isinstance(position, str)
        except Exception:
            self.invalid += 1
            return
        # Fixed-width upper-case hex: these positions compare correctly as text, as the daemon does here.
        if self.position is None or position > self.position:
            self.position = position
        if kind == "table_truncated":
            table = k["table"]  # type: ignore[index]
            before = self.truncated.get(table)
            if before is not None and before >= position:
                return
            self.truncated[table] = position
            for ek in [ek for ek, e in self.entries.items() if e.table == table and e.position < position]:
                del self.entries[ek]
            return
        at = self.truncated.get(kind)
        if at is not None and position < at:
            self.entries.pop(text, None)
            return
        self.entries[text] = StateEntry(kind, position, v)


def read_current_state(config: dict[str, Any], topic: str, timeout_s: float = TIMEOUT_S) -> CurrentState:
    """The state topic from its beginning to the end each partition has when the read starts (read_committed: its stable end)."""
    state = CurrentState()
    c = private_consumer(config, "state-read")
    try:
        n = partition_count(c, topic)
        if n is None:
            return state
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        pending = set(range(n))
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"reading the state topic {topic} took over {timeout_s:.0f}s; partitions not read to their end: {sorted(pending)}")
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise KafkaUnavailable(f"reading the state topic {topic}: {msg.error()}")
            state.apply(msg.key(), msg.value())
        return state
    finally:
        c.close()


@dataclass
class Found:
    offset: int
    lost: str | None


class PartitionSearch:
    """Position -> offset in one partition, by binary search over [low, high), one record per probe.

    Positions increase along a partition (one DAG's events stay in one, in commit order); a re-delivery
    after a daemon restart repeats a few, which the search tolerates as the daemon's does: it finds the
    first offset such that every positioned record before it is before the target.
    """

    def __init__(self, config: dict[str, Any], topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.c = private_consumer(config, "search")

    def close(self) -> None:
        self.c.close()

    def bounds(self) -> tuple[int, int]:
        low, high = self.c.get_watermark_offsets(TopicPartition(self.topic, self.partition), timeout=30)
        return low, high

    def _probe(self, start: int, before: int) -> tuple[int, Position] | None:
        """The first record in [start, before) that has a position, or None."""
        self.c.assign([TopicPartition(self.topic, self.partition, start)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = self.c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return None
                raise KafkaUnavailable(f"searching {self.topic}[{self.partition}]: {msg.error()}")
            if msg.offset() >= before:
                return None
            p = record_position(msg.value())
            if p is not None:
                return msg.offset(), p
        raise KafkaUnavailable(f"searching {self.topic}[{self.partition}]: no answer from offset {start} in 30 s")

    def find(self, target: Position) -> Found:
        low, high = self.bounds()
        if low > 0 and low == high:
            # Emptied by retention: nothing tells whether events after the target were deleted.
            return Found(high, f"{self.topic}[{self.partition}] was emptied by retention (records up to offset {low} deleted)")
        oldest = self._probe(low, high)
        lo, hi = low, high
        if oldest is None or oldest[1] >= target:
            hi = low
            if oldest is not None and low > 0 and oldest[1] > target:
                return Found(
                    low,
                    f"position {target} is older than {self.topic}[{self.partition}] holds: Kafka's retention deleted events "
                    f"after it (oldest still there: {oldest[1]} at offset {low})",
                )
        else:
            lo = oldest[0] + 1
        while lo < hi:
            mid = lo + (hi - lo) // 2
            hit = self._probe(mid, hi)
            if hit is None or hit[1] >= target:
                hi = mid
            else:
                lo = hit[0] + 1
        return Found(lo, None)


def ensure_found(found: Found, what: str) -> int:
    if found.lost is not None:
        raise RetentionError(f"{what}: {found.lost}")
    return found.offset
