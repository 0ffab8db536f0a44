"""Which partition a device's readings land on, and which partitions a worker owns.

NATS splits the sensor subjects into P partitions with the account mapping
``"sensors.*.*": "part.{{partition(P,1)}}.sensors.{{wildcard(1)}}.{{wildcard(2)}}"``: the
partition of a message is the FNV-1a 32-bit hash of its device token, modulo P (checked
against nats-server 2.9.10 in tests/integration/test_nats_partitions.py, and by the worker
at every start, see `detector.worker.nats_source`). The worker needs the same function to split its
checkpointed state by partition.

Worker ``i`` of ``N`` owns the partitions ``p`` with ``p % N == i``: every partition has
exactly one owner for a given N, and a series (one device) always lands on the same worker
while N stays the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_ORDINAL = re.compile(r"-(\d+)$")


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's ``hash/fnv.New32a``, which nats-server's ``partition`` uses)."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def partition_of(device: str, partitions: int) -> int:
    """The partition NATS maps ``sensors.<device>.*`` to, with ``partition(partitions,1)``."""
    return fnv1a_32(device.encode("utf-8")) % partitions


def partition_name(p: int) -> str:
    """``p`` as used in consumer names, checkpoint keys and metric labels: two digits min."""
    return f"{p:02d}"


@dataclass(frozen=True, slots=True)
class Shard:
    """Worker `index` of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owned(self, partitions: int) -> list[int]:
        """The partitions this worker consumes: ``p % count == index``."""
        return [p for p in range(partitions) if p % self.count == self.index]


def parse_shard(text: str, hostname: str = "") -> Shard:
    """``"i/N"``, or ``"ordinal/N"`` where i is the trailing ``-<n>`` of `hostname` (a
    Kubernetes StatefulSet names its pods ``iotad-0``, ``iotad-1``, ...).

    Raises ValueError with a message that says what is wrong.
    """
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not count_text.strip().isdigit():
        raise ValueError(f"{text!r} is not i/N or ordinal/N (e.g. 0/3)")
    count = int(count_text)
    if count < 1:
        raise ValueError(f"{text!r}: N must be at least 1")
    index_text = index_text.strip()
    if index_text == "ordinal":
        match = _ORDINAL.search(hostname)
        if match is None:
            raise ValueError(
                f"{text!r}: the host name {hostname!r} ends in no -<ordinal> "
                "(a StatefulSet pod is named like iotad-2)"
            )
        index = int(match.group(1))
    elif index_text.isdigit():
        index = int(index_text)
    else:
        raise ValueError(f"{text!r} is not i/N or ordinal/N (e.g. 0/3)")
    if index >= count:
        raise ValueError(f"{text!r}: worker index {index} must be below N={count}")
    return Shard(index, count)
