"""Deployment B of test/airflow/asset-events.test.ts: a DAG scheduled on an asset whose watcher reads
the daemon's asset_event topic (docs/asset-events.md shows the same setup for users).

The topic, the asset URI and the connection id come from the environment so that each test run
has its own topic; a user writes them as literals. The trigger's apply_function is imported by the
triggerer by its dotted path, and the triggerer does not put the DAGs folder on sys.path: it lives in
lib/eventstream_assets.py, on the PYTHONPATH of B's components.
"""

from __future__ import annotations

import json
import os

from airflow.providers.apache.kafka.triggers.msg_queue import KafkaMessageQueueTrigger
from airflow.sdk import DAG, Asset, AssetWatcher, task

ASSET_URI = os.environ.get("ES_ASSET_URI", "s3://eventstream-e2e/orders.parquet")
TOPIC = os.environ.get("ES_ASSET_TOPIC", "airflow.asset_events")


trigger = KafkaMessageQueueTrigger(
    topics=[TOPIC],
    kafka_config_id=os.environ.get("ES_KAFKA_CONN_ID", "kafka_default"),
    apply_function="eventstream_assets.match_asset_event",
    apply_function_kwargs={"uri": ASSET_URI},
    poll_interval=float(os.environ.get("ES_POLL_INTERVAL", "5")),
)

upstream = Asset(uri=ASSET_URI, name="eventstream_upstream_orders", watchers=[AssetWatcher(name="eventstream_asset_events", trigger=trigger)])

with DAG(dag_id="es_asset_consumer", schedule=[upstream], catchup=False, tags=["eventstream"]):

    @task
    def consume(triggering_asset_events=None):
        # What B's task sees of the event: the watcher's return value, as the payload of the asset
        # event's extra. Returned (an XCom) so that the test can read it back.
        payloads = [e.extra.get("payload") for events in (triggering_asset_events or {}).values() for e in events]
        print(f"eventstream asset event payloads: {json.dumps(payloads, default=str)}")
        return payloads

    consume()
