"""Ships a task's output to another platform when the task reaches `success`.

    pip install airflow-eventstream        # or: pip install ./clients/python
    KAFKA_BROKERS=localhost:9092 DAGS=etl,report OUTPUT_ROOT=/data/airflow-output \\
    DESTINATION=/mnt/archive python examples/ship_on_success.py

Where the output is: OUTPUT_ROOT/<dag_id>/<run_id>/<task_id>/, a convention of this example: FILL IN
your tasks' own (a path the task pushed in an XCom, a bucket prefix...). Where it goes: DESTINATION,
a directory here (runnable as is: a mounted share, a synced folder); for an object store, replace
`ship` with your platform's upload (see `ship_to_s3`, which needs `pip install boto3` and your bucket).

Settings (environment): KAFKA_BROKERS, DAGS (comma-separated), GROUP_ID (default "ship-on-success"),
EVENTSTREAM_TOPIC / EVENTSTREAM_STATE_TOPIC as the daemon has them, FROM (where a DAG without a stored
position starts; default "latest": only successes from now on), POSITIONS_FILE (default
"ship-positions.json"), IDLE_EXIT_SECONDS (end after that long without events; default: run until Ctrl-C).

Delivery is at least once: a crash after a copy and before the position is saved copies that task's
files again on restart, so `ship` overwrites (same names, same content) instead of failing.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

from airflow_eventstream import EventConsumer, EventContext, JsonFilePositionStore, StreamEvent

OUTPUT_ROOT = Path(os.environ.get("OUTPUT_ROOT", "/data/airflow-output"))
DESTINATION = Path(os.environ.get("DESTINATION", "/tmp/shipped"))


def ship(dag_id: str, run_id: str, task_id: str) -> int:
    """Copies the task's output directory; returns the number of files copied (0: the task wrote none)."""
    source = OUTPUT_ROOT / dag_id / run_id / task_id
    if not source.is_dir():
        return 0
    target = DESTINATION / dag_id / run_id / task_id
    files = [p for p in source.rglob("*") if p.is_file()]
    for f in files:
        dest = target / f.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(f, tmp)
        os.replace(tmp, dest)  # readers on the other side never see half a file
    return len(files)


def ship_to_s3(dag_id: str, run_id: str, task_id: str) -> int:  # pragma: no cover - FILL IN: your bucket
    import boto3  # type: ignore[import-not-found]

    bucket = os.environ["S3_BUCKET"]
    source = OUTPUT_ROOT / dag_id / run_id / task_id
    files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else []
    s3 = boto3.client("s3")
    for f in files:
        s3.upload_file(str(f), bucket, f"{dag_id}/{run_id}/{task_id}/{f.relative_to(source)}")
    return len(files)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    consumer = EventConsumer(
        brokers=os.environ.get("KAFKA_BROKERS", "localhost:9092"),
        group_id=os.environ.get("GROUP_ID", "ship-on-success"),
        topic=os.environ.get("EVENTSTREAM_TOPIC", "airflow.events"),
        state_topic=os.environ.get("EVENTSTREAM_STATE_TOPIC", "airflow.state"),
        dags=[d for d in os.environ.get("DAGS", "").split(",") if d] or None,
    )

    def handler(event: StreamEvent, ctx: EventContext) -> None:
        # Bootstrap rows (FROM=state) are tasks that succeeded before this consumer existed: shipped too.
        if event.type != "task_instance" or getattr(event, "state", None) != "success":
            return
        n = ship(event.dag_id, event.run_id, event.task_id)
        logging.info("%s %s.%s %s: %d file(s) shipped (position %s)", "row" if ctx.bootstrap else "event", event.dag_id, event.task_id, event.run_id, n, ctx.position)

    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    idle = os.environ.get("IDLE_EXIT_SECONDS")
    try:
        consumer.run(
            handler,
            JsonFilePositionStore(os.environ.get("POSITIONS_FILE", "ship-positions.json")),
            start_from=os.environ.get("FROM", "latest"),
            idle_timeout_s=float(idle) if idle else None,
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
