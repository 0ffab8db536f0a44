"""The NATS outbox's bookkeeping without a server (sending is tested against real servers in
tests/integration/test_nats_outputs.py)."""

from __future__ import annotations

import pytest

import detector.nats_outbox as outbox_module
from detector.nats_outbox import Outbox


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
