"""Parquet files as rows for `training.data`, which validates them as it does CSV rows.

pyarrow is an optional extra (``iotad[parquet]``) and is imported here only, when a Parquet
file is actually read. Rows come in record batches, so a file larger than memory is never
held as a whole table (the readings themselves are, as for CSV).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from training.data import DataError

PYARROW_MISSING = (
    "reading Parquet needs pyarrow, which is not installed: pip install 'iotad[parquet]'"
)
BATCH_ROWS = 65_536


def read_parquet(path: Path) -> tuple[list[str], Iterator[Sequence[object]]]:
    """Column names of `path` and an iterator over its rows (tuples of Python values).

    Raises `DataError` when pyarrow is missing or the file is not readable Parquet.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise DataError(f"{path}: {PYARROW_MISSING}") from None
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {_first_line(exc)}") from None
    names = [str(name).strip() for name in handle.schema_arrow.names]

    def rows() -> Iterator[Sequence[object]]:
        try:
            for batch in handle.iter_batches(batch_size=BATCH_ROWS):
                yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} is not a readable Parquet file: {_first_line(exc)}") from None
        finally:
            handle.close()

    return names, rows()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
