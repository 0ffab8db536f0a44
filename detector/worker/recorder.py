"""`iotad record`'s loop: decoded messages in, history files out, acks after the disk.

paho's network thread calls `Recorder.on_message`, which decodes (the worker's
`PayloadDecoder`) and enqueues, nothing else. `Recorder.run` takes what has accumulated,
hands the readings to a `HistoryWriter`, commits them (``write`` + ``fsync``) and only then
acknowledges the messages. Batches grow by themselves under load (while one commit runs the
next batch gathers), so the ``fsync`` per batch stays affordable.

What a crash loses: nothing that was acknowledged (it is in a journal that the next start
finishes, `detector.worker.history`); what was not yet acknowledged the broker sends again on the
persistent session. Delivery is at least once: a reading written just before the
connection dropped (its ack lost with it) is sent again and written twice. Training drops a
repeated timestamp of a series (``duplicate_ts``), so a reading with its own ``ts`` counts
once there; a bare number takes its arrival time and is not recognised as a repeat.

Memory is bounded: the queue (the worker's `detector.worker.ingest.Intake`) by `queue_size`
messages and 4 x `max_batch` readings, a commit by `max_batch` readings. Finishing a Parquet
file (a streamed conversion of its journal) runs between two commits and delays their acks
meanwhile (about 1 s per 200,000 rows here).
Measured without a broker (decode, queue, write, fsync, ack): about 110,000 single-reading
messages/s to CSV and 73,000 to Parquet on this 2-core machine, above what one paho client
drains.

Rejected messages are counted by reason and logged (rate-limited), never written, and
acknowledged like the rest: a bad payload does not get better by being sent again.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from detector.worker.history import HistoryWriter
from detector.worker.ingest import SKIP_REASONS, Inbound, Intake
from detector.worker.payloads import PayloadDecoder
from detector.worker.ratelimit import RateLimitedLog

log = logging.getLogger("iotad.record")

Ack = tuple[int, int, int]
"""(mid, qos, generation) of one message, as `MqttConnection.ack_many` takes it."""


@dataclass
class RecordStats:
    """Counts of one recording run (the summary line is made from them)."""

    messages: int = 0
    readings: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    dropped_at_stop: int = 0
    """Messages that arrived after the stop began: not written, not acked (redelivered)."""


class Recorder:
    """Writes what `on_message` receives through `writer`, acking with `ack` after commits.

    Args:
        writer: the history files.
        decoder: the worker's payload decoder (same topic patterns and limits).
        ack: sends acknowledgements, e.g. `MqttConnection.ack_many`; called on the thread
            that runs `run`.
        queue_size: messages the network thread may hand over before it waits (backpressure:
            the broker holds the rest); it also waits at 4 x `max_batch` readings queued.
        max_batch: readings one commit takes at most (a larger message is taken whole).
        reject_log: where rejections are logged (rate-limited); None: not logged.
    """

    def __init__(
        self,
        writer: HistoryWriter,
        decoder: PayloadDecoder,
        ack: Callable[[Sequence[Ack]], object],
        *,
        queue_size: int = 20_000,
        max_batch: int = 8192,
        reject_log: RateLimitedLog | None = None,
    ) -> None:
        self.writer = writer
        self.decoder = decoder
        self._ack = ack
        self.intake = Intake(decoder, queue_size=queue_size, max_batch=max_batch)
        self._queue = self.intake.queue
        self.max_batch = max_batch
        self.reject_log = reject_log
        self.stats = RecordStats()

    # -- network thread ------------------------------------------------------------------

    def on_message(
        self,
        topic: bytes,
        payload: bytes,
        mid: int,
        qos: int,
        generation: int,
        skip: str | None = None,
    ) -> None:
        """paho's on_message: decode and enqueue (waits while the queue is full)."""
        if not self.intake.mqtt_message(topic, payload, mid, qos, generation, skip):
            self.stats.dropped_at_stop += 1  # not acked: the broker sends it again next time

    # -- recording thread ----------------------------------------------------------------

    def run(self, stop: threading.Event, idle_s: float = 0.2) -> None:
        """Record until `stop` is set; then take in no more, write what is queued, ack it,
        and finish the current file. A write error ends the run (raised) without acking
        what it could not write."""
        try:
            while not stop.is_set():
                self._step(idle_s)
                if self.reject_log is not None:
                    self.reject_log.flush()
            self._queue.close()
            while len(self._queue):
                self._step(0)
        except BaseException:
            self._queue.close()
            try:
                self.writer.close()  # what was committed becomes a finished file
            except Exception as exc:  # the first error is the one to report
                log.error("cannot finish the current history file: %s", exc)
            raise
        self.writer.close()

    def _step(self, wait_s: float) -> None:
        batch = self._queue.drain(self.max_batch, wait_s)
        if not batch:
            self.writer.rotate_if_due()
            return
        for item in batch:
            self._account(item)
            if item.readings:
                self.writer.add(item.readings)
        self.stats.readings += self.writer.commit()
        self._ack([item.token for item in batch if item.token is not None])

    def _account(self, item: Inbound) -> None:
        self.stats.messages += 1
        for rejection in item.rejections:
            if rejection.reason in SKIP_REASONS:
                self.stats.skipped[rejection.reason] += 1
                continue
            self.stats.rejected[rejection.reason] += 1
            if self.reject_log is not None:
                self.reject_log.warning(
                    rejection.reason,
                    "rejected %s (%s): %s",
                    rejection.topic[:200],
                    rejection.reason,
                    rejection.detail,
                )

    def summary(self, elapsed_s: float | None = None) -> str:
        """One line: readings, files, where, rejections and skips by reason."""
        s, w = self.stats, self.writer
        files = len(w.stats.files)
        line = (
            f"iotad record: {s.readings} readings from {s.messages} messages in {files} "
            f"{w.fmt} file{'s' if files != 1 else ''} under {w.directory}"
        )
        if elapsed_s is not None:
            line += f" ({elapsed_s:.0f} s)"
        line += f"; rejected {sum(s.rejected.values())}" + _reasons(s.rejected)
        if s.skipped:
            line += f"; skipped {sum(s.skipped.values())}" + _reasons(s.skipped)
        if w.stats.recovered:
            line += f"; finished {len(w.stats.recovered)} file(s) an earlier run left"
        return line


def _reasons(counts: Counter[str]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{r} {n}" for r, n in counts.most_common()) + ")"
