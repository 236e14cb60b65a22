# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""A deferrable sensor: `wait` defers to the triggerer until 3 s after it started, then `after_wait`
runs. DateTimeSensorAsync always defers (TimeDeltaSensorAsync returns at once when its target,
counted from the data interval's end, has passed), and exists in 2.11 and in the 3.x standard
provider alike."""

from _eventstream_compat import DAG_ARGS, DateTimeSensorAsync, dag, task


@dag(dag_id="es_deferrable", **DAG_ARGS)
def es_deferrable():
    wait = DateTimeSensorAsync(
        task_id="wait",
        target_time="{{ (macros.datetime.utcnow() + macros.timedelta(seconds=3)).isoformat() }}",
    )

    @task
    def after_wait():
        return "waited"

    wait >> after_wait()


es_deferrable()
