"""start_from="state": the current rows of the compacted state topic first, then only the events after its position."""

from __future__ import annotations

import uuid

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from airflow_eventstream import BootstrapInfo, EventConsumer, MemoryPositionStore, parse_position, partition_for
from airflow_eventstream.kafka_io import private_consumer

from .conftest import AirflowDb, Daemon
from .helpers import consume, play, raw_records, wait_for_records, what


def test_bootstraps_from_the_state_topic_then_goes_on_with_the_events_after_it(airflow_db: AirflowDb, daemon: Daemon, brokers: str) -> None:
    dag = "bootstrap_dag"
    before = len(raw_records(brokers, daemon.topic))
    expected = play(airflow_db, dag, "run_b", ["t1", "t2"])
    wait_for_records(brokers, daemon.topic, before + len(expected))
    # The state topic is written with the events (same produce): one current row per task instance and run.
    wait_for_records(brokers, daemon.state_topic, 3)

    infos: list[BootstrapInfo] = []
    store = MemoryPositionStore()
    c = EventConsumer(brokers, f"pyclient-test-{uuid.uuid4().hex[:8]}", topic=daemon.topic, state_topic=daemon.state_topic, dags=[dag])
    got = consume(c, store, start_from="state", on_bootstrap=infos.append)
    rows = [(what(e), ctx) for e, ctx in got if ctx.bootstrap]
    # The latest event of each: the run and both tasks at success, not their history.
    assert sorted(w for w, _ in rows) == sorted([("dag_run", "run_b", "success"), ("task_instance", "t1", "success"), ("task_instance", "t2", "success")])
    assert [ctx.bootstrap for _, ctx in got] == [True] * len(rows) + [False] * (len(got) - len(rows))
    assert len(infos) == 1 and infos[0].reason == "requested" and infos[0].dags == [dag] and infos[0].rows == 3
    state_position = parse_position(infos[0].position or "")
    # What the state already holds is not handed over again as events; the store is at the state's position.
    assert all(parse_position(ctx.position) > state_position for _, ctx in got if not ctx.bootstrap)
    assert parse_position(store.load(dag) or "") >= state_position

    # Events after the bootstrap come as events, in order.
    more = play(airflow_db, dag, "run_c", ["t1"])
    wait_for_records(brokers, daemon.topic, before + len(expected) + len(more))
    later = consume(c, store, start_from="state", on_bootstrap=infos.append)
    assert [what(e) for e, _ in later] == more
    assert len(infos) == 1, "the second run had positions for the DAG: no bootstrap"


def test_a_stored_position_that_retention_deleted_bootstraps_that_dag_from_the_state_topic(
    airflow_db: AirflowDb, daemon: Daemon, brokers: str
) -> None:
    dag = "retained_dag"
    before = len(raw_records(brokers, daemon.topic))
    first = play(airflow_db, dag, "run_r1", ["t1"])
    wait_for_records(brokers, daemon.topic, before + len(first))
    store = MemoryPositionStore()
    c = EventConsumer(brokers, f"pyclient-test-{uuid.uuid4().hex[:8]}", topic=daemon.topic, state_topic=daemon.state_topic, dags=[dag])
    assert [what(e) for e, _ in consume(c, store, start_from="earliest")][-len(first) :] == first
    stored = parse_position(store.load(dag) or "")

    second = play(airflow_db, dag, "run_r2", ["t1"])
    wait_for_records(brokers, daemon.topic, before + len(first) + len(second))
    # Retention, as Kafka applies it: the DAG's partition loses its older records (delete-records moves
    # its log start; the last one stays, as the active segment would), so the stored position is gone.
    # (An emptied partition is refused as the TypeScript helper refuses it: nothing shows what it lost.)
    partition = partition_for(dag, 3)
    probe = private_consumer({"bootstrap.servers": brokers}, "test-bounds")
    _, high = probe.get_watermark_offsets(TopicPartition(daemon.topic, partition), timeout=30)
    probe.close()
    admin = AdminClient({"bootstrap.servers": brokers})  # held: its futures complete only while it lives
    for future in admin.delete_records([TopicPartition(daemon.topic, partition, high - 1)]).values():
        future.result(30)

    infos: list[BootstrapInfo] = []
    again = EventConsumer(brokers, f"pyclient-test-{uuid.uuid4().hex[:8]}", topic=daemon.topic, state_topic=daemon.state_topic, dags=[dag])
    got = consume(again, store, start_from="earliest", on_bootstrap=infos.append)
    assert len(infos) == 1 and infos[0].reason == "position-not-in-kafka" and infos[0].dags == [dag], infos
    assert infos[0].detail and "retention" in infos[0].detail
    # Only what the consumer did not have: run_r2's current rows (run_r1's are at or below its position).
    assert all(ctx.bootstrap for _, ctx in got)
    assert sorted(what(e) for e, _ in got) == sorted([("dag_run", "run_r2", "success"), ("task_instance", "t1", "success")])
    assert all(parse_position(ctx.position) > stored for _, ctx in got)
