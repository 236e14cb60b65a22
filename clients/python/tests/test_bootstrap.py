"""start_from="state": the current rows of the compacted state topic first, then only the events after its position."""

from __future__ import annotations

import uuid

from airflow_eventstream import BootstrapInfo, EventConsumer, MemoryPositionStore, parse_position

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
