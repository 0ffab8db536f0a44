"""The NATS outbox's bookkeeping without a server (sending is tested against real servers in
tests/integration/test_nats_outputs.py)."""

from __future__ import annotations

import pytest

import detector.worker.nats_outbox as outbox_module
from detector.worker.nats_outbox import Outbox


def test_qos1_publishes_get_deliveries_with_their_own_message_ids() -> None:
    box = Outbox({"Iotad-Worker": "w1"})
    a = box.publish("alerts.d.m", b"{}", 1)
    b = box.publish("alerts.d.m", b"{}", 1)
    assert a is not None and b is not None
    assert a.msg_id != b.msg_id and a.msg_id.startswith("w1-")
    assert not a.done() and not a.lost()
    assert box.publish("scores.d.m", b"{}", 0) is None  # QoS 0: nothing to watch
    assert box.unconfirmed == 2 and box.busy


def test_past_the_bound_a_publish_is_lost_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "MAX_UNCONFIRMED", 2)
    box = Outbox({})
    kept = [box.publish("alerts.d.m", b"{}", 1) for _ in range(2)]
    over = box.publish("alerts.d.m", b"{}", 1)
    assert over is not None and over.done() and over.lost()
    assert not any(d is None or d.done() for d in kept)
    assert (box.unconfirmed, box.refused) == (2, 1)


def test_nothing_is_boxed_once_closed() -> None:
    box = Outbox({})
    box.closed = True
    assert box.publish("alerts.d.m", b"{}", 1) is None
    assert not box.busy


def test_a_lost_publish_is_boxed_again_under_its_message_id() -> None:
    box = Outbox({})
    delivery = box.publish("alerts.d.m", b"{}", 1)
    assert delivery is not None
    box._publishes.clear()  # as if the sender had sent it
    box._lose(delivery, "no stream")
    assert delivery.lost() and box.unconfirmed == 0
    delivery.send_again()
    assert not delivery.done() and box.unconfirmed == 1
    assert list(box._publishes) == [("alerts.d.m", b"{}", delivery)]
    delivery.send_again()  # pending: nothing to do
    assert len(box._publishes) == 1 and box.unconfirmed == 1


def test_a_lost_publish_stays_lost_while_the_box_is_full_or_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "MAX_UNCONFIRMED", 1)
    box = Outbox({})
    first = box.publish("alerts.d.m", b"{}", 1)
    refused = box.publish("alerts.d.m", b"{}", 1)
    assert first is not None and refused is not None and refused.lost()
    refused.send_again()
    assert refused.lost()
    box._lose(first, "no stream")
    refused.send_again()
    assert not refused.done()
    box.closed = True
    first.send_again()
    assert first.lost()
