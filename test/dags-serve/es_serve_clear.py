# Airflow 3.x DAG for test/airflow/serve.test.ts. Airflow only parses files naming "airflow" and "dag".
"""Cleared and rerun: `first >> second` succeed, the test runs `airflow tasks clear -y es_serve_clear`, the scheduler reruns both."""

import datetime

from airflow.sdk import dag, task


@dag(dag_id="es_serve_clear", schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), catchup=False)
def es_serve_clear():
    @task
    def first():
        return 1

    @task
    def second(v):
        return v + 1

    second(first())


es_serve_clear()
