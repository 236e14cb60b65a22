# Airflow DAG for the end-to-end tests (test/airflow/). Airflow only parses files naming "airflow" and "dag".
"""Notifications through XCom (the key `eventstream`): `notify` pushes a valid notification,
`notify_each` pushes one per mapped index, `notify_invalid` and `notify_not_a_dict` push values
the daemon must reject (published with an `error`)."""

import hashlib

from _eventstream_compat import DAG_ARGS, dag, task

KEY = "eventstream"


def notification(request_id, run_id):
    return {
        "request_id": request_id,
        "start": "2026-11-24T00:00:00+00:00",
        "end": "2026-11-25T00:00:00+00:00",
        "metadata": {"source": "es_notify", "run_id": run_id, "rows": 3},
        "payload": {"kind": "daily", "ok": True, "count": 3},
        "payload_uri": f"s3://eventstream-e2e/es_notify/{request_id}/",
        "files": {"a.csv": hashlib.md5(b"a,b\n1,2\n").hexdigest(), "b.csv": hashlib.md5(b"c\n3\n").hexdigest()},
    }


@dag(dag_id="es_notify", **DAG_ARGS)
def es_notify():
    @task
    def notify(ti=None, run_id=None):
        ti.xcom_push(key=KEY, value=notification("req-notify", run_id))

    @task
    def notify_each(n, ti=None, run_id=None):
        ti.xcom_push(key=KEY, value=notification(f"req-each-{n}", run_id))

    @task
    def notify_invalid(ti=None):
        # A realistic mistake: the file's checksum is not an MD5 hex digest.
        ti.xcom_push(key=KEY, value={"request_id": "req-invalid", "files": {"a.csv": "not-an-md5"}})

    @task
    def notify_not_a_dict(ti=None):
        ti.xcom_push(key=KEY, value="just a string")

    notify()
    notify_each.expand(n=[0, 1])
    notify_invalid()
    notify_not_a_dict()


es_notify()
