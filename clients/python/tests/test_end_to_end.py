"""The real daemon on Airflow 2.x's schema in the real PostgreSQL publishes; the Python client reads from the real Kafka."""

from __future__ import annotations

import uuid
from collections import defaultdict

from airflow_eventstream import EventConsumer, JsonFilePositionStore, MemoryPositionStore, parse_position

from .conftest import AirflowDb, Daemon
from .helpers import consume, play, raw_records, republish, wait_for_records, what

# Two on one partition of three and one on another (the daemon's partitioner: etl and report -> 1, abcd -> 2).
DAGS = ["etl", "report", "abcd"]


def group() -> str:
    return f"pyclient-test-{uuid.uuid4().hex[:8]}"


def by_dag(got):  # type: ignore[no-untyped-def]
    out = defaultdict(list)
    for event, ctx in got:
        out[ctx.dag_id].append((what(event), ctx.position))
    return out


def test_reads_the_daemons_events_per_dag_in_order_then_skips_redelivered_ones_and_resumes_from_its_position(
    airflow_db: AirflowDb, daemon: Daemon, brokers: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    expected = {dag: play(airflow_db, dag, "run_1", ["extract", "load"]) for dag in DAGS}
    total = sum(len(v) for v in expected.values())
    records = wait_for_records(brokers, daemon.topic, total)
    assert len(records) == total

    # 1. In order per DAG, each event once, positions increasing.
    positions = tmp_path / "positions.json"
    c = EventConsumer(brokers, group(), topic=daemon.topic, state_topic=daemon.state_topic, dags=DAGS)
    got = consume(c, JsonFilePositionStore(positions), until=total)
    seen = by_dag(got)
    for dag in DAGS:
        assert [w for w, _ in seen[dag]] == expected[dag]
        ps = [parse_position(p) for _, p in seen[dag]]
        assert ps == sorted(ps) and len(set(ps)) == len(ps)
    assert all(not ctx.bootstrap and ctx.partition is not None for _, ctx in got)
    assert c.stats.delivered == total and c.stats.duplicates == 0

    # 2. Re-delivered: the same records again in the topic. A consumer that starts over (new group,
    #    a store without positions, from the earliest offset) sees every event twice and hands each over once.
    republish(brokers, daemon.topic, records)
    assert len(raw_records(brokers, daemon.topic)) == 2 * total
    again = EventConsumer(brokers, group(), topic=daemon.topic, state_topic=daemon.state_topic, dags=DAGS)
    got_again = consume(again, MemoryPositionStore())
    assert {d: [w for w, _ in v] for d, v in by_dag(got_again).items()} == expected
    assert again.stats.delivered == total and again.stats.duplicates == total

    # 3. Resume from the position the consumer stored: a new group (no offsets to go by) with the same
    #    store gets nothing of what it had, and exactly what the daemon published since.
    later = {dag: play(airflow_db, dag, "run_2", ["report"]) for dag in DAGS}
    more = sum(len(v) for v in later.values())
    wait_for_records(brokers, daemon.topic, 2 * total + more)
    resumed = EventConsumer(brokers, group(), topic=daemon.topic, state_topic=daemon.state_topic, dags=DAGS)
    got_resumed = consume(resumed, JsonFilePositionStore(positions))
    assert {d: [w for w, _ in v] for d, v in by_dag(got_resumed).items()} == later
    # It started at the stored positions (found by search in each partition), so nothing of run_1 came
    # again; what it read before run_2 (the event at the stored position, copies) was dropped as seen.
    assert resumed.stats.delivered == more
    assert resumed.stats.duplicates < total


def test_stops_midway_and_a_restart_with_the_same_store_goes_on_without_gaps_or_repeats(
    airflow_db: AirflowDb, daemon: Daemon, brokers: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    before = len(raw_records(brokers, daemon.topic))
    expected = play(airflow_db, "etl", "run_mid", ["a", "b", "c"])
    wait_for_records(brokers, daemon.topic, before + len(expected))
    positions = tmp_path / "positions.json"
    # Every etl event the topic holds by now (this module's earlier runs too), each once.
    first = EventConsumer(brokers, group(), topic=daemon.topic, state_topic=daemon.state_topic, dags=["etl"])
    everything = consume(first, MemoryPositionStore())
    etl_all = [what(e) for e, _ in everything]
    assert etl_all[-len(expected) :] == expected

    # Stop after 5 events of this store, then start again with the same store (and a new group).
    half = EventConsumer(brokers, group(), topic=daemon.topic, state_topic=daemon.state_topic, dags=["etl"])
    got1 = consume(half, JsonFilePositionStore(positions), until=5)
    assert len(got1) == 5
    rest = EventConsumer(brokers, group(), topic=daemon.topic, state_topic=daemon.state_topic, dags=["etl"])
    got2 = consume(rest, JsonFilePositionStore(positions))
    assert [what(e) for e, _ in got1 + got2] == etl_all
    assert parse_position(got2[0][1].position) > parse_position(got1[-1][1].position)
