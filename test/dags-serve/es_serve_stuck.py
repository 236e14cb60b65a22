# Airflow 3.x DAG for test/airflow/serve.test.ts. Airflow only parses files naming "airflow" and "dag".
"""Stuck: `sleepy` runs for 25 s, past the test's running threshold of 8 s for this DAG."""

import datetime
import time

from airflow.sdk import dag, task


@dag(dag_id="es_serve_stuck", schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), catchup=False)
def es_serve_stuck():
    @task
    def sleepy():
        time.sleep(25)

    sleepy()


es_serve_stuck()
