"""Positions: where a change sits in PostgreSQL's WAL (commit LSN, index in the transaction).

Compared parsed, as (int, int), never as text: "0/10" and "0000000000000010" are the same LSN, and
only the fixed-width form sorts correctly as a string.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import EventStreamError

_POSITION = re.compile(r"^([0-9A-Fa-f]{16})-([0-9A-Fa-f]{8})$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class Position(NamedTuple):
    commit_lsn: int
    index: int

    def __str__(self) -> str:
        return format_position(self)


def parse_position(text: str) -> Position:
    """A `source.position` ("00000000016B3748-00000000"), or an LSN ("0/16B3748": the first change committed at it)."""
    m = _POSITION.match(text.strip())
    if m:
        return Position(int(m.group(1), 16), int(m.group(2), 16))
    m = _LSN.match(text.strip())
    if m:
        return Position((int(m.group(1), 16) << 32) | int(m.group(2), 16), 0)
    raise EventStreamError(f'not a position: {text!r} (expected "00000000016B3748-00000000" or an LSN "0/16B3748")')


def format_position(p: Position) -> str:
    return f"{p.commit_lsn:016X}-{p.index:08X}"
