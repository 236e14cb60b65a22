# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""A chain that succeeds: start (EmptyOperator) >> extract >> transform >> load."""

from _eventstream_compat import DAG_ARGS, EmptyOperator, dag, task


@dag(dag_id="es_chain", **DAG_ARGS)
def es_chain():
    @task
    def extract():
        return {"rows": 3}

    @task
    def transform(data):
        return {"rows": data["rows"] * 2}

    @task
    def load(data):
        print("loaded", data)

    EmptyOperator(task_id="start") >> load(transform(extract()))


es_chain()
