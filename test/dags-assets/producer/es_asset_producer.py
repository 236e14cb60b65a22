"""Deployment A of test/airflow/asset-events.test.ts: a task with an outlet asset. Airflow inserts an
asset_event row when the task succeeds; the daemon watching A's database publishes it."""

from __future__ import annotations

import os

from airflow.sdk import DAG, Asset, task

orders = Asset(uri=os.environ.get("ES_ASSET_URI", "s3://eventstream-e2e/orders.parquet"), name="orders")

with DAG(dag_id="es_asset_producer", schedule=None, catchup=False, tags=["eventstream"]):

    @task(outlets=[orders])
    def write(*, outlet_events):
        # The asset event's extra: what B's watcher passes on in its payload.
        outlet_events[orders].extra = {"rows": 1000, "written_by": "es_asset_producer"}

    write()
