"""The NATS source's pure helpers: subjects and topics, redelivery from the ack subject."""

from __future__ import annotations

from detector.worker.nats_source import _delivered_more_than_once, subject_of, topic_of


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


class FakeMsg:
    def __init__(self, subject: str, data: bytes, reply: str, headers: dict | None = None):
        self.subject, self.data, self.reply, self.headers = subject, data, reply, headers


def source_and_queue():  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry

    from detector.config.nats_settings import NatsSettings
    from detector.worker.ingest import Intake
    from detector.worker.metrics import NatsMetrics
    from detector.worker.nats_source import NatsSource
    from detector.worker.partitions import Shard
    from detector.worker.payloads import PayloadDecoder

    intake = Intake(PayloadDecoder(), queue_size=100, max_batch=100)
    source = NatsSource(
        NatsSettings(partitions=8),
        Shard(0, 1),
        intake,
        worker_id="w",
        metrics=NatsMetrics(CollectorRegistry()),
        status_subject="iotad/status/w",
    )
    return source, intake.queue


def test_readings_of_other_partitions_in_a_gateway_batch_are_rejected() -> None:
    import json

    from detector.worker.partitions import partition_of

    devices = [f"d{i}" for i in range(40)]
    gw_p = partition_of("gw1", 8)
    home = next(d for d in devices if partition_of(d, 8) == gw_p)
    away = next(d for d in devices if partition_of(d, 8) != gw_p)
    batch = [
        {"device": home, "metric": "t", "ts": 1_700_000_000, "value": 1.0},
        {"device": away, "metric": "t", "ts": 1_700_000_000, "value": 2.0},
    ]
    source, queue = source_and_queue()
    source._hand_over(FakeMsg(f"part.{gw_p}.sensors.gw1", json.dumps(batch).encode(), "r1"), gw_p)
    (item,) = queue.drain(100, 0.0)
    assert [r.device for r in item.readings] == [home]
    assert [r.reason for r in item.rejections] == ["wrong_partition"]
    assert away in item.rejections[0].detail and item.token == "r1"


def test_probes_are_acked_not_handed_over() -> None:
    source, queue = source_and_queue()
    source._hand_over(FakeMsg("part.3.sensors.p.iotad-probe", b"", "r9", {"Iotad-Probe": "1"}), 3)
    assert queue.drain(100, 0.0) == []
    assert source.probes_acked == 1 and source.outbox.busy
