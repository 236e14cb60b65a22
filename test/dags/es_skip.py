# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""Skips: `skipper` raises AirflowSkipException (its downstream is skipped by the trigger rule);
`gate` is a short circuit returning False (it skips its downstream itself)."""

from _eventstream_compat import DAG_ARGS, AirflowSkipException, dag, task


@dag(dag_id="es_skip", **DAG_ARGS)
def es_skip():
    @task
    def skipper():
        raise AirflowSkipException("nothing to do today")

    @task
    def after_skip():
        raise RuntimeError("must never run")

    @task.short_circuit
    def gate():
        return False

    @task
    def behind_gate():
        raise RuntimeError("must never run")

    skipper() >> after_skip()
    gate() >> behind_gate()


es_skip()
