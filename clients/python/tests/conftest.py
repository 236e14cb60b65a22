"""Fixtures on the real services the repo starts (scripts/services.sh): Kafka, PostgreSQL, and the daemon itself."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[3]
HOW_TO_START = (
    "start the repo's services and export their settings, from the repo root:\n"
    '  bash scripts/services.sh up && eval "$(bash scripts/services.sh env)"\n'
    "then run clients/python/scripts/test.sh (it reads KAFKA_BROKERS and PGHOST/PGPORT/PGUSER/PGPASSWORD)"
)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: {HOW_TO_START}", pytrace=False)
    return value


@pytest.fixture(scope="session")
def brokers() -> str:
    b = _env("KAFKA_BROKERS")
    try:
        AdminClient({"bootstrap.servers": b}).list_topics(timeout=15)
    except Exception as e:  # noqa: BLE001 - any failure here means the same: Kafka is not there
        pytest.fail(f"Kafka at {b} does not answer ({e}): {HOW_TO_START}", pytrace=False)
    return b


@pytest.fixture(scope="session")
def pg_conninfo() -> str:
    info = f"host={_env('PGHOST')} port={_env('PGPORT')} user={_env('PGUSER')} password={os.environ.get('PGPASSWORD', '')}"
    try:
        psycopg.connect(info + " dbname=postgres", connect_timeout=10).close()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {os.environ['PGHOST']}:{os.environ['PGPORT']} does not answer ({e}): {HOW_TO_START}", pytrace=False)
    return info


class AirflowDb:
    """A fresh database holding Airflow 2.x's real schema (the repo's fixture), with rows written as Airflow does."""

    def __init__(self, conninfo: str, name: str) -> None:
        self.conninfo = conninfo
        self.name = name
        self.conn = psycopg.connect(f"{conninfo} dbname={name}", autocommit=True)
        self._run_ids: dict[tuple[str, str], int] = {}

    def dag_run(self, dag_id: str, run_id: str, state: str = "queued") -> None:
        row = self.conn.execute(
            "INSERT INTO dag_run (dag_id, run_id, execution_date, state, run_type, clear_number) "
            "VALUES (%s, %s, now() + (random() * interval '1000 days'), %s, 'manual', 0) RETURNING id",
            (dag_id, run_id, state),
        ).fetchone()
        assert row is not None
        self._run_ids[(dag_id, run_id)] = row[0]

    def dag_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        self.conn.execute("UPDATE dag_run SET state = %s WHERE id = %s", (state, self._run_ids[(dag_id, run_id)]))

    def task(self, dag_id: str, run_id: str, task_id: str) -> None:
        # The columns the scheduler's INSERT fills (test/support/airflow-rows.ts), state NULL, try 0.
        self.conn.execute(
            "INSERT INTO task_instance (dag_id, task_id, run_id, map_index, state, try_number, max_tries, pool, pool_slots, "
            "queue, operator, priority_weight) VALUES (%s, %s, %s, -1, NULL, 0, 0, 'default_pool', 1, 'default', 'PythonOperator', 1)",
            (dag_id, task_id, run_id),
        )

    def task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        bump = ", try_number = try_number + 1" if state == "running" else ""
        self.conn.execute(
            f"UPDATE task_instance SET state = %s{bump} WHERE dag_id = %s AND task_id = %s AND run_id = %s AND map_index = -1",
            (state, dag_id, task_id, run_id),
        )


@pytest.fixture(scope="module")
def airflow_db(pg_conninfo: str) -> Iterator[AirflowDb]:
    name = f"pyclient_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_conninfo + " dbname=postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    schema = (REPO / "test/fixtures/airflow/airflow-2.11.2.sql").read_text()
    with psycopg.connect(f"{pg_conninfo} dbname={name}", autocommit=True) as c:
        c.execute(schema)  # type: ignore[arg-type]  # a trusted fixture file, several statements
    db = AirflowDb(pg_conninfo, name)
    try:
        yield db
    finally:
        db.conn.close()
        with psycopg.connect(pg_conninfo + " dbname=postgres", autocommit=True) as c:
            for _ in range(50):
                rows = c.execute("SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (name,)).fetchall()
                if not rows:
                    break
                for slot, pid in rows:
                    if pid is not None:
                        c.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    else:
                        c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                time.sleep(0.1)
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Daemon:
    """`bin/airflow-eventstream run` as operators start it, on the test database, with its own slot and topics."""

    def __init__(self, db: AirflowDb, brokers: str) -> None:
        self.topic = f"{db.name}.events"
        self.state_topic = f"state.{db.name}"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "PGHOST": os.environ["PGHOST"],
            "PGPORT": os.environ["PGPORT"],
            "PGUSER": os.environ["PGUSER"],
            "PGPASSWORD": os.environ.get("PGPASSWORD", ""),
            "PGDATABASE": db.name,
            "KAFKA_BROKERS": brokers,
            "EVENTSTREAM_SLOT": db.name,
            "EVENTSTREAM_PUBLICATION": db.name,
            "EVENTSTREAM_TOPIC": self.topic,
            "EVENTSTREAM_CHECKPOINT_TOPIC": f"checkpoints.{db.name}",
            "EVENTSTREAM_STATE_TOPIC": self.state_topic,
            "EVENTSTREAM_TOPIC_PARTITIONS": "3",
            "EVENTSTREAM_HTTP_PORT": "0",
            "LOG_LEVEL": "info",
        }
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        launcher = REPO / "bin/airflow-eventstream"
        if not (REPO / "dist/cli.js").exists():
            pytest.fail("dist/cli.js is missing: run `npm run build` in the repo (clients/python/scripts/test.sh does)", pytrace=False)
        self.proc = subprocess.Popen([str(launcher), "run"], cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for_log('"msg":"streaming"', 90)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))

    def wait_for_log(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.output):
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = "\n".join(self.output[-30:])
        pytest.fail(f"the daemon logged no {text!r} within {timeout_s}s (exit {self.proc.poll() if self.proc else None}); its output:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def daemon(airflow_db: AirflowDb, brokers: str) -> Iterator[Daemon]:
    d = Daemon(airflow_db, brokers)
    d.start()
    try:
        yield d
    finally:
        d.stop()
