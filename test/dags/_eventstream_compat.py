"""Imports that exist under different names in Airflow 2.11 and 3.x (test helper, not a DAG file).

Airflow 3 moved the authoring API to ``airflow.sdk`` and the standard operators and sensors to the
``apache-airflow-providers-standard`` package; the 2.x paths still import there, but only through
deprecation shims. Each DAG file takes what it needs from here, so the same DAGs run on both.
"""

import datetime

try:  # Airflow 3.x
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
    from airflow.sdk import dag, task
    from airflow.sdk.exceptions import AirflowSkipException

    AIRFLOW_MAJOR = 3
except ImportError:  # Airflow 2.x
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowSkipException
    from airflow.operators.empty import EmptyOperator
    from airflow.sensors.date_time import DateTimeSensorAsync

    AIRFLOW_MAJOR = 2

# Shared DAG arguments: never scheduled by time, never catching up, no retries unless a task asks.
DAG_ARGS = dict(
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["eventstream-e2e"],
    default_args={"retries": 0},
)

__all__ = ["AIRFLOW_MAJOR", "DAG_ARGS", "AirflowSkipException", "DateTimeSensorAsync", "EmptyOperator", "dag", "task"]
