"""The bookkeeping of lost outputs sent again (`detector.worker.resends`), without a broker."""

from __future__ import annotations

from detector.engine.readings import Reading, Rejection
from detector.worker.ingest import Inbound
from detector.worker.resends import Resends, claim, message_key
from tests.detector.scripted_delivery import ScriptedDelivery


def message(token: str, ts: float = 1.0, redelivered: bool = False) -> Inbound:
    return Inbound(token, b"sensors/d/m", [Reading("d", "m", ts, 5.0)], [], redelivered=redelivered)


def test_a_message_is_known_by_its_content_not_its_token() -> None:
    assert message_key(message("a")) == message_key(message("b", redelivered=True))
    assert message_key(message("a")) != message_key(message("a", ts=2.0))
    bad = Rejection("malformed_json", "at char 1", "sensors/d/m", b"{x")
    same = Rejection("malformed_json", "said otherwise", "sensors/d/m", b"{x")
    other = Rejection("malformed_json", "at char 1", "sensors/d/m", b"{y")
    key = message_key(Inbound("a", b"sensors/d/m", [], [bad]))
    assert key == message_key(Inbound("b", b"sensors/d/m", [], [same]))
    assert key != message_key(Inbound("a", b"sensors/d/m", [], [other]))


def test_claim_moves_copies_to_the_list_that_waits_and_keeps_the_latest() -> None:
    waiting = [message("first")]
    first_copy = message("copy1", redelivered=True)
    rest = claim([message("new", ts=2.0), first_copy], [waiting])
    assert [i.token for i in rest] == ["new"]
    assert [i.token for i in waiting] == ["first", "copy1"]
    assert claim([message("copy2", redelivered=True)], [waiting]) == []
    assert [i.token for i in waiting] == ["first", "copy2"]  # the original stays
    assert [i.token for i in claim([message("x")], [])] == ["x"]


def test_lost_outputs_are_sent_again_until_confirmed_then_their_messages_released() -> None:
    resends = Resends(every_s=1.0)
    lost, confirmed = ScriptedDelivery(given_up=True), ScriptedDelivery()
    confirmed.confirmed = True
    items = [message("m1")]
    assert resends.keep(items, [lost, confirmed], now=0.0)
    assert resends.outputs == 1  # only the lost one is kept
    assert resends.poll(0.0) == ([], 1) and lost.sent_again == 1
    lost.given_up = True  # given up again
    assert resends.poll(0.5) == ([], 0)  # not before every_s
    assert resends.poll(1.0) == ([], 1) and lost.sent_again == 2
    assert resends.poll(1.5) == ([], 0)  # pending: nothing to send
    lost.confirmed = True
    released, sent = resends.poll(1.6)
    assert [i.token for i in released] == ["m1"] and sent == 0
    assert not resends and resends.outputs == 0


def test_no_room_keeps_nothing() -> None:
    resends = Resends(max_outputs=2)
    two = [ScriptedDelivery(given_up=True), ScriptedDelivery(given_up=True)]
    assert resends.keep([message("a")], two, now=0.0)
    assert not resends.keep([message("b", ts=2.0)], [ScriptedDelivery(given_up=True)], now=0.0)
    assert resends.outputs == 2 and len(resends.waiting()) == 1
