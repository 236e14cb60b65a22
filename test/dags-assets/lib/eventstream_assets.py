"""The filter of B's asset watcher (test/dags-assets/consumer/es_asset_consumer.py), in a module of its own
because the triggerer imports it by dotted path: it must be on the triggerer's PYTHONPATH."""

from __future__ import annotations

import json


def match_asset_event(message, uri):
    """Called by the triggerer for every record; a truthy return fires the watcher, and becomes the
    payload of the asset event B records. Records of other assets return None and are passed over."""
    key = message.key()
    if key is None or key.decode("utf-8") != uri:
        return None
    event = json.loads(message.value())
    if event.get("type") != "asset_event":
        return None
    return {
        "uri": event["asset"]["uri"],
        "extra": event["extra"],
        "source_dag_id": event["source_dag_id"],
        "source_task_id": event["source_task_id"],
        "source_run_id": event["source_run_id"],
        "commit_lsn": event["source"]["commit_lsn"],
    }
