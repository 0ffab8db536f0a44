"""The NATS source's pure helpers: subjects and topics, redelivery from the ack subject."""

from __future__ import annotations

from detector.nats_source import _delivered_more_than_once, subject_of, topic_of


def test_output_topics_become_subjects() -> None:
    assert subject_of("alerts/press-4/temp") == "alerts.press-4.temp"
    assert subject_of("iotad/deadletter") == "iotad.deadletter"
    assert subject_of("iotad/status/w0") == "iotad.status.w0"


def test_partitioned_subjects_become_the_decoders_topics() -> None:
    assert topic_of("part.7.sensors.press-4.temp") == b"sensors/press-4/temp"
    assert topic_of("part.63.sensors.gw1") == b"sensors/gw1"


def test_redelivery_is_read_from_either_ack_subject_form() -> None:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    assert not _delivered_more_than_once("$JS.ACK.SENSORS.iotad-p07.1.10.10.1700000000.0")
    assert _delivered_more_than_once("$JS.ACK.SENSORS.iotad-p07.2.10.10.1700000000.0")
    # with <domain>.<account hash> after ACK and a random token at the end
    v2 = "$JS.ACK.hub.ACCHASH.SENSORS.iotad-p07.{}.10.10.1700000000.0.xyz"
    assert not _delivered_more_than_once(v2.format(1))
    assert _delivered_more_than_once(v2.format(3))
