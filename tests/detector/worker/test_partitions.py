"""The partition hash (FNV-1a 32, as nats-server's partition()) and shard parsing."""

from __future__ import annotations

import pytest

from detector.worker.partitions import Shard, fnv1a_32, parse_shard, partition_name, partition_of


@pytest.mark.parametrize(
    ("data", "expected"),
    # The published FNV-1a 32-bit test vectors (isthe.com/chongo/tech/comp/fnv).
    [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)],
)
def test_fnv1a_32_vectors(data: bytes, expected: int) -> None:
    assert fnv1a_32(data) == expected


def test_partition_is_the_hash_of_the_device_mod_p() -> None:
    assert partition_of("a", 64) == 0xE40C292C % 64 == 44
    assert partition_of("foobar", 7) == 0xBF9CF968 % 7
    # UTF-8 bytes, like the subject on the wire.
    assert partition_of("é", 1000) == fnv1a_32("é".encode()) % 1000


def test_partition_names_have_two_digits_at_least() -> None:
    assert [partition_name(p) for p in (0, 7, 63, 100)] == ["00", "07", "63", "100"]


@pytest.mark.parametrize(
    ("text", "hostname", "shard"),
    [
        ("0/1", "", Shard(0, 1)),
        ("2/3", "", Shard(2, 3)),
        (" 1 / 4 ", "", Shard(1, 4)),
        ("ordinal/3", "iotad-2", Shard(2, 3)),
        ("ordinal/5", "iotad-worker-0", Shard(0, 5)),
    ],
)
def test_parse_shard(text: str, hostname: str, shard: Shard) -> None:
    assert parse_shard(text, hostname) == shard


@pytest.mark.parametrize(
    ("text", "hostname", "message"),
    [
        ("3/3", "", "below N=3"),
        ("0/0", "", "at least 1"),
        ("1", "", "not i/N"),
        ("a/2", "", "not i/N"),
        ("-1/2", "", "not i/N"),
        ("1/x", "", "not i/N"),
        ("ordinal/3", "iotad", "no -<ordinal>"),
        ("ordinal/3", "iotad-7", "below N=3"),
    ],
)
def test_bad_shards_say_what_is_wrong(text: str, hostname: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard(text, hostname)


def test_every_partition_has_exactly_one_owner() -> None:
    for count in (1, 2, 3, 5, 64):
        owned = [p for i in range(count) for p in Shard(i, count).owned(64)]
        assert sorted(owned) == list(range(64))
