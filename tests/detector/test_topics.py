"""MQTT filter arithmetic: which filters overlap, which topics they match."""

from __future__ import annotations

import pytest

from detector.topics import enclosing_filters, filters_overlap, topic_matches, valid_filter


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("#", "iotad/deadletter", True),
        ("+/+", "iotad/deadletter", True),
        ("+", "iotad/deadletter", False),
        ("sensors/#", "iotad/deadletter", False),
        ("iotad/#", "iotad", True),  # x/# matches x itself
        ("alerts/+/+", "alerts/#", True),
        ("alerts/+/+", "alerts/x", False),
        ("a/+/c", "a/b/+", True),
        ("a/b/c", "a/b", False),
        ("#", "$SYS/broker", False),  # wildcards never match a $ level
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("$share/g/#", "iotad/deadletter", True),  # a shared subscription's filter
        ("$share/g/sensors/#", "iotad/deadletter", False),
    ],
)
def test_filters_overlap_both_ways(a: str, b: str, overlap: bool) -> None:
    assert filters_overlap(a, b) is overlap
    assert filters_overlap(b, a) is overlap


def test_topic_matches() -> None:
    assert topic_matches("sensors/+/temp", "sensors/d1/temp")
    assert not topic_matches("sensors/+/temp", "sensors/d1/rpm")
    assert topic_matches("sensors/#", "sensors")


def test_enclosing_filters_widest_first() -> None:
    assert enclosing_filters("a/b") == ["#", "a/#", "a/b/#"]
    assert enclosing_filters("$SYS/x") == ["$SYS/#", "$SYS/x/#"]


@pytest.mark.parametrize(
    ("f", "ok"),
    [("#", True), ("a/+/b", True), ("a/#", True), ("a#", False), ("a/#/b", False), ("", False)],
)
def test_valid_filter(f: str, ok: bool) -> None:
    assert valid_filter(f) is ok
