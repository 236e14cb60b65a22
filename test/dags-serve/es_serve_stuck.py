# Airflow 3.x DAG for test/airflow/serve.test.ts. Airflow only parses files naming "airflow" and "dag".
"""Stuck: `sleepy` runs for 25 s, past the test's running threshold of 8 s for this DAG."""

import datetime
import time

from airflow.sdk import dag, task


# Retries: under load Airflow 3 fails a task whose worker timed out reaching the api-server before it ran;
# a retry runs it again, so the question the test asks still gets its answer.
RETRY = dict(retries=2, retry_delay=datetime.timedelta(seconds=1))


@dag(dag_id="es_serve_stuck", schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), catchup=False)
def es_serve_stuck():
    @task(**RETRY)
    def sleepy():
        time.sleep(25)

    sleepy()


es_serve_stuck()
