# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""A failure without retries: `breaks` fails, `never_runs` and `never_runs_either` downstream of it
become upstream_failed."""

from _eventstream_compat import DAG_ARGS, dag, task


@dag(dag_id="es_upstream_failed", **DAG_ARGS)
def es_upstream_failed():
    @task
    def breaks():
        raise RuntimeError("fails on purpose")

    @task
    def never_runs():
        pass

    @task
    def never_runs_either():
        pass

    breaks() >> never_runs() >> never_runs_either()


es_upstream_failed()
