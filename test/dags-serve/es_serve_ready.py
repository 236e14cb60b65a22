# Airflow 3.x DAG for test/airflow/serve.test.ts. Airflow only parses files naming "airflow" and "dag".
"""When can I start: `upstream` runs 6 s (time for the test to ask ready?wait= before it succeeds), then `downstream`."""

import datetime
import time

from airflow.sdk import dag, task


# Retries: under load Airflow 3 fails a task whose worker timed out reaching the api-server before it ran;
# a retry runs it again, so the question the test asks still gets its answer.
RETRY = dict(retries=2, retry_delay=datetime.timedelta(seconds=1))


@dag(dag_id="es_serve_ready", schedule=None, start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), catchup=False)
def es_serve_ready():
    @task(**RETRY)
    def upstream():
        time.sleep(6)
        return 1

    @task(**RETRY)
    def downstream(v):
        return v + 1

    downstream(upstream())


es_serve_ready()
