"""A publish whose fate a test decides, for the worker's and the resends' tests."""

from __future__ import annotations


class ScriptedDelivery:
    """An `detector.worker.alerts.Delivery` that is done once the test sets `confirmed` or
    `given_up` (then it is lost); `send_again` makes a lost one pending again and counts."""

    def __init__(self, confirmed: bool = False, given_up: bool = False) -> None:
        self.confirmed = confirmed
        self.given_up = given_up
        self.sent_again = 0

    def done(self) -> bool:
        return self.confirmed or self.given_up

    def lost(self) -> bool:
        return self.given_up

    def send_again(self) -> None:
        self.given_up = False
        self.sent_again += 1
