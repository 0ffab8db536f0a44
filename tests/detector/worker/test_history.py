"""detector/worker/history.py: rotation, the journal-then-rename rule, recovery, Parquet round
trip."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from detector.engine.readings import Reading
from detector.worker.history import HEADER, HistoryWriter

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z; the next hour starts at T0 + 2800


def listing(directory: Path) -> list[Path]:
    """The directory's files but the writer's hidden lock file."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading(f"d{i % 3}", "temp", T0 + i, i / 3) for i in range(start, start + n)]


def rows_of(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def as_readings(rows: list[list[str]]) -> list[Reading]:
    return [Reading(r[1], r[2], float(r[0]), float(r[3])) for r in rows]


def test_max_rows_splits_into_files_in_time_order_with_every_row_once(tmp_path: Path) -> None:
    w = HistoryWriter(tmp_path, rotate_s=0, max_rows=10, clock=FakeClock(T0))
    w.add(readings(7))
    w.commit()
    w.add(readings(18, start=7))  # 7 + 18 = 25 rows: 10, 10, 5
    w.commit()
    w.close()
    files = sorted(tmp_path.glob("*.csv"))
    assert [p.name for p in files] == [
        "history-20231114T221320Z-0000.csv",
        "history-20231114T221320Z-0001.csv",
        "history-20231114T221320Z-0002.csv",
    ]
    assert w.stats.files == files and w.stats.rows == 25
    body = [rows_of(p) for p in files]
    assert all(b[0] == ["ts", "device", "metric", "value"] for b in body)
    assert [len(b) - 1 for b in body] == [10, 10, 5]
    assert [r for b in body for r in as_readings(b[1:])] == readings(25)


def test_time_rotation_is_aligned_and_happens_without_new_data(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    w = HistoryWriter(tmp_path, rotate_s=3600, max_rows=0, clock=clock)
    w.add(readings(3))
    w.commit()
    clock.now = T0 + 2799  # 22:59:59: same hour
    assert not w.rotate_if_due()
    w.add(readings(2, start=3))
    w.commit()
    clock.now = T0 + 2800  # 23:00:00: the hour's file is finished with nothing more written
    assert w.rotate_if_due()
    assert [p.name for p in listing(tmp_path)] == ["history-20231114T221320Z-0000.csv"]
    w.add(readings(1, start=5))
    w.commit()
    w.close()
    names = sorted(p.name for p in listing(tmp_path))
    assert names == ["history-20231114T221320Z-0000.csv", "history-20231114T230000Z-0000.csv"]
    assert [len(rows_of(tmp_path / n)) - 1 for n in names] == [5, 1]


def test_a_file_being_written_is_a_part_file_and_training_does_not_see_it(
    tmp_path: Path,
) -> None:
    from training.data import DataError, expand_inputs

    w = HistoryWriter(tmp_path, rotate_s=0, max_rows=0, clock=FakeClock(T0))
    w.add(readings(4))
    assert w.pending == 4 and listing(tmp_path) == []  # nothing before commit
    assert w.commit() == 4 and w.pending == 0
    (part,) = listing(tmp_path)
    assert part.name.endswith(".csv.part")
    # Committed means on disk: what a crash right now would leave, and recovery keeps.
    assert len(rows_of(part)) == 5
    with pytest.raises(DataError, match=r"holds no \.csv or \.parquet files"):
        expand_inputs([tmp_path])
    w.close()
    (final,) = listing(tmp_path)
    assert final.suffix == ".csv" and expand_inputs([tmp_path]) == [final]


def test_recovery_finishes_a_crashed_journal_without_its_torn_line(tmp_path: Path) -> None:
    w = HistoryWriter(tmp_path, rotate_s=0, max_rows=0, clock=FakeClock(T0))
    w.add(readings(6))
    w.commit()
    (part,) = listing(tmp_path)
    with part.open("ab") as handle:  # a write the crash cut short (never acked)
        handle.write(b"1700000099.0,d0,te")
    (tmp_path / "history-x.parquet.tmp").write_bytes(b"half a conversion")
    done = tmp_path / "history-y"
    (tmp_path / "history-y.csv").write_bytes(HEADER + b"1.0,a,b,2.0\n")
    (tmp_path / "history-y.csv.part").write_bytes(HEADER + b"1.0,a,b,2.0\n")  # clean-up missed
    (tmp_path / "history-z.csv.part").write_bytes(HEADER[:10])  # not even a header
    # crash: the process dies; the OS closes its descriptors, which releases the lock
    assert w._fd is not None
    os.close(w._fd)
    w._unlock()
    again = HistoryWriter(tmp_path, rotate_s=0, max_rows=0, clock=FakeClock(T0 + 60))
    assert again.stats.recovered == [tmp_path / part.name.removesuffix(".part")]
    assert sorted(p.name for p in listing(tmp_path)) == sorted(
        [part.name.removesuffix(".part"), done.name + ".csv"]
    )
    body = rows_of(again.stats.recovered[0])
    assert as_readings(body[1:]) == readings(6)


def test_parquet_round_trip_is_exact(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    awkward = [0.1, 1 / 3, -0.0, 1e-300, 1.7976931348623157e308, -123456.789, 5e-324]
    data = [Reading("pump-1", "flow.l_s", T0 + i + 0.001, v) for i, v in enumerate(awkward)]
    w = HistoryWriter(tmp_path, "parquet", rotate_s=0, max_rows=4, clock=FakeClock(T0))
    w.add(data)
    w.commit()
    w.close()
    files = listing(tmp_path)
    assert [p.suffix for p in files] == [".parquet", ".parquet"]  # 4 + 3 rows, no journals
    table = [pq.read_table(p).to_pylist() for p in files]
    assert [len(t) for t in table] == [4, 3]
    got = [Reading(r["device"], r["metric"], r["ts"], r["value"]) for t in table for r in t]
    assert got == data
    assert [str(v) for v in (r.value for r in got)] == [str(v) for v in awkward]  # -0.0 too


def test_nothing_written_leaves_no_file(tmp_path: Path) -> None:
    w = HistoryWriter(tmp_path / "new", rotate_s=60, max_rows=5, clock=FakeClock(T0))
    w.commit()
    w.close()
    assert list(listing(tmp_path / "new")) == []


def test_bad_options_and_unwritable_directory(tmp_path: Path) -> None:
    from detector.worker.history import HistoryError

    with pytest.raises(ValueError, match="csv or parquet"):
        HistoryWriter(tmp_path, "json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        HistoryWriter(tmp_path, max_rows=-1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot create"):
        HistoryWriter(blocker / "sub")


def test_one_writer_per_directory(tmp_path: Path) -> None:
    from detector.worker.history import HistoryError

    first = HistoryWriter(tmp_path, rotate_s=0, max_rows=0, clock=FakeClock(T0))
    first.add(readings(2))
    first.commit()
    with pytest.raises(HistoryError, match="another iotad record is writing to"):
        HistoryWriter(tmp_path)  # its recovery would have taken the running writer's journal
    assert any(p.name.endswith(".csv.part") for p in listing(tmp_path))
    first.close()
    HistoryWriter(tmp_path).close()  # free again once the first has closed


def test_after_a_failed_write_the_journal_is_left_for_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.worker.history import HistoryError

    w = HistoryWriter(tmp_path, rotate_s=0, max_rows=0, clock=FakeClock(T0))
    w.add(readings(3))
    w.commit()
    real_write = os.write

    def short_then_full(fd: int, data: bytes) -> int:
        monkeypatch.setattr(os, "write", real_write)
        real_write(fd, bytes(data[:7]))  # part of a line, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    w.add(readings(2, start=3))
    with pytest.raises(HistoryError, match="No space left on device"):
        w.commit()
    w.add(readings(1, start=5))
    with pytest.raises(HistoryError, match="an earlier write failed"):
        w.commit()  # never appends after a torn line
    w.close()
    (part,) = listing(tmp_path)
    assert part.name.endswith(".csv.part")  # not presented as a finished file
    again = HistoryWriter(tmp_path, rotate_s=0, max_rows=0)
    assert as_readings(rows_of(again.stats.recovered[0])[1:]) == readings(3)
    again.close()
