"""Which partition the daemon puts a DAG's events in.

The daemon's producer (kafkajs) places a record by its default partitioner: the Java client's murmur2
of the key (the dag_id's UTF-8 bytes), made positive, modulo the partition count. The consumer needs
the same answer to know which listed DAGs a partition holds (where to start it, whom to bootstrap).
"""

from __future__ import annotations

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit int like Java's."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length % 4
    tail = n4 * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(dag_id: str, partitions: int) -> int:
    return (murmur2(dag_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
