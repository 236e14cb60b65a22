# Airflow 3.x DAG for test/airflow/serve.test.ts. Airflow only parses files naming "airflow" and "dag".
"""A final failure: `doomed` has one retry and fails both tries (try 1 up_for_retry, try 2 failed)."""

import datetime

from airflow.sdk import dag, task


@dag(dag_id="es_serve_retry", schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), catchup=False)
def es_serve_retry():
    @task(retries=1, retry_delay=datetime.timedelta(seconds=1))
    def doomed(ti=None):
        raise RuntimeError(f"try {ti.try_number} fails on purpose")

    doomed()


es_serve_retry()
