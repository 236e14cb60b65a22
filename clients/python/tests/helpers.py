"""What the tests do with Kafka and the database besides the client under test."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from airflow_eventstream import EventConsumer, EventContext, MemoryPositionStore, PositionStore, StreamEvent
from airflow_eventstream.kafka_io import partition_count, private_consumer

from .conftest import AirflowDb


def play(db: AirflowDb, dag_id: str, run_id: str, tasks: list[str]) -> list[tuple[str, str, str | None]]:
    """One DAG run as the scheduler and workers write it; returns what its events should say, in order."""
    expected: list[tuple[str, str, str | None]] = []
    db.dag_run(dag_id, run_id, "queued")
    expected.append(("dag_run", run_id, "queued"))
    for t in tasks:
        db.task(dag_id, run_id, t)
        expected.append(("task_instance", t, None))
    db.dag_run_state(dag_id, run_id, "running")
    expected.append(("dag_run", run_id, "running"))
    for t in tasks:
        for state in ("scheduled", "queued", "running", "success"):
            db.task_state(dag_id, run_id, t, state)
            expected.append(("task_instance", t, state))
    db.dag_run_state(dag_id, run_id, "success")
    expected.append(("dag_run", run_id, "success"))
    return expected


def what(event: StreamEvent) -> tuple[str, str, str | None]:
    name = getattr(event, "task_id", None) if event.type == "task_instance" else getattr(event, "run_id", None)
    state = getattr(event, "state", None)
    return (event.type, str(name), None if state is None else str(getattr(state, "value", state)))


def raw_records(brokers: str, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every record the topic holds now: (partition, key, value), in offset order per partition."""
    c = private_consumer({"bootstrap.servers": brokers}, "test-read")
    out: list[tuple[int, bytes | None, bytes | None]] = []
    try:
        n = partition_count(c, topic) or 0
        if n == 0:
            return out
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        pending = set(range(n))
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                    continue
                raise RuntimeError(str(m.error()))
            out.append((m.partition(), m.key(), m.value()))
        assert not pending, f"could not read {topic} to its end"
        return out
    finally:
        c.close()


def wait_for_records(brokers: str, topic: str, count: int, timeout_s: float = 90) -> list[tuple[int, bytes | None, bytes | None]]:
    deadline = time.monotonic() + timeout_s
    records: list[tuple[int, bytes | None, bytes | None]] = []
    while time.monotonic() < deadline:
        records = raw_records(brokers, topic)
        if len(records) >= count:
            return records
        time.sleep(0.5)
    raise AssertionError(f"{topic} holds {len(records)} records after {timeout_s}s, expected {count}")


def republish(brokers: str, topic: str, records: list[tuple[int, bytes | None, bytes | None]]) -> None:
    """The same records again, to the same partitions: what Kafka holds after a daemon restart re-delivered them."""
    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
    for partition, key, value in records:
        p.produce(topic, value=value, key=key, partition=partition)
    assert p.flush(30) == 0


def consume(
    c: EventConsumer,
    store: PositionStore | None = None,
    start_from: str = "earliest",
    until: int | None = None,
    idle_timeout_s: float = 5,
    **kwargs: Any,
) -> list[tuple[StreamEvent, EventContext]]:
    """Runs the consumer until `until` events were handed over (then stop()), or until nothing came for `idle_timeout_s`."""
    got: list[tuple[StreamEvent, EventContext]] = []

    def handler(event: StreamEvent, ctx: EventContext) -> None:
        got.append((event, ctx))
        if until is not None and len(got) >= until:
            c.stop()

    c.run(handler, store if store is not None else MemoryPositionStore(), start_from=start_from, idle_timeout_s=idle_timeout_s, **kwargs)
    return got
