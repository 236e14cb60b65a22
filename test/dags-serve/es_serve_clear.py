# Airflow 3.x DAG for test/airflow/serve.test.ts. Airflow only parses files naming "airflow" and "dag".
"""Cleared and rerun: `first >> second` succeed, the test runs `airflow tasks clear -y es_serve_clear`, the scheduler reruns both."""

import datetime

from airflow.sdk import dag, task


# Retries: under load Airflow 3 fails a task whose worker timed out reaching the api-server before it ran;
# a retry runs it again, so the question the test asks still gets its answer.
RETRY = dict(retries=2, retry_delay=datetime.timedelta(seconds=1))


@dag(dag_id="es_serve_clear", schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), catchup=False)
def es_serve_clear():
    @task(**RETRY)
    def first():
        return 1

    @task(**RETRY)
    def second(v):
        return v + 1

    second(first())


es_serve_clear()
