"""Long-format history files (``ts,device,metric,value``) with rotation, for `iotad record`.

No MQTT here: `HistoryWriter` takes readings and writes files; the recorder decides when.

How a file comes to be, and why nothing half-written is ever taken for a whole file:

- Rows are appended to a *journal*, ``<stem>.csv.part``, one ``write`` per `commit` followed
  by ``fsync``. The recorder acknowledges messages to the broker only after `commit`
  returned, so a reading the broker forgot is on disk.
- At rotation (`rotate_s` of wall clock, aligned: hourly files start on the hour; or
  `max_rows`) and at `close`, the journal becomes the final file: renamed to
  ``<stem>.csv``, or converted to ``<stem>.parquet`` through a ``.parquet.tmp`` that is
  renamed when complete. Readers (``iotad train DIR``) ignore ``.part`` and ``.tmp`` files.
- After a crash, `recover` (run when a writer opens a directory) finishes what a previous
  run left: a journal's torn last line (a write cut short; its messages were never acked,
  so the broker sends them again) is cut off and the journal is finalised like any other.

One writer per directory: it holds an exclusive lock (``.iotad-record.lock``) from start to
`close`, since recovering the journal of a writer that is still running would take its file
away. A stem is ``<prefix>-<UTC time the file was opened>-<sequence>``, so file names sort in
time order.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from detector.engine.readings import Reading
from detector.worker.durable_files import fsync_dir

Format = Literal["csv", "parquet"]
HEADER = b"ts,device,metric,value\n"
JOURNAL_SUFFIX = ".csv.part"
PARQUET_TMP_SUFFIX = ".parquet.tmp"
LOCK_NAME = ".iotad-record.lock"
PARQUET_MISSING = (
    "writing Parquet needs pyarrow, which is not installed: pip install 'iotad[parquet]' "
    "(or record CSV, the default)"
)


class HistoryError(Exception):
    """The history directory cannot be written (one line, names the path)."""


@dataclass
class WriterStats:
    """What a writer has done so far."""

    rows: int = 0
    files: list[Path] = field(default_factory=list)
    recovered: list[Path] = field(default_factory=list)


def _format_row(reading: Reading) -> str:
    # repr: the shortest text that reads back as the same float (CSV and Parquet agree).
    return f"{reading.ts!r},{reading.device},{reading.metric},{reading.value!r}\n"


def require_pyarrow() -> None:
    """Raise `HistoryError` with the install hint when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        raise HistoryError(PARQUET_MISSING) from None


def journal_to_parquet(journal: Path, target: Path) -> int:
    """Convert a journal (CSV) to Parquet at `target`, atomically; returns the rows written.

    Streams the CSV in blocks, so memory stays bounded whatever the file's size.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("ts", pa.float64()),
            ("device", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
        ]
    )
    tmp = target.with_name(target.name.removesuffix(".parquet") + PARQUET_TMP_SUFFIX)
    rows = 0
    reader = pacsv.open_csv(
        journal,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in schema}, include_columns=schema.names
        ),
    )
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as out:
            for batch in reader:
                out.write_batch(batch)
                rows += batch.num_rows
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows


class HistoryWriter:
    """Appends readings to rotating long-format files in `directory`.

    Args:
        directory: where the files go (created if missing).
        fmt: ``"csv"`` or ``"parquet"`` (needs pyarrow) for the finished files.
        rotate_s: start a new file when the wall clock crosses a multiple of this many
            seconds (3600: one file per hour, on the hour); 0: never by time.
        max_rows: start a new file after this many rows; 0: never by size.
        prefix: file names start with it.
        clock: epoch seconds (tests pass a fake one).
        fsync: ``fsync`` the journal at every `commit` (off only for benchmarks or tests
            that measure something else).
    """

    def __init__(
        self,
        directory: Path,
        fmt: Format = "csv",
        *,
        rotate_s: float = 3600.0,
        max_rows: int = 1_000_000,
        prefix: str = "history",
        clock: Callable[[], float] = time.time,
        fsync: bool = True,
    ) -> None:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"format must be csv or parquet, not {fmt!r}")
        if rotate_s < 0 or not math.isfinite(rotate_s) or max_rows < 0:
            raise ValueError("rotate_s and max_rows must be finite and >= 0 (0: off)")
        if fmt == "parquet":
            require_pyarrow()
        self.directory = Path(directory)
        self.fmt: Format = fmt
        self.rotate_s = rotate_s
        self.max_rows = max_rows
        self.prefix = prefix
        self._clock = clock
        self._fsync = fsync
        self.stats = WriterStats()
        self._fd: int | None = None
        self._journal: Path | None = None
        self._rows_in_file = 0
        self._rotate_at = math.inf
        self._pending: list[str] = []
        self._lock_fd: int | None = None
        self._failed: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"cannot create {self.directory}: {exc.strerror or exc}") from None
        if not os.access(self.directory, os.W_OK):
            raise HistoryError(f"{self.directory} is not writable")
        self._lock_fd = _lock(self.directory / LOCK_NAME)
        try:
            self.stats.recovered = self.recover()
        except BaseException:
            self._unlock()
            raise

    # -- public --------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows buffered since the last `commit`."""
        return len(self._pending)

    def add(self, readings: Iterable[Reading]) -> None:
        """Buffer readings; nothing reaches the disk before `commit`."""
        self._pending.extend(_format_row(r) for r in readings)

    def commit(self) -> int:
        """Write the buffered rows to the journal and ``fsync`` it; returns how many.

        Rotates first when the current file is due. One file never exceeds `max_rows`: a
        buffer larger than what the file has room for is split over files.
        """
        if self._failed is not None:
            raise HistoryError(f"an earlier write failed ({self._failed}); restart to recover")
        self.rotate_if_due()
        written = 0
        while self._pending:
            if self._fd is None:
                self._open()
            room = len(self._pending)
            if self.max_rows:
                room = min(room, self.max_rows - self._rows_in_file)
            chunk, self._pending = self._pending[:room], self._pending[room:]
            self._write("".join(chunk).encode())
            self._rows_in_file += len(chunk)
            written += len(chunk)
            if self.max_rows and self._rows_in_file >= self.max_rows:
                self._finish()
        self.stats.rows += written
        return written

    def rotate_if_due(self) -> bool:
        """Finish the current file if its time is up (called also when no data flows)."""
        if self._fd is not None and self._clock() >= self._rotate_at:
            self._finish()
            return True
        return False

    def close(self) -> None:
        """Commit what is buffered, finish the current file and release the directory.

        After a failed write the journal is only closed: it may end in a torn line, which the
        next start's `recover` cuts before finishing it.
        """
        try:
            if self._failed is not None:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                return
            if self._pending:
                self.commit()
            if self._fd is not None:
                self._finish()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def recover(self) -> list[Path]:
        """Finish the journals a previous run left (see the module doc); returns the files."""
        done = []
        for tmp in sorted(self.directory.glob("*" + PARQUET_TMP_SUFFIX)):
            tmp.unlink(missing_ok=True)  # a conversion cut short; its journal is still there
        for journal in sorted(self.directory.glob("*" + JOURNAL_SUFFIX)):
            stem = journal.name.removesuffix(JOURNAL_SUFFIX)
            if any((self.directory / f"{stem}.{ext}").exists() for ext in ("csv", "parquet")):
                journal.unlink()  # finished before the crash, only the clean-up was missed
                continue
            _cut_torn_tail(journal)
            final = self._finalise(journal, stem)
            if final is not None:
                done.append(final)
        return done

    # -- files ---------------------------------------------------------------------------

    def _open(self) -> None:
        now = self._clock()
        moment = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        seq = 0
        while True:
            stem = f"{self.prefix}-{moment}-{seq:04d}"
            taken = [self.directory / f"{stem}{s}" for s in (JOURNAL_SUFFIX, ".csv", ".parquet")]
            if not any(p.exists() for p in taken):
                break
            seq += 1
        journal = self.directory / f"{stem}{JOURNAL_SUFFIX}"
        try:
            fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise HistoryError(f"cannot create {journal}: {exc.strerror or exc}") from None
        self._fd, self._journal, self._rows_in_file = fd, journal, 0
        self._write(HEADER)
        if self.rotate_s:
            self._rotate_at = (math.floor(now / self.rotate_s) + 1) * self.rotate_s
        else:
            self._rotate_at = math.inf

    def _write(self, data: bytes) -> None:
        assert self._fd is not None and self._journal is not None
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            # A short write may have left part of a line: no more appends to this journal.
            self._failed = f"cannot write {self._journal}: {exc.strerror or exc}"
            raise HistoryError(self._failed) from None

    def _finish(self) -> None:
        assert self._fd is not None and self._journal is not None
        journal, rows = self._journal, self._rows_in_file
        os.close(self._fd)
        self._fd, self._journal, self._rows_in_file = None, None, 0
        self._rotate_at = math.inf
        if rows == 0:
            journal.unlink(missing_ok=True)
            return
        final = self._finalise(journal, journal.name.removesuffix(JOURNAL_SUFFIX))
        if final is not None:
            self.stats.files.append(final)

    def _finalise(self, journal: Path, stem: str) -> Path | None:
        """The journal as a finished file of this writer's format; None if it had no rows."""
        with journal.open("rb") as handle:
            handle.readline()
            if not handle.read(1):
                journal.unlink()
                return None
        try:
            if self.fmt == "csv":
                final = self.directory / f"{stem}.csv"
                os.replace(journal, final)
            else:
                final = self.directory / f"{stem}.parquet"
                journal_to_parquet(journal, final)
                journal.unlink()
        except OSError as exc:
            raise HistoryError(f"cannot finish {journal}: {exc.strerror or exc}") from None
        fsync_dir(self.directory)
        return final


def _lock(path: Path) -> int:
    """An exclusive lock on `path` (created), held while the descriptor stays open."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise HistoryError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise HistoryError(
            f"another iotad record is writing to {path.parent} (it holds {path.name})"
        ) from None
    return fd


def _cut_torn_tail(journal: Path) -> None:
    """Truncate `journal` after its last newline (a write that a crash cut short)."""
    size = journal.stat().st_size
    if size == 0:
        return
    with journal.open("r+b") as handle:
        start = max(0, size - (1 << 16))
        while True:
            handle.seek(start)
            tail = handle.read(size - start)
            cut = tail.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            if start == 0:
                keep = 0
                break
            start = max(0, start - (1 << 16))
        if keep < size:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    if keep == 0:
        journal.write_bytes(HEADER)
