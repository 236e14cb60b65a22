"""Pure logic: positions, de-duplication, the daemon's partitioner, the state topic's fold."""

from __future__ import annotations

import json

import pytest

from airflow_eventstream import DagSequencer, EventStreamError, MemoryPositionStore, parse_event, parse_position, partition_for
from airflow_eventstream.kafka_io import CurrentState


def test_positions_compare_as_numbers_and_lsns_parse() -> None:
    assert parse_position("0000000000000010-00000000") == parse_position("0/10")
    assert parse_position("00000000000000FF-00000001") > parse_position("00000000000000FF-00000000")
    assert parse_position("0000000100000000-00000000") > parse_position("00000000FFFFFFFF-0000FFFF")
    assert str(parse_position("1/A")) == "000000010000000A-00000000"
    with pytest.raises(EventStreamError):
        parse_position("not-a-position")


def test_sequencer_drops_positions_not_above_the_saved_one_and_saves_after_delivery() -> None:
    store = MemoryPositionStore({"etl": "0000000000000020-00000000"})
    s = DagSequencer(store)
    out: list[str] = []
    assert s.offer("etl", "0000000000000010-00000000", lambda: out.append("old")) == "duplicate"
    assert s.offer("etl", "0000000000000020-00000000", lambda: out.append("same")) == "duplicate"
    assert s.offer("etl", "0000000000000020-00000001", lambda: out.append("next")) == "delivered"
    assert s.offer("other", "0000000000000001-00000000", lambda: out.append("other")) == "delivered"
    assert out == ["next", "other"] and store.positions["etl"] == "0000000000000020-00000001"

    def boom() -> None:
        raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        s.offer("etl", "0000000000000030-00000000", boom)
    assert store.positions["etl"] == "0000000000000020-00000001", "a failed handler leaves the position"


def test_partitioner_matches_the_daemons() -> None:
    # kafkajs's DefaultPartitioner (the daemon's) for these keys at 3, 7 and 12 partitions, computed with it.
    expected = {"etl": (1, 2, 4), "report": (1, 4, 7), "a": (1, 5, 4), "abcd": (2, 5, 8), "hello world": (1, 2, 7)}
    for key, parts in expected.items():
        assert tuple(partition_for(key, n) for n in (3, 7, 12)) == parts


def _ti(position: str, task: str, state: str) -> bytes:
    return json.dumps({"type": "task_instance", "dag_id": "d", "task_id": task, "state": state, "source": {"position": position}}).encode()


def test_state_fold_keeps_the_last_record_per_key_and_applies_tombstones_and_truncates() -> None:
    s = CurrentState()
    k1 = json.dumps({"type": "task_instance", "dag_id": "d", "run_id": "r", "task_id": "a", "map_index": -1}).encode()
    k2 = json.dumps({"type": "task_instance", "dag_id": "d", "run_id": "r", "task_id": "b", "map_index": -1}).encode()
    s.apply(k1, _ti("0000000000000001-00000000", "a", "queued"))
    s.apply(k1, _ti("0000000000000002-00000000", "a", "success"))
    s.apply(k2, _ti("0000000000000003-00000000", "b", "running"))
    assert s.entries[k1.decode()].event["state"] == "success" and s.position == "0000000000000003-00000000"
    s.apply(k2, None)
    assert k2.decode() not in s.entries
    trunc = json.dumps({"type": "table_truncated", "table": "task_instance"}).encode()
    s.apply(trunc, json.dumps({"type": "table_truncated", "source": {"position": "0000000000000004-00000000"}}).encode())
    assert s.entries == {}
    s.apply(k1, _ti("0000000000000002-00000000", "a", "success"))
    assert s.entries == {}, "an entry older than its table's truncate stays out"
    s.apply(b"not json", b"{}")
    assert s.invalid == 1


def test_parse_event_refuses_what_is_not_an_event() -> None:
    with pytest.raises(EventStreamError):
        parse_event(b'{"type": "something_else"}')
    with pytest.raises(EventStreamError):
        parse_event(b'{"type": "task_instance", "dag_id": 1}')


def test_parse_event_reads_an_asset_event_as_the_daemon_writes_it() -> None:
    # The shape of src/airflow/asset-event.ts's output (test/unit/airflow/asset-event.test.ts), source from a 3.x task.
    raw = (
        b'{"type":"asset_event","asset":{"uri":"s3://b/orders.parquet","name":"orders","group":"asset"},"asset_id":7,'
        b'"extra":{"rows":1000},"source_dag_id":"producer","source_task_id":"write","source_run_id":"manual__x",'
        b'"source_map_index":-1,"timestamp":"2026-12-03T10:00:05.123456Z","source":{"commit_lsn":"0/16B3748","xid":1234,'
        b'"index":0,"position":"00000000016B3748-00000000","commit_time":"2026-12-03T10:00:05.2Z"}}'
    )
    event = parse_event(raw)
    assert event.type == "asset_event"
    assert event.asset.uri == "s3://b/orders.parquet"
    assert event.extra == {"rows": 1000}
    with pytest.raises(EventStreamError):
        parse_event(raw.replace(b'"asset_id":7,', b''))


def test_framed_values_of_a_schema_registry_read_like_plain_ones() -> None:
    # The daemon with EVENTSTREAM_SCHEMA_REGISTRY_URL: a zero byte, the 4-byte schema id, the JSON.
    from airflow_eventstream.events import event_json
    from airflow_eventstream.kafka_io import record_position

    source = {"commit_lsn": "0/1", "xid": 1, "index": 0, "position": "0000000000000001-00000000", "commit_time": "2026-11-25T08:36:25.224381Z"}
    raw = json.dumps({"type": "table_truncated", "schema": "public", "tables": ["task_instance"], "source": source}).encode()
    framed = b"\x00" + (41).to_bytes(4, "big") + raw
    assert event_json(framed) == raw and event_json(raw) == raw
    assert parse_event(framed) == parse_event(raw)
    assert record_position(framed) == parse_position("0000000000000001-00000000")
