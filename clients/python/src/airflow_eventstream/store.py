"""Where the consumer keeps the last position it handled, per DAG: the truth about what was handled.

Kafka's group offsets are only a hint: a store can live in the same database transaction as the
handler's own writes, so "handled" and "saved" never disagree after a crash; a group offset never can.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol


class PositionStore(Protocol):
    def load(self, dag_id: str) -> str | None:
        """The last position saved for this DAG (`source.position` form), or None."""

    def save(self, dag_id: str, position: str) -> None:
        """Called once the handler returned for an event of this DAG; positions only increase per DAG."""


class MemoryPositionStore:
    """Positions in a dict: for tests, and for a consumer that may start over after every restart."""

    def __init__(self, positions: dict[str, str] | None = None) -> None:
        self.positions: dict[str, str] = dict(positions or {})

    def load(self, dag_id: str) -> str | None:
        return self.positions.get(dag_id)

    def save(self, dag_id: str, position: str) -> None:
        self.positions[dag_id] = position


class JsonFilePositionStore:
    """Positions in a JSON file, written whole and renamed into place, so a crash leaves the old file or the new one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.positions: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def load(self, dag_id: str) -> str | None:
        return self.positions.get(dag_id)

    def save(self, dag_id: str, position: str) -> None:
        self.positions[dag_id] = position
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.positions, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
