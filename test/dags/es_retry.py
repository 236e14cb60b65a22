# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""Retries: `flaky` fails its first two tries and succeeds on the third; `doomed` fails all three."""

import datetime

from _eventstream_compat import DAG_ARGS, dag, task

RETRY = dict(retries=2, retry_delay=datetime.timedelta(seconds=1))


@dag(dag_id="es_retry", **DAG_ARGS)
def es_retry():
    @task(**RETRY)
    def flaky(ti=None):
        if ti.try_number < 3:
            raise RuntimeError(f"try {ti.try_number} fails on purpose")
        return "third time lucky"

    @task(**RETRY)
    def doomed(ti=None):
        raise RuntimeError(f"try {ti.try_number} fails on purpose, always")

    flaky()
    doomed()


es_retry()
