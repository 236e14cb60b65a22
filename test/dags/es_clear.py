# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""Cleared and rerun: `first >> second` runs to success, then `airflow tasks clear -y es_clear`
sends both back to None and the run back to queued, and the scheduler runs them again."""

from _eventstream_compat import DAG_ARGS, dag, task


@dag(dag_id="es_clear", **DAG_ARGS)
def es_clear():
    @task
    def first():
        return 1

    @task
    def second(v):
        return v + 1

    second(first())


es_clear()
