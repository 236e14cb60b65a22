"""The consumer helper: the daemon's event topic for a set of DAGs, per DAG in order, re-deliveries dropped.

As the TypeScript helper (src/consumer/, docs/backfill.md#consumer-helper): a consumer group shares
the partitions (so the DAGs); the user's PositionStore says where each DAG was, and a partition is
read from the lowest stored position of its DAGs (searched in Kafka), not from the group's offsets,
which are committed only as a hint for lag tools. A DAG without a position starts from `start_from`:
"state" (its current rows from the compacted state topic, then the events after the state's
position), "earliest", "latest", or a position / LSN. A stored position older than Kafka holds
bootstraps that DAG from the state topic too. Events are handed over one at a time, from one poll
loop: per-DAG order needs nothing more, and a handler that blocks holds every DAG of this member.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from confluent_kafka import Consumer, KafkaError, TopicPartition

from .errors import EventStreamError, KafkaUnavailable
from .events import StreamEvent, dag_id_of, parse_event
from .kafka_io import CurrentState, PartitionSearch, ensure_found, partition_count, private_consumer, read_current_state
from .partitioner import partition_for
from .position import format_position, parse_position
from .sequencer import DagSequencer
from .store import PositionStore

log = logging.getLogger("airflow_eventstream")

COMMIT_EVERY_S = 1.0


@dataclass(frozen=True)
class EventContext:
    dag_id: str | None
    position: str
    # True: a current row from the state topic (a task instance's or DAG run's latest event), not an event of the topic.
    bootstrap: bool
    topic: str
    partition: int | None
    offset: int | None


@dataclass(frozen=True)
class BootstrapInfo:
    reason: Literal["requested", "position-not-in-kafka"]
    dags: list[str]
    position: str | None
    rows: int
    detail: str | None = None


@dataclass
class Stats:
    delivered: int = 0
    duplicates: int = 0
    bootstrap_rows: int = 0


Handler = Callable[[StreamEvent, EventContext], None]


def partition_scope(topic: str, partition: int) -> str:
    """The store key of events about no single DAG: they are in order with their partition only ("*" is in no dag_id)."""
    return f"*{topic}:{partition}"


@dataclass
class EventConsumer:
    brokers: str
    group_id: str
    topic: str = "airflow.events"
    state_topic: str = "airflow.state"
    # The DAGs handled (others' events skipped); with them the store decides every start. None: all DAGs.
    dags: list[str] | None = None
    # Extra librdkafka settings (security.protocol, sasl.*, ssl.*), for every client made here.
    kafka_config: dict[str, Any] = field(default_factory=dict)
    session_timeout_ms: int = 30_000
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._stop = False
        self._wanted = None if self.dags is None else set(self.dags)

    @property
    def _base(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.brokers, **self.kafka_config}

    def stop(self) -> None:
        """Ends run() after the event in hand (callable from the handler or a signal handler)."""
        self._stop = True

    def wants(self, dag_id: str | None) -> bool:
        return dag_id is None or self._wanted is None or dag_id in self._wanted

    def run(
        self,
        handler: Handler,
        positions: PositionStore,
        start_from: str = "state",
        on_bootstrap: Callable[[BootstrapInfo], None] | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        """Consumes until stop(), or until nothing came for `idle_timeout_s` after the partitions were assigned and
        started (a batch job's way to read what is there and end). An exception from the handler or the store
        ends it, the position unsaved."""
        if start_from not in ("state", "earliest", "latest"):
            parse_position(start_from)
        self._stop = False
        run = _Run(self, handler, positions, start_from, on_bootstrap)
        consumer = Consumer(
            {
                **self._base,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.session_timeout_ms,
                "allow.auto.create.topics": False,
            }
        )
        run.consumer = consumer
        try:
            if partition_count(consumer, self.topic) is None:
                raise EventStreamError(f"topic {self.topic} does not exist (the daemon makes it with its first event)")
            consumer.subscribe([self.topic], on_assign=run.on_assign, on_revoke=run.on_revoke, on_lost=run.on_revoke)
            last_record = time.monotonic()
            began = last_record
            while not self._stop:
                msg = consumer.poll(0.2)
                if run.failure is not None:
                    raise run.failure
                if msg is None:
                    if idle_timeout_s is not None:
                        # Joining the group and deciding the starts (searches, a bootstrap) is not idleness.
                        if run.started_at is None:
                            if time.monotonic() - began > max(60.0, idle_timeout_s):
                                raise KafkaUnavailable(f"no partition of {self.topic} assigned to group {self.group_id} in {time.monotonic() - began:.0f}s")
                        elif time.monotonic() - max(last_record, run.started_at) > idle_timeout_s:
                            return
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    if msg.error().fatal():
                        raise KafkaUnavailable(str(msg.error()))
                    log.warning("kafka: %s", msg.error())
                    continue
                last_record = time.monotonic()
                run.handle(msg.partition(), msg.offset(), msg.value())
                run.hint(msg.partition(), msg.offset() + 1)
        finally:
            run.flush_hint()
            consumer.close()


class _Run:
    """One run(): the sequencer, the offsets to hint, and the partitions' starts."""

    def __init__(self, c: EventConsumer, handler: Handler, store: PositionStore, start_from: str, on_bootstrap: Callable[[BootstrapInfo], None] | None) -> None:
        self.c = c
        self.handler = handler
        self.start_from = start_from
        self.on_bootstrap = on_bootstrap
        self.sequencer = DagSequencer(store)
        self.consumer: Consumer | None = None
        self.failure: BaseException | None = None
        self.hints: dict[int, int] = {}
        self.last_commit = 0.0
        self.state: CurrentState | None = None
        # When the last assignment's starts were decided (None: not yet).
        self.started_at: float | None = None

    # -- the group -------------------------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may have had these partitions meanwhile: the store is read again.
        self.sequencer.forget()
        self.state = None
        try:
            n = partition_count(consumer, self.c.topic) or 0
            for tp in partitions:
                tp.offset = self.start_offset(tp.partition, n)
                log.info("partition assigned: %s[%d] from offset %d", tp.topic, tp.partition, tp.offset)
        except BaseException as e:  # surfaced by run(): librdkafka swallows callback exceptions
            self.failure = e
            return
        consumer.assign(partitions)
        self.started_at = time.monotonic()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush_hint()
        self.sequencer.forget()
        consumer.unassign()

    # -- events ----------------------------------------------------------------------------------

    def handle(self, partition: int, offset: int, value: bytes | None) -> None:
        if value is None:
            return
        try:
            event = parse_event(value)
        except EventStreamError as e:
            raise EventStreamError(f"{self.c.topic}[{partition}]@{offset}: {e}") from e
        dag_id = dag_id_of(event)
        if not self.c.wants(dag_id):
            return
        position = event.source.position
        ctx = EventContext(dag_id, position, False, self.c.topic, partition, offset)
        key = dag_id if dag_id is not None else partition_scope(self.c.topic, partition)
        outcome = self.sequencer.offer(key, position, lambda: self.handler(event, ctx))
        if outcome == "delivered":
            self.c.stats.delivered += 1
        else:
            self.c.stats.duplicates += 1

    def hint(self, partition: int, next_offset: int) -> None:
        self.hints[partition] = next_offset
        if time.monotonic() - self.last_commit >= COMMIT_EVERY_S:
            self.flush_hint()

    def flush_hint(self) -> None:
        """Commits the offsets after the handled events, for tools that watch the group's lag; never the truth."""
        if not self.hints or self.consumer is None:
            return
        offsets = [TopicPartition(self.c.topic, p, o) for p, o in self.hints.items()]
        self.hints.clear()
        self.last_commit = time.monotonic()
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as e:  # a hint only
            log.debug("group offsets not committed: %s", e)

    # -- where a partition starts ----------------------------------------------------------------

    def start_offset(self, partition: int, partitions: int) -> int:
        search = PartitionSearch(self.c._base, self.c.topic, partition)
        try:
            return self._start(search, partition, partitions)
        finally:
            search.close()

    def _start(self, search: PartitionSearch, partition: int, partitions: int) -> int:
        low, high = search.bounds()
        dags = None if self.c.dags is None else [d for d in self.c.dags if partition_for(d, partitions) == partition]
        if not dags:
            committed = self._committed(partition)
            if committed is not None:
                if committed >= low:
                    return committed
                lost = f"the group's committed offset {committed} of {self.c.topic}[{partition}] is below the oldest one it holds ({low})"
                return self._after_state(search, self._bootstrap(partition, partitions, dags, "position-not-in-kafka", lost))
            if self.start_from != "state":
                return self._from(search, low, high)
            return self._after_state(search, self._bootstrap(partition, partitions, dags, "requested", None))
        candidates: list[int] = []
        need_state: list[str] = []
        stored = []
        for d in dags:
            p = self.sequencer.last_position(d)
            if p is not None:
                stored.append((d, p))
            elif self.start_from == "state":
                need_state.append(d)
        if len(stored) + len(need_state) < len(dags):
            candidates.append(self._from(search, low, high))
        detail = None
        for d, p in sorted(stored, key=lambda s: s[1]):
            found = search.find(p)
            if found.lost is None:
                # The lowest found is the start; the DAGs further on drop what they had as duplicates.
                candidates.append(found.offset)
                break
            need_state.append(d)
            detail = found.lost
        if need_state:
            reason: Literal["requested", "position-not-in-kafka"] = "requested" if detail is None else "position-not-in-kafka"
            candidates.append(self._after_state(search, self._bootstrap(partition, partitions, need_state, reason, detail)))
        return min(candidates)

    def _from(self, search: PartitionSearch, low: int, high: int) -> int:
        if self.start_from == "earliest":
            return low
        if self.start_from == "latest":
            return high
        return ensure_found(search.find(parse_position(self.start_from)), f"start_from {self.start_from}")

    def _after_state(self, search: PartitionSearch, position: str | None) -> int:
        if position is None:
            return search.bounds()[0]
        return ensure_found(search.find(parse_position(position)), f"the current-state topic {self.c.state_topic} is older than the event topic holds")

    def _committed(self, partition: int) -> int | None:
        assert self.consumer is not None
        [tp] = self.consumer.committed([TopicPartition(self.c.topic, partition)], timeout=30)
        return tp.offset if tp.offset >= 0 else None

    def _bootstrap(self, partition: int, partitions: int, dags: list[str] | None, reason: Literal["requested", "position-not-in-kafka"], detail: str | None) -> str | None:
        """Hands over the current rows of `dags` (None: every wanted DAG of the partition), then moves their positions to the state's."""
        if self.state is None:
            self.state = read_current_state(self.c._base, self.c.state_topic)
        state = self.state
        if dags is not None and not dags:
            return state.position
        which = (lambda d: partition_for(d, partitions) == partition and self.c.wants(d)) if dags is None else set(dags).__contains__
        rows = [(e.event["dag_id"], e.position, e.event) for e in state.entries.values() if isinstance(e.event.get("dag_id"), str) and which(e.event["dag_id"])]
        rows.sort(key=lambda r: parse_position(r[1]))
        names = sorted({r[0] for r in rows}) if dags is None else dags
        info = BootstrapInfo(reason, names, state.position, len(rows), detail)
        log.warning("bootstrapping from the current-state topic %s: %s", self.c.state_topic, json.dumps(info.__dict__))
        if self.on_bootstrap is not None:
            self.on_bootstrap(info)
        for dag_id, position, raw in rows:
            event = parse_event(raw)
            ctx = EventContext(dag_id, position, True, self.c.state_topic, None, None)
            if self.sequencer.offer(dag_id, position, lambda: self.handler(event, ctx)) == "delivered":
                self.c.stats.bootstrap_rows += 1
        if state.position is not None:
            for d in names:
                self.sequencer.offer(d, state.position, lambda: None)
        return state.position


__all__ = ["BootstrapInfo", "EventConsumer", "EventContext", "Stats", "format_position", "partition_scope"]
