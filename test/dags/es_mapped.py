# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""Dynamic task mapping: `process` over 3 items (then `collect` reduces), `process_none` over 0
items (its unmapped row is skipped, and so is `after_none`)."""

from _eventstream_compat import DAG_ARGS, dag, task


@dag(dag_id="es_mapped", **DAG_ARGS)
def es_mapped():
    @task
    def items():
        return ["a", "b", "c"]

    @task
    def no_items():
        return []

    @task
    def process(item):
        return item.upper()

    @task
    def collect(values):
        return sorted(values)

    @task
    def process_none(item):
        raise RuntimeError("must never run")

    @task
    def after_none():
        raise RuntimeError("must never run")

    collect(process.expand(item=items()))
    process_none.expand(item=no_items()) >> after_none()


es_mapped()
