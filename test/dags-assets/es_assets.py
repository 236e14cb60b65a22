# Airflow DAG for test/airflow/assets.test.ts. Airflow only parses files naming "airflow" and "dag".
"""A producer task whose outlet is an asset (3.x) / dataset (2.x), with an extra on its event:
each run writes one asset_event (dataset_event) row, which the daemon publishes on the asset topic."""

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dags"))

from _eventstream_compat import AIRFLOW_MAJOR, DAG_ARGS, dag, task  # noqa: E402

URI = "s3://eventstream-e2e/orders.parquet"

if AIRFLOW_MAJOR == 3:
    from airflow.sdk import Asset

    ORDERS = Asset(uri=URI, name="orders")
else:
    from airflow.datasets import Dataset

    ORDERS = Dataset(URI)


@dag(dag_id="es_assets", **DAG_ARGS)
def es_assets():
    @task(outlets=[ORDERS])
    def write(outlet_events=None):
        outlet_events[ORDERS].extra = {"rows": 3, "written_at": datetime.date(2026, 1, 15).isoformat()}

    write()


es_assets()
