"""detector/worker/recorder.py: acks only after the rows are on disk; rejections counted, not
written."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from detector.engine.readings import RETAINED
from detector.worker.history import HistoryWriter
from detector.worker.payloads import PayloadDecoder
from detector.worker.recorder import Ack, Recorder

T0 = 1_700_000_000.0


def listing(directory: Path) -> list[Path]:
    """The directory's files but the writer's hidden lock file."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def rows_on_disk(directory: Path) -> int:
    return sum(max(0, p.read_bytes().count(b"\n") - 1) for p in directory.iterdir())


def test_acks_follow_the_commit_and_only_readings_are_written(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, rotate_s=0, max_rows=0)
    acked: list[Ack] = []
    on_disk_at_ack: list[tuple[int, int]] = []  # (messages acked so far, rows on disk then)

    def ack(batch: Sequence[Ack]) -> None:
        acked.extend(batch)
        on_disk_at_ack.append((len(acked), rows_on_disk(tmp_path)))

    recorder = Recorder(writer, PayloadDecoder(), ack, queue_size=4)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,))
    thread.start()
    good = 0
    for i in range(40):  # queue_size 4: the producer waits for the recorder, as paho would
        body = f'{{"ts": {T0 + i}, "value": {i}.5}}'.encode()
        recorder.on_message(b"sensors/d1/temp", body, i + 1, 1, 1)
        good += 1
    recorder.on_message(b"sensors/d1/temp", b"inf", 100, 1, 1)  # non_finite
    recorder.on_message(b"sensors", b"1", 101, 1, 1)  # bad_topic
    recorder.on_message(b"sensors/d1/temp", b"2", 102, 1, 1, RETAINED)  # skipped, not decoded
    stop.set()
    thread.join()
    recorder.on_message(b"sensors/d1/temp", b"3", 103, 1, 1)  # after the stop: left unacked

    assert sorted(mid for mid, _, _ in acked) == [*range(1, 41), 100, 101, 102]
    # Every ack went out after the rows of every message acked so far were on disk (all good
    # messages come first here, so the k-th ack needs min(k, 40) rows).
    assert all(rows >= min(n, good) for n, rows in on_disk_at_ack)
    assert writer.stats.rows == recorder.stats.readings == 40
    assert dict(recorder.stats.rejected) == {"non_finite": 1, "bad_topic": 1}
    assert dict(recorder.stats.skipped) == {RETAINED: 1}
    assert recorder.stats.messages == 43 and recorder.stats.dropped_at_stop == 1
    (final,) = listing(tmp_path)
    assert final.suffix == ".csv" and rows_on_disk(tmp_path) == 40
    summary = recorder.summary()
    assert summary == (
        f"iotad record: 40 readings from 43 messages in 1 csv file under {tmp_path}; "
        "rejected 2 (non_finite 1, bad_topic 1); skipped 1 (retained 1)"
    )


def test_a_failing_disk_stops_the_run_without_acking(tmp_path: Path) -> None:
    from detector.worker.history import HistoryError

    writer = HistoryWriter(tmp_path, rotate_s=0, max_rows=0)
    acked: list[Ack] = []
    recorder = Recorder(writer, PayloadDecoder(), acked.extend)

    def broken(data: bytes) -> None:
        raise HistoryError("cannot write: No space left on device")

    writer._write = broken  # type: ignore[method-assign]
    recorder.on_message(b"sensors/d1/temp", b'{"ts": 1700000000.0, "value": 1.0}', 1, 1, 1)
    stop = threading.Event()
    try:
        recorder.run(stop)
    except HistoryError as exc:
        assert "No space left" in str(exc)
    else:
        raise AssertionError("the write error was swallowed")
    assert acked == []
