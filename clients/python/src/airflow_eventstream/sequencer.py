"""Per-DAG de-duplication, free of Kafka."""

from __future__ import annotations

from typing import Callable, Literal

from .position import Position, parse_position
from .store import PositionStore

Offered = Literal["delivered", "duplicate"]


class DagSequencer:
    """Drops an event whose position is not above the last one saved for its DAG; otherwise delivers it, then saves.

    The consumer hands events over one at a time (one poll loop), so one DAG's deliveries never overlap
    and each sees the previous one's save. The last positions are cached after the first load;
    forget() drops the cache when another member may have moved them (a rebalance), so the store is
    read again and stays the one truth.
    """

    def __init__(self, store: PositionStore) -> None:
        self.store = store
        self._last: dict[str, Position | None] = {}

    def offer(self, key: str, position: str, deliver: Callable[[], None]) -> Offered:
        parsed = parse_position(position)
        last = self.last_position(key)
        if last is not None and parsed <= last:
            return "duplicate"
        # An exception from deliver or save propagates: the position is then not advanced.
        deliver()
        self.store.save(key, position)
        self._last[key] = parsed
        return "delivered"

    def last_position(self, key: str) -> Position | None:
        if key not in self._last:
            text = self.store.load(key)
            self._last[key] = None if text is None else parse_position(text)
        return self._last[key]

    def forget(self) -> None:
        self._last.clear()
